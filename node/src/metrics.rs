//! Prometheus metrics (`GET /metrics`, OpenMetrics text from
//! prometheus-client). Counters and histograms are counted where things
//! happen (the HTTP edge, chunk writes, Raft's metrics stream); everything
//! that mirrors state (Raft position, members, replica health, workers, the
//! process) is read from its owner at scrape time, so no number here can
//! drift from the status report. Each node exports its own view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use openraft::async_runtime::WatchReceiver;

use crate::admin::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerStateLabels {
    worker: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    zone: String,
    role: String,
}

/// Methods as a fixed set: hyper accepts any token as a method, and a label
/// taken from the request would let any caller mint new series.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The node's live instruments.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    chunk_writes: Family<OutcomeLabels, Counter>,
    chunk_write_seconds: Histogram,
    leader_changes: Counter,
    last_leader: Mutex<Option<u64>>,
    /// Raft's committed index, as the metrics stream last reported it.
    committed: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            chunk_writes: Family::default(),
            chunk_write_seconds: latency_histogram(),
            leader_changes: Counter::default(),
            last_leader: Mutex::new(None),
            committed: AtomicU64::new(0),
        }
    }
}

/// What the scrape reads besides the status report.
pub struct Extra {
    pub upload_sessions: u64,
    pub log_bytes: u64,
    pub snapshot_bytes: u64,
    pub sweep: crate::chunks::gc::ChunkSweep,
    pub scrub: crate::chunks::scrub::ScrubStatus,
}

