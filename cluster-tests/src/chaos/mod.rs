//! The chaos runner: a 3-node cluster of real `stowage` processes, one per
//! network namespace ("zone" a, b, c), a seeded nemesis, a concurrent OCI
//! workload, and a checker run after everything is healed. The
//! `stowage-chaos` binary and the `t90_chaos` test both call `run`.
//!
//! Layout: `rng.rs` (the seeded generator), `history.rs` (what was
//! observed), `workload.rs` (the clients), `nemesis.rs` (the faults),
//! `linearizable.rs` (the register checker), `checker.rs` (the checks
//! after heal). This file wires them and writes the summary and report.

pub mod checker;
pub mod history;
pub mod linearizable;
pub mod nemesis;
pub mod rng;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::history::{Clock, ReqKind, Shared};
use self::nemesis::{Fault, NemesisConfig};
use self::rng::Rng;
use self::workload::{TagPool, WorkloadConfig};
use crate::netns::NsCluster;

/// Fault-free time at the start of a run: the latency baseline.
pub const BASELINE: Duration = Duration::from_secs(10);
/// Time after a zone's cut that the latency figures leave out (the
/// survivors have not yet noticed the zone is gone).
pub const DETECTION: Duration = Duration::from_secs(3);

/// Small chunks make multi-chunk blobs cheap.
pub const CHUNK_SIZE_BYTES: usize = 65_536;

/// Node settings for chaos runs: Raft timing a loaded 2-core machine does
/// not trip over by itself, small chunks, and frequent snapshots so a node
/// that was down or replaced catches up by snapshot too.
pub fn node_toml() -> String {
    format!(
        "raft_heartbeat_ms = 100\nraft_election_timeout_ms = 1000\nchunk_size_bytes = {CHUNK_SIZE_BYTES}\n\
         snapshot_every_entries = 500\nsnapshot_logs_to_keep = 100\n"
    )
}

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// How long the workload and nemesis run.
    pub duration: Duration,
    pub faults: Vec<Fault>,
    pub zone_loss: Duration,
    pub workers: usize,
    /// Client timeout of every workload request (long enough to see a
    /// node's own hangs instead of cutting them short).
    pub request_timeout: Duration,
    pub report: Option<PathBuf>,
    /// When to keep the nodes' data and logs.
    pub keep: Keep,
}

/// When a run keeps its nodes' data and logs (else they are removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Never,
    OnFailure,
    Always,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            duration: Duration::from_secs(120),
            faults: Fault::ALL.to_vec(),
            zone_loss: Duration::from_secs(20),
            workers: 9,
            request_timeout: Duration::from_secs(30),
            report: None,
            keep: Keep::OnFailure,
        }
    }
}

