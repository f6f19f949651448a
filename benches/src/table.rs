//! The side-by-side table: reads the `--json` output of several runs (the
//! first is the baseline, Distribution in `compare.sh`), prints each
//! workload's headline figure, p99 latency and peak RSS per run with the
//! ratio to the baseline, then checks the targets of the benchmark issue
//! against the second run (single-node Stowage), and the real-client pull
//! target against every run but the baseline.
//!
//! Every ratio is oriented so that above 1 means better than the baseline:
//! throughput is run / baseline, latency is baseline / run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::report::{Record, WorkloadResult};

/// The issue's targets.
pub const TARGET_PUSH_RATIO: f64 = 1.0;
pub const TARGET_PULL_RATIO: f64 = 1.0;
pub const TARGET_MANIFEST_TAG_RATIO: f64 = 5.0;
/// push-large above this share of the single-core sha256 throughput.
pub const TARGET_SHA256_SHARE: f64 = 0.5;
pub const TARGET_RSS_MIB: f64 = 200.0;
/// skopeo pulls at least as fast as from Distribution, on every Stowage
/// column (one node and the cluster).
pub const TARGET_SKOPEO_PULL_RATIO: f64 = 1.0;
/// skopeo pushes to one node with a fifth to spare over Distribution.
pub const TARGET_SKOPEO_PUSH_RATIO: f64 = 1.2;

/// Workloads in the order the table lists them.
const ORDER: [&str; 11] = [
    "push-large",
    "pull-large",
    "pull-large-warm",
    "push-many",
    "manifest-get-tag",
    "manifest-get-digest",
    "mixed",
    "skopeo-push",
    "skopeo-pull",
    "docker-push",
    "docker-pull",
];

/// One column of the table.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub data: RunData,
}

#[derive(Debug, Clone)]
pub enum RunData {
    Measured {
        machine: Option<Machine>,
        workloads: BTreeMap<String, WorkloadResult>,
    },
    /// The run did not happen; the text says why.
    Skipped(String),
}

impl Run {
    fn workload(&self, name: &str) -> Option<&WorkloadResult> {
        match &self.data {
            RunData::Measured { workloads, .. } => workloads.get(name),
            RunData::Skipped(_) => None,
        }
    }

    fn machine(&self) -> Option<&Machine> {
        match &self.data {
            RunData::Measured { machine, .. } => machine.as_ref(),
            RunData::Skipped(_) => None,
        }
    }
}

/// Reads `LABEL=FILE` (JSON lines from `stowage-bench --json`), or
/// `LABEL=SKIPPED…` for a run that could not happen.
pub fn load(spec: &str) -> Result<Run> {
    let (label, source) = spec
        .split_once('=')
        .ok_or(Error::Usage("--table takes LABEL=FILE"))?;
    if source.starts_with("SKIPPED") {
        return Ok(Run {
            label: label.to_owned(),
            data: RunData::Skipped(source.to_owned()),
        });
    }
    let text = std::fs::read_to_string(source).map_err(Error::io("read", source))?;
    parse(label, source, &text)
}

pub fn parse(label: &str, path: &str, text: &str) -> Result<Run> {
    let mut machine = None;
    let mut workloads = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if !line.trim_start().starts_with('{') {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|source| Error::Json {
            path: path.to_owned(),
            line: i + 1,
            source,
        })?;
        match record {
            Record::Machine(m) => machine = Some(m),
            Record::Workload(w) => {
                workloads.insert(w.workload.clone(), *w);
            }
        }
    }
    Ok(Run {
        label: label.to_owned(),
        data: RunData::Measured { machine, workloads },
    })
}

/// The figure a workload is compared by, its unit, and whether higher is
/// better. Pushes are compared by payload or images per second, not
/// requests, because registries differ in how many requests a push takes.
fn headline(w: &WorkloadResult) -> (f64, &'static str) {
    match w.workload.as_str() {
        "push-large" | "pull-large" | "pull-large-warm" => (w.mb_per_s, "MB/s"),
        // An image's bytes over the median round.
        "skopeo-push" | "skopeo-pull" | "docker-push" | "docker-pull" => (w.mb_per_s, "MB/s"),
        "push-many" => match w.extra.get("images_per_s") {
            Some(v) => (*v, "images/s"),
            None => (w.mb_per_s, "MB/s"),
        },
        "mixed" => match (w.extra.get("pulls_per_s"), w.extra.get("pushes_per_s")) {
            (Some(a), Some(b)) => (a + b, "ops/s"),
            _ => (w.req_per_s, "req/s"),
        },
        _ => (w.req_per_s, "req/s"),
    }
}

fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && value.is_finite()).then(|| value / baseline)
}

/// A target factor as the verdicts print it: `1x`, `5x`, `1.2x`.
fn fmt_factor(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{f:.0}x")
    } else {
        format!("{f}x")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

fn fmt_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Workload names present in any run, in table order.
fn workload_names(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = ORDER.iter().map(|s| (*s).to_owned()).collect();
    for run in runs {
        if let RunData::Measured { workloads, .. } = &run.data {
            for name in workloads.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    names.retain(|n| runs.iter().any(|r| r.workload(n).is_some()));
    names
}

/// The whole table and the targets' verdicts, ready to print.
pub fn render(runs: &[Run]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["workload".to_owned(), "metric".to_owned()];
    for (i, run) in runs.iter().enumerate() {
        header.push(run.label.clone());
        if i > 0 {
            header.push("ratio".to_owned());
        }
    }
    rows.push(header);
    let names = workload_names(runs);
    type Metric = fn(&WorkloadResult) -> Option<(f64, &'static str)>;
    let metrics: [(Metric, bool); 3] = [
        (|w| Some(headline(w)), true),
        (|w| Some((w.p99_ms, "p99 ms")), false),
        (|w| w.rss_peak_mib.map(|r| (r, "rss MiB")), false),
    ];
    for (metric, higher_is_better) in metrics {
        for name in &names {
            let base = runs.first().and_then(|r| r.workload(name)).and_then(metric);
            let unit = runs
                .iter()
                .find_map(|r| r.workload(name).and_then(metric))
                .map(|(_, u)| u);
            let Some(unit) = unit else { continue };
            let mut row = vec![name.clone(), unit.to_owned()];
            for (i, run) in runs.iter().enumerate() {
                let value = run.workload(name).and_then(metric);
                row.push(match (&run.data, value) {
                    (RunData::Skipped(_), _) => "skipped".to_owned(),
                    (_, Some((v, _))) => fmt_value(v),
                    (_, None) => "-".to_owned(),
                });
                if i > 0 {
                    // Memory is judged against its own target, not a ratio.
                    let r = match (value, base) {
                        (Some((v, _)), Some((b, _))) if unit != "rss MiB" => {
                            if higher_is_better {
                                ratio(v, b)
                            } else {
                                ratio(b, v)
                            }
                        }
                        _ => None,
                    };
                    row.push(fmt_ratio(r));
                }
            }
            rows.push(row);
        }
    }
    // Failed requests, for the workloads where any run had some.
    for name in &names {
        if !runs
            .iter()
            .any(|r| r.workload(name).is_some_and(|w| w.errors > 0))
        {
            continue;
        }
        let mut row = vec![name.clone(), "errors".to_owned()];
        for (i, run) in runs.iter().enumerate() {
            row.push(match (&run.data, run.workload(name)) {
                (RunData::Skipped(_), _) => "skipped".to_owned(),
                (_, Some(w)) => w.errors.to_string(),
                (_, None) => "-".to_owned(),
            });
            if i > 0 {
                row.push("-".to_owned());
            }
        }
        rows.push(row);
    }
    let mut out = String::new();
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c < 2 {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:>w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(line.trim_end().len()));
            out.push('\n');
        }
    }
    out.push_str("ratios: above 1 means better than the first column (throughput: run/baseline; p99: baseline/run)\n");
    for run in runs {
        if let RunData::Skipped(why) = &run.data {
            let _ = writeln!(out, "{}: {why}", run.label);
        }
    }
    if let Some(m) = runs.iter().find_map(Run::machine) {
        let _ = writeln!(
            out,
            "machine: {} ({} cores), single-core sha256 {:.1} MB/s",
            m.cpu_model, m.nproc, m.sha256_mb_per_s
        );
    }
    out.push_str(&verdicts(runs));
    out
}

fn verdict_line(out: &mut String, what: &str, ok: Option<bool>, detail: &str) {
    let word = match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a ",
    };
    let _ = writeln!(out, "  {word}  {what}: {detail}");
}

/// One ratio target: `run`'s headline figure of `name` at least
/// `at_least` times the baseline's; `who` prefixes the line (empty for the
/// second run, which every target is about unless it says otherwise).
fn ratio_verdict(out: &mut String, who: &str, run: &Run, base: &Run, name: &str, at_least: f64) {
    let r = match (run.workload(name), base.workload(name)) {
        (Some(o), Some(b)) => ratio(headline(o).0, headline(b).0),
        _ => None,
    };
    let target = fmt_factor(at_least);
    let detail = match r {
        Some(r) if r >= at_least => format!("{r:.2}x (target {target})"),
        Some(r) => format!(
            "{r:.2}x (target {target}: short by {:.0} %)",
            (1.0 - r / at_least) * 100.0
        ),
        None => "not measured".to_owned(),
    };
    verdict_line(
        out,
        &format!("{who}{name} >= {target} {}", base.label),
        r.map(|r| r >= at_least),
        &detail,
    );
}

/// Checks the targets: the second run against the first, the skopeo pull
/// and the memory bound for every run but the baseline.
pub fn verdicts(runs: &[Run]) -> String {
    let mut out = String::new();
    let (Some(base), Some(ours)) = (runs.first(), runs.get(1)) else {
        return out;
    };
    let _ = writeln!(out, "targets ({} vs {}):", ours.label, base.label);
    for (name, at_least) in [
        ("push-large", TARGET_PUSH_RATIO),
        ("push-many", TARGET_PUSH_RATIO),
        ("pull-large", TARGET_PULL_RATIO),
        ("manifest-get-tag", TARGET_MANIFEST_TAG_RATIO),
        ("skopeo-push", TARGET_SKOPEO_PUSH_RATIO),
    ] {
        ratio_verdict(&mut out, "", ours, base, name, at_least);
    }
    for run in runs[1..]
        .iter()
        .filter(|r| matches!(r.data, RunData::Measured { .. }))
    {
        let who = format!("{} ", run.label);
        ratio_verdict(
            &mut out,
            &who,
            run,
            base,
            "skopeo-pull",
            TARGET_SKOPEO_PULL_RATIO,
        );
    }
    let sha = ours.machine().or(base.machine()).map(|m| m.sha256_mb_per_s);
    let push = ours.workload("push-large").map(|w| w.mb_per_s);
    let (ok, detail) = match (push, sha) {
        (Some(p), Some(s)) if s > 0.0 => {
            let share = p / s;
            let need = TARGET_SHA256_SHARE * s;
            let detail = if share > TARGET_SHA256_SHARE {
                format!("{p:.1} MB/s = {:.0} % of {s:.1} MB/s", share * 100.0)
            } else {
                format!(
                    "{p:.1} MB/s = {:.0} % of {s:.1} MB/s (needs > {need:.1}: short by {:.0} %)",
                    share * 100.0,
                    (1.0 - p / need) * 100.0
                )
            };
            (Some(share > TARGET_SHA256_SHARE), detail)
        }
        _ => (None, "not measured".to_owned()),
    };
    verdict_line(
        &mut out,
        "push-large > 50 % of single-core sha256",
        ok,
        &detail,
    );
    for run in &runs[1..] {
        let RunData::Measured { workloads, .. } = &run.data else {
            continue;
        };
        let worst = workloads
            .values()
            .filter_map(|w| w.rss_peak_mib.map(|r| (r, w.workload.as_str())))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let (ok, detail) = match worst {
            Some((r, w)) => (Some(r < TARGET_RSS_MIB), format!("peak {r:.1} MiB in {w}")),
            None if workloads.is_empty() => (None, "no results (the run failed)".to_owned()),
            None => (None, "not measured (no --rss-pid)".to_owned()),
        };
        verdict_line(
            &mut out,
            &format!(
                "{} RSS < {TARGET_RSS_MIB:.0} MiB in every workload",
                run.label
            ),
            ok,
            &detail,
        );
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            let RunData::Measured { workloads, .. } = &run.data else {
                return None;
            };
            let n: u64 = workloads.values().map(|w| w.errors).sum();
            (n > 0).then(|| format!("{}: {n}", run.label))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(
            out,
            "  ERRORS during the runs (results are suspect): {}",
            errors.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(workload: &str, mb: f64, req: f64, p99: f64, rss: f64) -> String {
        format!(
            r#"{{"kind":"workload","workload":"{workload}","targets":["http://x"],"mb_per_s":{mb},"req_per_s":{req},"p50_ms":1.0,"p99_ms":{p99},"latency_of":"request","requests":1,"bytes":1,"elapsed_secs":1.0,"errors":0,"rss_peak_mib":{rss}}}"#
        )
    }

    #[test]
    fn table_has_ratios_and_verdicts() {
        let machine =
            r#"{"kind":"machine","cpu_model":"Test CPU","nproc":2,"sha256_mb_per_s":1000.0}"#;
        let dist = [
            machine.to_owned(),
            line("push-large", 400.0, 2.0, 900.0, 30.0),
            line("manifest-get-tag", 0.1, 1000.0, 20.0, 30.0),
        ]
        .join("\n");
        let ours = [
            machine.to_owned(),
            line("push-large", 600.0, 3.0, 450.0, 80.0),
            line("manifest-get-tag", 0.4, 4000.0, 5.0, 250.0),
        ]
        .join("\n");
        let runs = vec![
            parse("Distribution", "d", &dist).unwrap(),
            parse("Stowage", "s", &ours).unwrap(),
            load("Stowage 3-node=SKIPPED: cluster mode not available in this build").unwrap(),
        ];
        let text = render(&runs);
        assert!(text.contains("1.50x"), "{text}");
        // p99 ratio is baseline / run: 900 / 450.
        assert!(text.contains("2.00x"), "{text}");
        assert!(text.contains("skipped"), "{text}");
        assert!(text.contains("SKIPPED: cluster mode not available in this build"));
        assert!(
            text.contains("PASS  push-large >= 1x Distribution: 1.50x"),
            "{text}"
        );
        assert!(
            text.contains(
                "MISS  manifest-get-tag >= 5x Distribution: 4.00x (target 5x: short by 20 %)"
            ),
            "{text}"
        );
        assert!(
            text.contains("PASS  push-large > 50 % of single-core sha256: 600.0 MB/s = 60 %"),
            "{text}"
        );
        assert!(
            text.contains(
                "MISS  Stowage RSS < 200 MiB in every workload: peak 250.0 MiB in manifest-get-tag"
            ),
            "{text}"
        );
    }

    #[test]
    fn real_client_rows_and_verdicts() {
        let dist = [
            line("skopeo-push", 100.0, 0.3, 3000.0, 30.0),
            line("skopeo-pull", 200.0, 0.5, 1500.0, 30.0),
            line("docker-push", 50.0, 0.1, 6000.0, 30.0),
        ]
        .join("\n");
        // Docker skipped here: its rows must still render, with "-".
        let ours = [
            line("skopeo-push", 110.0, 0.3, 2500.0, 80.0),
            line("skopeo-pull", 220.0, 0.5, 1400.0, 80.0),
        ]
        .join("\n");
        let cluster = [
            line("skopeo-push", 90.0, 0.3, 3500.0, 90.0),
            line("skopeo-pull", 180.0, 0.5, 1700.0, 90.0),
            line("docker-push", 60.0, 0.1, 5000.0, 90.0),
        ]
        .join("\n");
        let runs = vec![
            parse("Distribution", "d", &dist).unwrap(),
            parse("Stowage", "s", &ours).unwrap(),
            parse("Stowage 3-node", "c", &cluster).unwrap(),
        ];
        let text = render(&runs);
        let row = |name: &str, metric: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(metric))
                .unwrap_or_else(|| panic!("no {name} {metric} row in\n{text}"))
                .split("  ")
                .filter(|c| !c.is_empty())
                .skip(2)
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(row("skopeo-push", "MB/s"), "100.0 110.0 1.10x 90.0 0.90x");
        // p99 is the slowest round; its ratio is baseline / run.
        assert_eq!(row("skopeo-push", "p99 ms"), "3000 2500 1.20x 3500 0.86x");
        assert_eq!(row("docker-push", "MB/s"), "50.0 - - 60.0 1.20x");
        assert!(!text.contains("docker-pull"), "{text}");
        let order: Vec<usize> = ["skopeo-push", "skopeo-pull", "docker-push"]
            .iter()
            .map(|n| text.find(&format!("{n} ")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains(
                "MISS  skopeo-push >= 1.2x Distribution: 1.10x (target 1.2x: short by 8 %)"
            ),
            "{text}"
        );
        assert!(
            text.contains("PASS  Stowage skopeo-pull >= 1x Distribution: 1.10x (target 1x)"),
            "{text}"
        );
        assert!(
            text.contains(
                "MISS  Stowage 3-node skopeo-pull >= 1x Distribution: 0.90x (target 1x: short by 10 %)"
            ),
            "{text}"
        );
        // A skipped column gets no skopeo-pull verdict; a run without the
        // workload says so.
        let runs = vec![
            parse("Distribution", "d", &dist).unwrap(),
            parse("Stowage", "s", "").unwrap(),
            load("Stowage 3-node=SKIPPED: cluster mode not available in this build").unwrap(),
        ];
        let text = render(&runs);
        assert!(
            text.contains("n/a   Stowage skopeo-pull >= 1x Distribution: not measured"),
            "{text}"
        );
        assert!(!text.contains("Stowage 3-node skopeo-pull"), "{text}");
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(load("no-equals-sign").is_err());
        assert!(parse("x", "f", "{not json").is_err());
        let empty = parse("x", "f", "human line, not JSON\n").unwrap();
        assert!(empty.workload("push-large").is_none());
    }
}
