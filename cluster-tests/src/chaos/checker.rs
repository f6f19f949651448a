//! The checks after the run, once every fault is healed: every
//! acknowledged image and blob read back byte-identical from every node;
//! every shared tag's history linearizable (with a final read from every
//! node appended); availability per fault; what the nodes say about
//! under-replicated data; peak memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::history::{Clock, History, ReqKind};
use super::linearizable::{self, Kind, Op, Verdict};
use super::nemesis::FaultRecord;
use super::workload::{read_blob, read_manifest, SHARED_REPO};
use crate::netns::NsCluster;
use crate::oci::sha256;

/// Reads in flight at once during the check.
const CHECK_PARALLELISM: usize = 8;
/// A read that fails (not "not found") is retried this often, a second
/// apart: the cluster has just healed.
const CHECK_ATTEMPTS: usize = 4;
/// Steps the linearizability search may take per tag.
const SEARCH_BUDGET: u64 = 5_000_000;

/// What the durability check found.
#[derive(Debug, Default)]
pub struct Durability {
    /// Acknowledged writes (images and blobs) that are checked.
    pub checked: usize,
    /// Distinct acknowledged writes missing on at least one node.
    pub lost: usize,
    /// Distinct acknowledged writes with wrong bytes on at least one node.
    pub corrupt: usize,
    /// Acknowledged writes first answered "not found" after heal, found on
    /// a retry (read-your-writes broken right after heal).
    pub stale: usize,
    /// Reads that never got an answer (node unreachable after heal).
    pub unverified: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Same,
    Absent,
    Differs,
    Unreachable,
}

/// One read of an expected object, retried while the node fails to
/// answer; `(first answer was absent, final result)`.
async fn check_one(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    reference: &str,
    manifest: bool,
    want: &[u8],
) -> (bool, Found) {
    let mut first_absent = None;
    let mut last = Found::Unreachable;
    for attempt in 0..CHECK_ATTEMPTS {
        let r = if manifest {
            read_manifest(c, url, repo, reference).await
        } else {
            read_blob(c, url, repo, reference).await
        };
        last = match r {
            Ok(Some(b)) if b == want => Found::Same,
            Ok(Some(_)) => Found::Differs,
            Ok(None) => Found::Absent,
            Err(_) => Found::Unreachable,
        };
        first_absent.get_or_insert(last == Found::Absent);
        if last == Found::Same || last == Found::Differs {
            break;
        }
        if attempt + 1 < CHECK_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    (first_absent.unwrap_or(false), last)
}

/// Reads every expected object from every node.
pub async fn durability(cluster: &NsCluster, h: &History, timeout: Duration) -> Durability {
    // (what, repo, reference, is manifest, bytes)
    let mut items: Vec<(String, String, String, bool, Vec<u8>)> = Vec::new();
    let mut in_images = vec![false; h.blobs.len()];
    for img in &h.images {
        if img.delete_started {
            // Deleted, or maybe deleted: nothing to expect, including its
            // blobs (a future GC may collect them).
            for &b in &img.blobs {
                in_images[b] = true;
            }
            continue;
        }
        let what = format!("image {}:{} ({})", img.repo, img.tag, img.digest);
        items.push((
            what.clone(),
            img.repo.clone(),
            img.tag.clone(),
            true,
            img.manifest.clone(),
        ));
        items.push((
            what.clone(),
            img.repo.clone(),
            img.digest.clone(),
            true,
            img.manifest.clone(),
        ));
        for &b in &img.blobs {
            in_images[b] = true;
            let blob = &h.blobs[b];
            items.push((
                what.clone(),
                blob.repo.clone(),
                blob.digest.clone(),
                false,
                blob.bytes.bytes(),
            ));
        }
    }
    for (b, blob) in h.blobs.iter().enumerate() {
        if !in_images[b] {
            let what = format!("blob {}@{}", blob.repo, blob.digest);
            items.push((
                what,
                blob.repo.clone(),
                blob.digest.clone(),
                false,
                blob.bytes.bytes(),
            ));
        }
    }
    let sem = Arc::new(Semaphore::new(CHECK_PARALLELISM));
    let client = crate::netns::client(timeout);
    let mut tasks = tokio::task::JoinSet::new();
    let items = Arc::new(items);
    for (node, url) in cluster.urls() {
        for i in 0..items.len() {
            let (sem, client, items, url) =
                (sem.clone(), client.clone(), items.clone(), url.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire().await;
                let (what, repo, reference, manifest, want) = &items[i];
                let (first_absent, found) =
                    check_one(&client, &url, repo, reference, *manifest, want).await;
                (
                    what.clone(),
                    format!("{repo}/{reference}"),
                    node,
                    first_absent,
                    found,
                )
            });
        }
    }
    // Per acknowledged write, the worst thing seen on any node.
    let mut worst: BTreeMap<String, (bool, Found, String)> = BTreeMap::new();
    let mut d = Durability::default();
    while let Some(r) = tasks.join_next().await {
        let Ok((what, object, node, first_absent, found)) = r else {
            continue;
        };
        let e = worst
            .entry(what)
            .or_insert((false, Found::Same, String::new()));
        e.0 |= first_absent && found == Found::Same;
        let rank = |f: Found| match f {
            Found::Same => 0,
            Found::Unreachable => 1,
            Found::Absent => 2,
            Found::Differs => 3,
        };
        if rank(found) > rank(e.1) {
            e.1 = found;
            e.2 = format!("{object} on node {node}: {found:?}");
        }
    }
    d.checked = worst.len();
    for (what, (stale, found, why)) in &worst {
        match found {
            Found::Same => {}
            Found::Absent => d.lost += 1,
            Found::Differs => d.corrupt += 1,
            Found::Unreachable => d.unverified += 1,
        }
        if *stale {
            d.stale += 1;
        }
        if (*found != Found::Same || *stale) && d.examples.len() < 20 {
            d.examples.push(format!(
                "{what}: {why}{}",
                if *stale { " (absent at first)" } else { "" }
            ));
        }
    }
    d
}