impl Config {
    /// An upper bound on the whole run: setup, the run, recovery from the
    /// last fault, and the check.
    pub fn hard_timeout(&self) -> Duration {
        self.duration + self.zone_loss + Duration::from_secs(600)
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    pub summary: String,
    pub report: Value,
    /// Acknowledged data lost, corrupted or stale, a non-linearizable
    /// history, or a cluster that did not heal.
    pub failed: bool,
    pub lost: usize,
    pub corrupt: usize,
    pub stale: usize,
    pub nonlinearizable: usize,
    pub acked: usize,
}

/// Why a run did not happen.
#[derive(Debug)]
pub enum RunError {
    /// Network namespaces are unavailable; the caller prints `SKIPPED: `.
    Skipped(String),
    Failed(String),
}

/// Runs one chaos run. Needs a multi-threaded tokio runtime (process
/// starts block a worker thread).
pub async fn run(cfg: &Config) -> Result<Outcome, RunError> {
    crate::netns::available().map_err(|e| RunError::Skipped(e.to_string()))?;
    let zones = ["a", "b", "c"];
    let toml = node_toml();
    let mut cluster = tokio::task::block_in_place(|| NsCluster::start(&zones, &toml))
        .map_err(RunError::Failed)?;
    cluster
        .wait_healthy(Duration::from_secs(90))
        .await
        .map_err(|e| {
            RunError::Failed(format!(
                "cluster did not form: {e}; log:\n{}",
                cluster.log_tail(1)
            ))
        })?;

    let mut notes: Vec<String> = Vec::new();
    let mut faults = cfg.faults.clone();
    if !cluster.net.has_netem() && faults.contains(&Fault::Delay) {
        faults.retain(|f| *f != Fault::Delay);
        notes.push(
            "delay skipped: tc netem is unavailable (no sch_netem); loss uses iptables statistic"
                .into(),
        );
    }
    if !cluster.net.has_netem() {
        eprintln!("chaos: tc netem unavailable; packet loss via iptables, no delay faults");
    }

    let wcfg = WorkloadConfig {
        nodes: cluster.urls(),
        workers: cfg.workers,
        request_timeout: cfg.request_timeout,
        ops_per_tag: 120,
        chunk_size_bytes: CHUNK_SIZE_BYTES,
    };
    let shared = workload::prepare(&wcfg, Duration::from_secs(60))
        .await
        .map_err(RunError::Failed)?;
    let clock = Clock::new();
    let history = Shared::default();
    let tags = Arc::new(TagPool::new(wcfg.ops_per_tag));
    let stop = Arc::new(AtomicBool::new(false));
    let root = Rng::new(cfg.seed);
    let mut workers = Vec::new();
    for w in 0..cfg.workers {
        let w64 = u64::try_from(w).unwrap_or(0);
        workers.push(tokio::spawn(workload::run_worker(
            w64,
            wcfg.clone(),
            root.fork(w64 + 1),
            history.clone(),
            clock,
            tags.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    let started = Instant::now();
    let ncfg = NemesisConfig {
        faults: faults.clone(),
        zone_loss: cfg.zone_loss,
        hold_min: Duration::from_secs(3),
        hold_max: Duration::from_secs(8),
        quiet: Duration::from_secs(2),
        baseline: BASELINE,
        recover_limit: Duration::from_secs(90),
    };
    let records = nemesis::run(
        &mut cluster,
        &ncfg,
        root.fork(0),
        clock,
        started + cfg.duration,
    )
    .await;
    // Let the workload run on a healed cluster to the end of the duration.
    tokio::time::sleep((started + cfg.duration).saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    for mut w in workers {
        // A worker ends within its few requests' timeouts; one that does
        // not is stuck, and the check must not wait for it.
        let limit = cfg.request_timeout * 8 + Duration::from_secs(10);
        if tokio::time::timeout(limit, &mut w).await.is_err() {
            w.abort();
        }
    }
    let ran = started.elapsed();

    // Heal everything and wait for a healthy cluster before checking.
    let mut heal_error = nemesis::heal_everything(&mut cluster).await.err();
    if let Err(e) = cluster.wait_healthy(Duration::from_secs(120)).await {
        heal_error = Some(heal_error.map(|p| format!("{p}; {e}")).unwrap_or(e));
    }
    cluster.sample_rss();

    let check_timeout = Duration::from_secs(10);
    let mut h = std::mem::take(&mut *history.lock());
    let durability = checker::durability(&cluster, &h, check_timeout).await;
    let all_tags = tags.all();
    let (tag_disagree, tag_examples) =
        checker::final_tag_reads(&cluster, &mut h, &all_tags, clock, check_timeout).await;
    let (tags_checked, nonlin, undecided, lin_details) = checker::linearizability(&h, &all_tags);
    let under = checker::under_replicated(&cluster).await;
    if under
        .as_object()
        .is_some_and(|o| o.values().all(Value::is_null))
    {
        notes.push("under-replication: the node's status has no such field yet".into());
    }
    let per_fault: Vec<Value> = records
        .iter()
        .map(|f| checker::availability(&h, f))
        .collect();

    let zl = checker::zone_loss_figures(&h, &records, DETECTION);

    let acked_images = h.images.len();
    let acked_blobs = h.blobs.len();
    let acked_tag_writes = h
        .requests
        .iter()
        .filter(|r| r.ok && r.kind == ReqKind::TagWrite)
        .count();
    let acked = acked_images + acked_blobs + acked_tag_writes;
    let requests = h.requests.len();
    let ok_requests = h.requests.iter().filter(|r| r.ok).count();
    let longest_request_ms = h
        .requests
        .iter()
        .map(|r| r.end_us - r.start_us)
        .max()
        .unwrap_or(0)
        / 1000;
    let max_gap_ms = per_fault
        .iter()
        .filter_map(|f| f["longest_write_gap_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let stale = durability.stale + h.stale_reads.len() + tag_disagree;
    let corrupt = durability.corrupt + h.corrupt_reads.len();
    let lost = durability.lost;
    let rss: Vec<Value> = cluster
        .nodes
        .iter()
        .map(|n| json!({"node": n.id, "zone": n.zone, "peak_rss_bytes": n.peak_rss_bytes}))
        .collect();
    let rss_mib = cluster
        .nodes
        .iter()
        .map(|n| (n.peak_rss_bytes >> 20).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let fault_errors = records.iter().filter(|r| r.error.is_some()).count();
    let failed = lost > 0
        || corrupt > 0
        || stale > 0
        || nonlin > 0
        || durability.unverified > 0
        || heal_error.is_some();
    let summary = format!(
        "chaos seed={} duration={}s faults={} fault_errors={} acked={} (images={} blobs={} tag_writes={}) \
         lost={} corrupt={} stale={} unverified={} nonlinearizable={} undecided={} tags={} \
         requests={} ok={} longest_request_ms={} max_write_gap_ms={} peak_rss_mib={} healed={} {}",
        cfg.seed,
        ran.as_secs(),
        records.len(),
        fault_errors,
        acked,
        acked_images,
        acked_blobs,
        acked_tag_writes,
        lost,
        corrupt,
        stale,
        durability.unverified,
        nonlin,
        undecided,
        tags_checked,
        requests,
        ok_requests,
        longest_request_ms,
        max_gap_ms,
        rss_mib,
        heal_error.is_none(),
        zl.summary,
    );
    let report = json!({
        "summary": summary,
        "failed": failed,
        "config": {
            "seed": cfg.seed,
            "clock_origin_unix_ms": clock.origin_unix_ms(),
            "duration_s": cfg.duration.as_secs(),
            "faults": faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "zone_loss_s": cfg.zone_loss.as_secs(),
            "workers": cfg.workers,
            "request_timeout_s": cfg.request_timeout.as_secs(),
            "node_toml": toml,
            "stowage_bin": crate::process::stowage_bin().display().to_string(),
        },
        "acked": {"images": acked_images, "blobs": acked_blobs, "tag_writes": acked_tag_writes},
        "durability": {
            "checked": durability.checked,
            "lost": lost,
            "corrupt": durability.corrupt,
            "stale_after_heal": durability.stale,
            "unverified": durability.unverified,
            "examples": durability.examples,
        },
        "during_run": {
            "stale_reads": h.stale_reads.iter().take(20).collect::<Vec<_>>(),
            "stale_read_count": h.stale_reads.len(),
            "corrupt_reads": h.corrupt_reads.iter().take(20).collect::<Vec<_>>(),
            "corrupt_read_count": h.corrupt_reads.len(),
        },
        "tags": {
            "checked": tags_checked,
            "ops": h.tag_ops.len(),
            "nonlinearizable": nonlin,
            "undecided": undecided,
            "details": lin_details,
            "final_disagreements": tag_disagree,
            "final_disagreement_examples": tag_examples,
        },
        "requests": {"total": requests, "ok": ok_requests, "longest_ms": longest_request_ms},
        "faults": per_fault,
        "push_latency_and_zone_loss": zl.report,
        "write_503s": h.unavailable.iter().map(|(t, n, b)| json!({"at_ms": t / 1000, "node": n, "body": b})).collect::<Vec<_>>(),
        "heal_error": heal_error,
        "under_replicated": under,
        "peak_rss": rss,
        "notes": notes,
    });
    if cfg.keep == Keep::Always || (failed && cfg.keep == Keep::OnFailure) {
        if let Ok(dir) = cluster.keep_dir() {
            eprintln!("chaos: kept node data and logs in {}", dir.display());
        }
    }
    if let Some(path) = &cfg.report {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| RunError::Failed(format!("writing {}: {e}", path.display())))?;
    }
    Ok(Outcome {
        summary,
        report,
        failed,
        lost,
        corrupt,
        stale,
        nonlinearizable: nonlin,
        acked,
    })
}