impl Metrics {
    /// One answered request: `endpoint` is the route's stable name.
    pub fn request(
        &self,
        endpoint: &'static str,
        method: &http::Method,
        status: u16,
        bytes_out: u64,
        took: Duration,
    ) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                method,
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels { endpoint, method })
            .observe(took.as_secs_f64());
        self.bytes_out.inc_by(bytes_out);
    }

    /// Request body bytes read (uploads and manifests).
    pub fn received(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// One chunk write across the cluster: whether it reached its quorum
    /// and how long that took.
    pub fn chunk_write(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "unavailable" };
        self.chunk_writes
            .get_or_create(&OutcomeLabels { result })
            .inc();
        self.chunk_write_seconds.observe(took.as_secs_f64());
    }

    /// Called on every change Raft reports: counts leader changes as they
    /// happen (a scrape would miss a flip between two scrapes).
    pub fn raft_changed(&self, leader: Option<u64>, committed: Option<u64>) {
        if let Some(c) = committed {
            self.committed.store(c, Ordering::Relaxed);
        }
        let Ok(mut last) = self.last_leader.lock() else {
            return;
        };
        if leader.is_some() && leader != *last {
            if last.is_some() {
                self.leader_changes.inc();
            }
            *last = leader;
        }
    }

    /// Follows Raft's metrics stream until the node stops.
    pub fn follow(self: std::sync::Arc<Self>, raft: &crate::raft::Raft) {
        let mut rx = raft.metrics();
        tokio::spawn(async move {
            loop {
                {
                    let m = rx.borrow_and_update();
                    self.raft_changed(
                        m.current_leader.map(|l| l.0),
                        m.local_committed.as_ref().map(|l| l.index),
                    );
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// The exposition: the live instruments plus gauges read from `s`.
    pub fn render(&self, s: &Status, extra: &Extra) -> Result<String, std::fmt::Error> {
        let mut r = Registry::with_prefix("stowage");
        r.register(
            "http_requests",
            "HTTP requests answered, by endpoint, method and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to the answer's head, by endpoint and method",
            self.request_seconds.clone(),
        );
        r.register(
            "http_received_bytes",
            "Request body bytes read: uploads and manifests",
            self.bytes_in.clone(),
        );
        r.register(
            "http_sent_bytes",
            "Response body bytes sent (as declared by Content-Length; none for HEAD)",
            self.bytes_out.clone(),
        );
        r.register(
            "chunk_writes",
            "Chunk writes across the cluster, by result (ok: write quorum reached)",
            self.chunk_writes.clone(),
        );
        r.register(
            "chunk_write_duration_seconds",
            "Time for a chunk to reach its write quorum (or to fail)",
            self.chunk_write_seconds.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times this node saw the leader change",
            self.leader_changes.clone(),
        );

        let node = Family::<NodeLabels, Gauge>::default();
        node.get_or_create(&NodeLabels {
            node: s.node_id.to_string(),
            zone: s.zone.clone(),
            role: s.role.clone(),
        })
        .set(1);
        r.register("node_info", "This node: id, zone and Raft role", node);
        let gauge = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(
                name,
                help,
                ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
            );
        };
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v));
        };
        gauge(&mut r, "raft_term", "Current Raft term", s.term);
        gauge(
            &mut r,
            "raft_is_leader",
            "1 if this node leads",
            u64::from(s.role == "leader"),
        );
        gauge(
            &mut r,
            "raft_commit_index",
            "Last log index known committed",
            self.committed.load(Ordering::Relaxed),
        );
        gauge(
            &mut r,
            "raft_applied_index",
            "Last log index applied to the state machine",
            s.last_applied.unwrap_or(0),
        );
        gauge(
            &mut r,
            "raft_last_log_index",
            "Last index in this node's log",
            s.last_log_index.unwrap_or(0),
        );
        gauge(
            &mut r,
            "raft_snapshot_index",
            "Log index of the latest snapshot",
            s.snapshot.unwrap_or(0),
        );
        gauge(
            &mut r,
            "raft_log_entries",
            "Entries in the log after the last purge",
            s.last_log_index
                .unwrap_or(0)
                .saturating_sub(s.purged.unwrap_or(0)),
        );
        gauge(
            &mut r,
            "raft_log_bytes",
            "Bytes of this node's Raft log files",
            extra.log_bytes,
        );
        gauge(
            &mut r,
            "raft_snapshot_bytes",
            "Bytes of this node's snapshot files",
            extra.snapshot_bytes,
        );
        let lag = Family::<PeerLabels, Gauge>::default();
        let contact = Family::<PeerLabels, Gauge>::default();
        let last = s.last_log_index.unwrap_or(0);
        for m in s.members.iter().filter(|m| m.id != s.node_id) {
            let l = PeerLabels {
                peer: m.id.to_string(),
                zone: m.zone.clone(),
            };
            if let Some(matched) = m.matched {
                lag.get_or_create(&l)
                    .set(i64::try_from(last.saturating_sub(matched)).unwrap_or(i64::MAX));
            }
            if let Some(ms) = m.last_contact_ms {
                contact
                    .get_or_create(&l)
                    .set(i64::try_from(ms).unwrap_or(i64::MAX));
            }
        }
        r.register(
            "raft_replication_lag_entries",
            "On the leader: log entries each follower is behind",
            lag,
        );
        r.register(
            "peer_last_contact_milliseconds",
            "Time since this node last heard from each peer",
            contact,
        );
        gauge(
            &mut r,
            "members",
            "Members of the cluster (voters and learners)",
            s.members.len() as u64,
        );

        let c = &s.chunks;
        gauge(
            &mut r,
            "chunks_held",
            "Chunk copies on this node, at the last repair sweep",
            c.held_chunks,
        );
        gauge(
            &mut r,
            "chunks_held_bytes",
            "Bytes of chunk copies on this node, at the last repair sweep",
            c.held_bytes,
        );
        gauge(
            &mut r,
            "chunks_missing",
            "Chunks placement assigns here that are not here",
            c.missing_chunks,
        );
        gauge(
            &mut r,
            "blobs_under_replicated",
            "Blobs with a chunk missing here, at the last sweep",
            c.under_replicated_blobs,
        );
        gauge(
            &mut r,
            "chunks_misplaced",
            "Copies here that placement assigns elsewhere",
            c.misplaced_chunks,
        );
        gauge(&mut r, "repair_queue", "Chunks queued for repair", c.queued);
        counter(
            &mut r,
            "repaired_chunks",
            "Chunks fetched by repair",
            c.repaired_chunks,
        );
        counter(
            &mut r,
            "repaired_bytes",
            "Bytes fetched by repair",
            c.repaired_bytes,
        );
        gauge(
            &mut r,
            "chunks_lost",
            "Chunks scrub found with no good copy anywhere",
            c.lost_chunks,
        );
        gauge(
            &mut r,
            "upload_sessions_open",
            "Upload sessions open on this node",
            extra.upload_sessions,
        );

        counter(
            &mut r,
            "gc_removed_chunk_files",
            "Chunk files garbage collection removed from this node",
            extra.sweep.removed_total,
        );
        counter(
            &mut r,
            "gc_reclaimed_bytes",
            "Bytes garbage collection freed on this node",
            extra.sweep.removed_bytes_total,
        );
        let sc = &extra.scrub;
        counter(&mut r, "scrub_passes", "Completed scrub passes", sc.passes);
        gauge(
            &mut r,
            "scrub_checked_chunks",
            "Chunks the current (or last) scrub pass has re-hashed",
            sc.checked,
        );
        gauge(
            &mut r,
            "scrub_pass_chunks",
            "Chunks in the current (or last) scrub pass",
            sc.total,
        );
        counter(
            &mut r,
            "scrub_corrupt_found",
            "Corrupt copies scrub found",
            sc.corrupt_found,
        );
        counter(
            &mut r,
            "scrub_repaired",
            "Corrupt copies scrub rewrote from a replica",
            sc.repaired,
        );

        let state = Family::<WorkerStateLabels, Gauge>::default();
        let steps = Family::<WorkerLabels, Gauge>::default();
        let errors = Family::<WorkerLabels, Gauge>::default();
        for w in &s.workers {
            state
                .get_or_create(&WorkerStateLabels {
                    worker: w.name.clone(),
                    state: w.state.clone(),
                })
                .set(1);
            let l = WorkerLabels {
                worker: w.name.clone(),
            };
            steps
                .get_or_create(&l)
                .set(i64::try_from(w.steps).unwrap_or(i64::MAX));
            errors
                .get_or_create(&l)
                .set(i64::try_from(w.errors).unwrap_or(i64::MAX));
        }
        r.register(
            "worker_state",
            "Background jobs: 1 for each job's state (running, idle, failing)",
            state,
        );
        r.register(
            "worker_steps",
            "Steps each background job has run since start",
            steps,
        );
        r.register(
            "worker_errors",
            "Failed steps of each background job since start",
            errors,
        );

        let d = &s.disk;
        gauge(
            &mut r,
            "disk_free_bytes",
            "Free space on the data directory's filesystem",
            d.free_bytes,
        );
        gauge(
            &mut r,
            "disk_total_bytes",
            "Size of the data directory's filesystem",
            d.total_bytes,
        );
        gauge(
            &mut r,
            "disk_read_only",
            "1 while free space is under min_free_bytes (pushes answer 507)",
            u64::from(d.read_only),
        );

        let p = process();
        gauge(
            &mut r,
            "process_resident_memory_bytes",
            "Resident memory of the node process",
            p.rss_bytes,
        );
        gauge(
            &mut r,
            "process_open_fds",
            "Open file descriptors of the node process",
            p.open_fds,
        );

        let mut out = String::new();
        encode(&mut out, &r)?;
        Ok(out)
    }
}

struct Process {
    rss_bytes: u64,
    open_fds: u64,
}

/// Read from /proc (0 where there is none).
fn process() -> Process {
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Process {
        rss_bytes,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_changes_count_flips_not_the_first_leader() {
        let m = Metrics::default();
        m.raft_changed(None, None);
        m.raft_changed(Some(1), Some(3));
        m.raft_changed(Some(1), Some(4));
        m.raft_changed(None, None);
        m.raft_changed(Some(2), Some(9));
        assert_eq!(m.leader_changes.get(), 1);
        assert_eq!(m.committed.load(Ordering::Relaxed), 9);
    }
}