/// Reads every shared tag from every node after heal; the reads join the
/// tag histories, and nodes that disagree count as stale.
pub async fn final_tag_reads(
    cluster: &NsCluster,
    h: &mut History,
    tags: &[String],
    clock: Clock,
    timeout: Duration,
) -> (usize, Vec<String>) {
    let c = crate::netns::client(timeout);
    let mut disagree = 0;
    let mut examples = Vec::new();
    for tag in tags {
        let mut seen: Vec<(u64, Option<String>)> = Vec::new();
        for (node, url) in cluster.urls() {
            let start_us = clock.now_us();
            let mut value = Err(String::new());
            for _ in 0..CHECK_ATTEMPTS {
                value = read_manifest(&c, &url, SHARED_REPO, tag).await;
                if value.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Ok(v) = value {
                let v = v.map(|b| sha256(&b));
                h.tag_ops.push(super::history::TagOp {
                    tag: tag.clone(),
                    start_us,
                    end_us: Some(clock.now_us()),
                    kind: Kind::Read(v.clone()),
                    node,
                });
                seen.push((node, v));
            }
        }
        if seen.windows(2).any(|w| w[0].1 != w[1].1) {
            disagree += 1;
            if examples.len() < 10 {
                examples.push(format!("tag {tag}: nodes read {seen:?}"));
            }
        }
    }
    (disagree, examples)
}

/// Linearizability of every shared tag: `(tags checked, violations,
/// undecided, details)`.
pub fn linearizability(h: &History, tags: &[String]) -> (usize, usize, usize, Vec<Value>) {
    let mut bad = 0;
    let mut unknown = 0;
    let mut details = Vec::new();
    for tag in tags {
        let ops: Vec<Op> = h
            .tag_ops
            .iter()
            .filter(|o| &o.tag == tag)
            .map(|o| Op {
                start_us: o.start_us,
                end_us: o.end_us,
                kind: o.kind.clone(),
            })
            .collect();
        let verdict = linearizable::check(&None, &ops, SEARCH_BUDGET);
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Violation { deepest, ops: n } => {
                bad += 1;
                details.push(
                    json!({"tag": tag, "verdict": "violation", "ops": n, "deepest_order": deepest}),
                );
            }
            Verdict::Unknown { steps } => {
                unknown += 1;
                details.push(
                    json!({"tag": tag, "verdict": "unknown", "ops": ops.len(), "steps": steps}),
                );
            }
        }
    }
    (tags.len(), bad, unknown, details)
}

