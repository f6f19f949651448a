//! Results and how they are printed: one human-readable line per workload,
//! or (`--json`) one JSON object per line, which `table` reads back to put
//! runs side by side.
//!
//! Units: MB/s is 10^6 bytes per second of payload (blob, config and
//! manifest bytes, not headers); req/s counts HTTP requests answered as
//! expected; latencies are milliseconds; memory is MiB (2^20 bytes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::rss::Peak;
use crate::stats::Tally;

/// One line of `--json` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    Machine(Machine),
    Workload(Box<WorkloadResult>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: String,
    pub targets: Vec<String>,
    pub mb_per_s: f64,
    pub req_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// What the latencies are of: "request" or an operation ("blob").
    pub latency_of: String,
    pub requests: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// The largest peak RSS among the watched processes, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_mib: Option<f64>,
    /// Peak RSS per watched process, MiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rss_peak_mib_by_pid: BTreeMap<String, f64>,
    /// Workload-specific figures (sub-results), printed after the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
    /// Workload-specific facts (how blobs were pushed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl WorkloadResult {
    pub fn new(
        workload: &str,
        targets: &[String],
        tally: &Tally,
        elapsed: Duration,
        latency_of: &str,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        WorkloadResult {
            workload: workload.to_owned(),
            targets: targets.to_vec(),
            mb_per_s: tally.bytes as f64 / secs / 1e6,
            req_per_s: tally.requests as f64 / secs,
            p50_ms: tally.latency.percentile_ms(50.0),
            p99_ms: tally.latency.percentile_ms(99.0),
            latency_of: latency_of.to_owned(),
            requests: tally.requests,
            bytes: tally.bytes,
            elapsed_secs: elapsed.as_secs_f64(),
            errors: tally.errors,
            first_error: tally.first_error.clone(),
            rss_peak_mib: None,
            rss_peak_mib_by_pid: BTreeMap::new(),
            extra: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    pub fn with_rss(mut self, peaks: &[Peak]) -> Self {
        // A process that could never be read (it had exited) has no peak.
        for p in peaks.iter().filter(|p| p.peak_kib > 0) {
            self.rss_peak_mib_by_pid
                .insert(p.pid.to_string(), p.peak_kib as f64 / 1024.0);
        }
        self.rss_peak_mib = self.rss_peak_mib_by_pid.values().copied().reduce(f64::max);
        self
    }

    /// The human-readable line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<20} target={}  {:.1} MB/s  {:.1} req/s  p50={} ms  p99={} ms",
            self.workload,
            self.targets.join(","),
            self.mb_per_s,
            self.req_per_s,
            ms(self.p50_ms),
            ms(self.p99_ms),
        );
        if let Some(rss) = self.rss_peak_mib {
            s.push_str(&format!("  rss_peak={rss:.1} MiB"));
        }
        for (k, v) in &self.extra {
            s.push_str(&format!("  {k}={v:.1}"));
        }
        for (k, v) in &self.notes {
            s.push_str(&format!("  {k}={v}"));
        }
        if self.errors > 0 {
            s.push_str(&format!("  errors={}", self.errors));
            if let Some(e) = &self.first_error {
                s.push_str(&format!(" (first: {e})"));
            }
        }
        s
    }
}

/// Latencies keep three significant digits, whatever their size.
fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn machine_line(m: &Machine) -> String {
    format!(
        "{:<20} cpu=\"{}\" nproc={}  sha256_1core={:.1} MB/s  (push-large target: > {:.1} MB/s)",
        "machine",
        m.cpu_model,
        m.nproc,
        m.sha256_mb_per_s,
        m.sha256_mb_per_s / 2.0
    )
}

/// Prints a record: JSON on stdout with `json` (and the line on stderr,
/// so a person watching still sees progress), else the line on stdout.
pub fn emit(record: &Record, json: bool) {
    let line = match record {
        Record::Machine(m) => machine_line(m),
        Record::Workload(w) => w.line(),
    };
    if json {
        // Serialising plain data with string keys cannot fail.
        println!("{}", serde_json::to_string(record).unwrap_or_default());
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_json_round_trip() {
        let mut tally = Tally::per_request();
        tally.bytes = 10_000_000;
        for _ in 0..4 {
            tally.request(Duration::from_millis(5));
        }
        let r = WorkloadResult::new(
            "push-many",
            &["http://127.0.0.1:5000".to_owned()],
            &tally,
            Duration::from_secs(2),
            "request",
        )
        .with_rss(&[
            Peak {
                pid: 7,
                peak_kib: 51_200,
            },
            Peak {
                pid: 8,
                peak_kib: 102_400,
            },
        ]);
        let line = r.line();
        assert!(line.starts_with("push-many "), "{line}");
        assert!(line.contains("target=http://127.0.0.1:5000  5.0 MB/s  2.0 req/s"));
        assert!(line.contains("p50=5.00 ms  p99=5.00 ms  rss_peak=100.0 MiB"));
        let json = serde_json::to_string(&Record::Workload(Box::new(r))).unwrap();
        assert!(json.contains("\"kind\":\"workload\""), "{json}");
        match serde_json::from_str::<Record>(&json).unwrap() {
            Record::Workload(w) => {
                assert_eq!(w.rss_peak_mib, Some(100.0));
                assert_eq!(w.rss_peak_mib_by_pid.len(), 2);
            }
            Record::Machine(_) => panic!("wrong kind"),
        }
    }
}