/// Availability during one fault: requests that started between the
/// fault's start and its recovery, on the nodes it did not hit.
pub fn availability(h: &History, f: &FaultRecord) -> Value {
    let end = f.recovered_us.unwrap_or(f.healed_us);
    let during: Vec<_> = h
        .requests
        .iter()
        .filter(|r| r.start_us >= f.start_us && r.start_us < end && !f.affected.contains(&r.node))
        .collect();
    let ok = during.iter().filter(|r| r.ok).count();
    let writes = during.iter().filter(|r| r.kind.is_write()).count();
    let writes_ok = during.iter().filter(|r| r.kind.is_write() && r.ok).count();
    let reads = during.len() - writes;
    let reads_ok = ok - writes_ok;
    // What the failures were: an HTTP status, or no answer in time.
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in during.iter().filter(|r| !r.ok) {
        let key = match (r.status, r.kind) {
            (Some(s), _) => s.to_string(),
            // Reads keep no status: a 5xx and a timeout look alike here.
            (None, ReqKind::TagRead | ReqKind::Pull) => "read failed".to_string(),
            (None, _) => "no answer".to_string(),
        };
        *failures.entry(key).or_default() += 1;
    }
    // When the failures began, in whole seconds after the cut.
    let mut failures_by_second: BTreeMap<u64, usize> = BTreeMap::new();
    for r in during.iter().filter(|r| !r.ok) {
        *failures_by_second
            .entry(r.start_us.saturating_sub(f.cut_us) / 1_000_000)
            .or_default() += 1;
    }
    let longest_request_ms = during
        .iter()
        .map(|r| r.end_us - r.start_us)
        .max()
        .unwrap_or(0)
        / 1000;
    // The slowest few, with enough to find them in the nodes' logs.
    let mut slowest = during.clone();
    slowest.sort_unstable_by_key(|r| std::cmp::Reverse(r.end_us - r.start_us));
    let slowest: Vec<Value> = slowest
        .iter()
        .take(5)
        .map(|r| {
            json!({
                "kind": format!("{:?}", r.kind),
                "node": r.node,
                "start_after_cut_ms": (r.start_us.cast_signed() - f.cut_us.cast_signed()) / 1000,
                "ms": (r.end_us - r.start_us) / 1000,
                "ok": r.ok,
                "status": r.status,
            })
        })
        .collect();
    // Longest time without an acknowledged write anywhere, from the fault's
    // start to its recovery.
    let mut acks: Vec<u64> = h
        .requests
        .iter()
        .filter(|r| r.ok && r.kind.is_write() && r.kind != ReqKind::Delete)
        .map(|r| r.end_us)
        .filter(|&t| t >= f.start_us && t <= end)
        .collect();
    acks.sort_unstable();
    let mut gap = 0;
    let mut prev = f.start_us;
    for t in acks.iter().copied().chain(std::iter::once(end)) {
        gap = gap.max(t - prev);
        prev = t;
    }
    let all_share = share(ok, during.len());
    json!({
        "fault": f.fault.name(),
        "detail": f.detail,
        "affected": f.affected,
        "start_s": f.start_us / 1_000_000,
        "cut_ms": f.cut_us / 1000,
        "held_ms": (f.healed_us - f.start_us) / 1000,
        "recovered_after_heal_ms": f.recovered_us.map(|t| (t - f.healed_us) / 1000),
        "survivor_requests": during.len(),
        "survivor_success_share": all_share,
        "survivor_writes": writes,
        "survivor_write_success_share": share(writes_ok, writes),
        "survivor_reads": reads,
        "survivor_read_success_share": share(reads_ok, reads),
        "survivor_failures": failures,
        "survivor_failures_by_second_after_cut": failures_by_second
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>(),
        "longest_write_gap_ms": gap / 1000,
        "longest_survivor_request_ms": longest_request_ms,
        "slowest_survivor_requests": slowest,
        "error": f.error,
    })
}

/// `ok / n` to three places; null when `n` is 0.
fn share(ok: usize, n: usize) -> Value {
    if n == 0 {
        return Value::Null;
    }
    json!((ratio(ok, n) * 1000.0).round() / 1000.0)
}

fn ratio(a: usize, b: usize) -> f64 {
    f64::from(u32::try_from(a).unwrap_or(u32::MAX))
        / f64::from(u32::try_from(b).unwrap_or(u32::MAX))
}

/// Nearest-rank percentile `p` (0..=100) of `v` in milliseconds.
fn percentile_ms(v: &mut [u64], p: usize) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = (p * v.len()).div_ceil(100).max(1);
    Some((v[rank - 1] as f64 / 100.0).round() / 10.0)
}

/// Latencies (microseconds) of one window: whole acknowledged image
/// pushes and single acknowledged push requests (blob `POST`, manifest
/// `PUT`).
#[derive(Debug, Default)]
struct Window {
    images: Vec<u64>,
    requests: Vec<u64>,
}

impl Window {
    fn json(&mut self) -> Value {
        json!({
            "image_pushes": self.images.len(),
            "image_p50_ms": percentile_ms(&mut self.images, 50),
            "image_p90_ms": percentile_ms(&mut self.images, 90),
            "push_requests": self.requests.len(),
            "request_p50_ms": percentile_ms(&mut self.requests, 50),
            "request_p90_ms": percentile_ms(&mut self.requests, 90),
        })
    }
}

/// What the latency figures and availability during whole-zone loss came
/// to: `(report, summary fragment)`.
pub struct ZoneLossFigures {
    pub report: Value,
    pub summary: String,
}

/// Push latency on surviving nodes before any fault (the baseline: pushes
/// that began and ended before the first fault started) and during
/// whole-zone loss (pushes that began from `detection` after the cut to
/// the heal, none of whose requests went to the lost zone), with the
/// ratio; and the survivors' write and read success over every zone loss
/// (from its start to the cluster's recovery, as `availability`).
pub fn zone_loss_figures(
    h: &History,
    records: &[FaultRecord],
    detection: Duration,
) -> ZoneLossFigures {
    let detection_us = u64::try_from(detection.as_micros()).unwrap_or(u64::MAX);
    let first = records.first().map_or(u64::MAX, |f| f.start_us);
    let is_push = |k: ReqKind| matches!(k, ReqKind::BlobPush | ReqKind::ManifestPush);
    let mut base = Window::default();
    for p in h.image_pushes.iter().filter(|p| p.end_us <= first) {
        base.images.push(p.end_us - p.start_us);
    }
    for r in h
        .requests
        .iter()
        .filter(|r| r.ok && is_push(r.kind) && r.end_us <= first)
    {
        base.requests.push(r.end_us - r.start_us);
    }
    let zl: Vec<&FaultRecord> = records
        .iter()
        .filter(|f| f.fault == super::nemesis::Fault::ZoneLoss && f.error.is_none())
        .collect();
    let mut during = Window::default();
    for f in &zl {
        let from = f.cut_us + detection_us;
        let inside = |start: u64| start >= from && start < f.healed_us;
        for p in h
            .image_pushes
            .iter()
            .filter(|p| inside(p.start_us) && !p.nodes.iter().any(|n| f.affected.contains(n)))
        {
            during.images.push(p.end_us - p.start_us);
        }
        for r in h.requests.iter().filter(|r| {
            r.ok && is_push(r.kind) && inside(r.start_us) && !f.affected.contains(&r.node)
        }) {
            during.requests.push(r.end_us - r.start_us);
        }
    }
    let (mut w, mut w_ok, mut r, mut r_ok) = (0, 0, 0, 0);
    for f in &zl {
        let end = f.recovered_us.unwrap_or(f.healed_us);
        for q in h.requests.iter().filter(|q| {
            q.start_us >= f.start_us && q.start_us < end && !f.affected.contains(&q.node)
        }) {
            if q.kind.is_write() {
                w += 1;
                w_ok += usize::from(q.ok);
            } else {
                r += 1;
                r_ok += usize::from(q.ok);
            }
        }
    }
    let b = base.json();
    let d = during.json();
    let div = |k: &str| match (d[k].as_f64(), b[k].as_f64()) {
        (Some(x), Some(y)) if y > 0.0 => Some((x / y * 100.0).round() / 100.0),
        _ => None,
    };
    let ratio_json = json!({
        "image_p50": div("image_p50_ms"),
        "image_p90": div("image_p90_ms"),
        "request_p50": div("request_p50_ms"),
        "request_p90": div("request_p90_ms"),
    });
    let fmt = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x}"));
    let pct = |ok: usize, n: usize| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", ratio(ok, n) * 100.0)
        }
    };
    let summary = format!(
        "image_push_ms p50/p90 baseline={}/{} zone_loss={}/{} ratio={}/{} (n={}/{}) \
         zone_loss_survivor_writes_ok={} ({}/{}) reads_ok={} ({}/{})",
        fmt(&b["image_p50_ms"]),
        fmt(&b["image_p90_ms"]),
        fmt(&d["image_p50_ms"]),
        fmt(&d["image_p90_ms"]),
        fmt(&ratio_json["image_p50"]),
        fmt(&ratio_json["image_p90"]),
        b["image_pushes"],
        d["image_pushes"],
        pct(w_ok, w),
        w_ok,
        w,
        pct(r_ok, r),
        r_ok,
        r,
    );
    let report = json!({
        "what": "latency of acknowledged pushes on surviving nodes; image = whole image push (every blob POST, then the manifest PUT), request = one blob POST or manifest PUT",
        "baseline": b,
        "zone_loss": d,
        "zone_loss_detection_excluded_ms": detection_us / 1000,
        "zone_losses": zl.len(),
        "ratio_zone_loss_to_baseline": ratio_json,
        "zone_loss_survivor_writes": w,
        "zone_loss_survivor_write_success_share": share(w_ok, w),
        "zone_loss_survivor_reads": r,
        "zone_loss_survivor_read_success_share": share(r_ok, r),
    });
    ZoneLossFigures { report, summary }
}

/// What each node reports of its copies after the heal (`chunks` in its
/// status: missing, under-replicated blobs, misplaced, queued), and the
/// cluster-wide one-line verdict of the first node that answers.
pub async fn under_replicated(cluster: &NsCluster) -> Value {
    let mut out = serde_json::Map::new();
    let mut summary = Value::Null;
    for id in cluster.ids() {
        let status = cluster.status(id).await;
        if summary.is_null() {
            if let Some(s) = status.as_ref() {
                summary = s["replication"]["summary"].clone();
            }
        }
        let v = status.map(|s| s["chunks"].clone()).unwrap_or(Value::Null);
        out.insert(id.to_string(), v);
    }
    out.insert("summary".into(), summary);
    Value::Object(out)
}
