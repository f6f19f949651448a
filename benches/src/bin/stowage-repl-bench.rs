//! `stowage-repl-bench`: the measuring half of
//! `benches/replication-vs-skopeo.sh` (issue #11). It talks HTTP only (the
//! OCI API and `/_stowage/replication`), like the rest of this crate, and
//! never links the node.
//!
//! - `lag`: clients push small images (3 layers of 1-64 KiB, a config, a
//!   manifest with a tag, as `stowage-bench --workload push-many` does) to
//!   the source; for every tag, the time from the source's `201` to the
//!   manifest PUT until a `GET` of that tag on the replication target
//!   answers `200` with the same digest. One watcher per repository polls
//!   the oldest tag not yet seen every `--poll-ms` (the replicator copies
//!   the log in order, and each client pushes its repository in order), so
//!   a lag is overstated by at most one poll interval plus one GET.
//! - `big`: pushes `--images` images of one `--layer-mib` MiB layer each,
//!   one after the other, to the source and (with `--target`) waits until
//!   every tag is on the target: MB/s from the first push's `201` until the
//!   last tag is visible.
//! - `wait`: polls a target until every image of an images file is there
//!   (after a replication rule is added, or beside a copy).
//! - `verify`: every image of an images file on a target: the manifest by
//!   tag with its digest, and with `--blobs` every blob read back whole
//!   and hashed.
//!
//! Every subcommand prints one JSON object on stdout.

use std::collections::VecDeque;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{json, Value};
use stowage_benches::client::Registry;
use stowage_benches::data::{
    config_for, manifest_bytes, mix, random_bytes, sha256_digest, Blob, BlobRef, Image,
    OCI_MANIFEST,
};
use stowage_benches::stats::Tally;
use tokio::sync::mpsc;

const LOG_INDEX_HEADER: &str = "stowage-log-index";
const DIGEST_HEADER: &str = "docker-content-digest";
/// The large images' layers: uncompressed tar, as the real-client
/// workloads push them (skopeo is told to keep them as they are).
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MIB: usize = 1 << 20;
/// Tags that must become visible after the last push for a drain rate.
const DRAIN_MIN_TAGS: usize = 10;
/// How often `lag` reads the source's replication status.
const STATUS_EVERY: Duration = Duration::from_millis(250);

type Http = Client<HttpConnector, Full<Bytes>>;
type Res<T> = std::result::Result<T, String>;

#[derive(Debug, Parser)]
#[command(
    name = "stowage-repl-bench",
    about = "Replication lag and copy throughput (issue #11)"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Small images pushed to the source; per tag, the time until the
    /// target shows it.
    Lag {
        /// A source node (repeat for a cluster: clients spread over them).
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
        /// The replication target.
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 25)]
        images_per_client: usize,
        /// Each client starts an image every P ms (0: as fast as it can).
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
        /// Repositories: PREFIX/c<k>.
        #[arg(long)]
        repo_prefix: String,
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// After the last push, give the target this long.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Per-tag results, one JSON object a line.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Source nodes whose `/_stowage/replication` is sampled every
        /// 250 ms (the leader answers with the work's status); the samples
        /// go to --status-out.
        #[arg(long)]
        status: Vec<String>,
        #[arg(long)]
        status_out: Option<std::path::PathBuf>,
    },
    /// Large images pushed to the source one after the other; with a
    /// target, the time until all are there.
    Big {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 10)]
        images: usize,
        #[arg(long, default_value_t = 100)]
        layer_mib: usize,
        /// Repository; tags are img-0, img-1, ...
        #[arg(long)]
        repo: String,
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Written: one JSON object per image (tag, digests, sizes).
        #[arg(long)]
        images_file: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// Per-image results (with --target), one JSON object a line.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Polls a target until every image of an images file is there.
    Wait {
        #[arg(long)]
        target: String,
        #[arg(long)]
        images_file: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Checks every image of an images file on a target.
    Verify {
        #[arg(long)]
        target: String,
        #[arg(long)]
        images_file: std::path::PathBuf,
        /// Also read every blob back and check its digest and size.
        #[arg(long)]
        blobs: bool,
    },
}

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn request(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(header::HeaderName, &str)],
    body: Bytes,
) -> Res<(StatusCode, http::HeaderMap, Bytes)> {
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| format!("{method} {url}: no answer in 30 s"))?
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// PUT of a manifest under `tag`; the answer's log index, if any.
async fn put_manifest(
    http: &Http,
    base: &str,
    repo: &str,
    tag: &str,
    m: &Blob,
) -> Res<Option<u64>> {
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let (status, headers, body) = request(
        http,
        Method::PUT,
        &url,
        &[(header::CONTENT_TYPE, OCI_MANIFEST)],
        m.data.clone(),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(format!(
            "PUT {url}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(headers
        .get(LOG_INDEX_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok()))
}

/// The digest of `repo:tag` on `base`, or `None` while it is not there.
async fn manifest_digest(http: &Http, base: &str, repo: &str, tag: &str) -> Res<Option<String>> {
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let (status, headers, body) = request(
        http,
        Method::GET,
        &url,
        &[(header::ACCEPT, OCI_MANIFEST)],
        Bytes::new(),
    )
    .await?;
    match status {
        StatusCode::OK => {
            let got = sha256_digest(&body);
            if let Some(h) = headers.get(DIGEST_HEADER).and_then(|v| v.to_str().ok()) {
                if h != got {
                    return Err(format!("GET {url}: Docker-Content-Digest {h}, body {got}"));
                }
            }
            Ok(Some(got))
        }
        StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!("GET {url}: {s}")),
    }
}

/// A pushed tag the watcher waits for.
struct Pending {
    repo: String,
    tag: String,
    digest: String,
    acked: Instant,
    log_index: Option<u64>,
}

/// What the watcher saw of one tag.
struct Seen {
    pending: Pending,
    /// When a GET first showed it (None: never, within the deadline).
    visible: Option<Instant>,
    /// Seen only by the final sweep, after a later tag of its repository.
    late: bool,
    wrong_digest: bool,
}

/// Shared by the pushers and the watchers: when the watchers give up.
#[derive(Clone, Default)]
struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }
    fn passed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() >= d)
    }
}

/// Polls the oldest pushed tag of one repository until it is on the target,
/// then the next; tags still missing at the deadline get one last GET each.
async fn watch(
    http: Http,
    target: String,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    poll: Duration,
    deadline: Deadline,
) -> Vec<Seen> {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut seen = Vec::new();
    let mut open = true;
    loop {
        while open {
            match rx.try_recv() {
                Ok(p) => queue.push_back(p),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let Some(front) = queue.front() else {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => open = false,
            }
            continue;
        };
        match manifest_digest(&http, &target, &front.repo, &front.tag).await {
            Ok(Some(d)) => {
                let now = Instant::now();
                if let Some(p) = queue.pop_front() {
                    let wrong_digest = d != p.digest;
                    seen.push(Seen {
                        pending: p,
                        visible: Some(now),
                        late: false,
                        wrong_digest,
                    });
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => eprintln!("watch: {e}"),
        }
        if deadline.passed() {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    // Whatever is left: still pushing when the deadline came, out of
    // order, or missing.
    while let Ok(p) = rx.try_recv() {
        queue.push_back(p);
    }
    for p in queue {
        let got = manifest_digest(&http, &target, &p.repo, &p.tag)
            .await
            .ok()
            .flatten();
        let wrong_digest = got.as_ref().is_some_and(|d| *d != p.digest);
        seen.push(Seen {
            visible: got.map(|_| Instant::now()),
            late: true,
            wrong_digest,
            pending: p,
        });
    }
    seen
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = stowage_benches::stats::nearest_rank(p, sorted.len() as u64);
    let i = usize::try_from(rank)
        .unwrap_or(usize::MAX)
        .clamp(1, sorted.len())
        - 1;
    sorted[i]
}

fn lag_summary(seen: &[Seen], start: Instant) -> Value {
    let mut lags: Vec<f64> = seen
        .iter()
        .filter(|s| !s.late && !s.wrong_digest)
        .filter_map(|s| s.visible.map(|v| ms(v - s.pending.acked)))
        .collect();
    lags.sort_by(f64::total_cmp);
    let first_ack = seen.iter().map(|s| s.pending.acked).min();
    let last_ack = seen.iter().map(|s| s.pending.acked).max();
    let last_visible = seen.iter().filter_map(|s| s.visible).max();
    let visible = seen.iter().filter(|s| s.visible.is_some()).count();
    let mean = if lags.is_empty() {
        0.0
    } else {
        lags.iter().sum::<f64>() / lags.len() as f64
    };
    let mut v = json!({
        "tags": seen.len(),
        "visible": visible,
        "missing": seen.len() - visible,
        "late": seen.iter().filter(|s| s.late && s.visible.is_some()).count(),
        "wrong_digest": seen.iter().filter(|s| s.wrong_digest).count(),
        "lag_min_ms": lags.first().copied().unwrap_or(0.0),
        "lag_p50_ms": pct(&lags, 50.0),
        "lag_p90_ms": pct(&lags, 90.0),
        "lag_p99_ms": pct(&lags, 99.0),
        "lag_max_ms": lags.last().copied().unwrap_or(0.0),
        "lag_mean_ms": mean,
    });
    if let (Some(f), Some(l), Some(lv)) = (first_ack, last_ack, last_visible) {
        v["first_ack_ms"] = json!(ms(f - start));
        v["last_ack_ms"] = json!(ms(l - start));
        v["last_visible_ms"] = json!(ms(lv.saturating_duration_since(start)));
        // How long the target took after the last push, and the rate it
        // took images at from the first ack on.
        v["drain_ms"] = json!(ms(lv.saturating_duration_since(l)));
        let span = lv.saturating_duration_since(f).as_secs_f64();
        if span > 0.0 {
            v["repl_images_per_s"] = json!(visible as f64 / span);
        }
        // The rate once the pushes were over (the replicator alone), when
        // enough tags were left for a rate to mean something.
        let after = seen
            .iter()
            .filter(|s| s.visible.is_some_and(|t| t > l))
            .count();
        let drain = lv.saturating_duration_since(l).as_secs_f64();
        if after >= DRAIN_MIN_TAGS && drain > 0.0 {
            v["drain_images_per_s"] = json!(after as f64 / drain);
            v["visible_after_last_ack"] = json!(after);
        }
    }
    v
}

fn write_seen(path: &std::path::Path, seen: &[Seen], start: Instant) -> Res<()> {
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for s in seen {
        let line = json!({
            "repo": s.pending.repo,
            "tag": s.pending.tag,
            "log_index": s.pending.log_index,
            "ack_ms": ms(s.pending.acked - start),
            "visible_ms": s.visible.map(|v| ms(v.saturating_duration_since(start))),
            "lag_ms": s.visible.map(|v| ms(v.saturating_duration_since(s.pending.acked))),
            "late": s.late,
            "wrong_digest": s.wrong_digest,
        });
        writeln!(f, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Samples `/_stowage/replication` of the nodes until stopped; keeps the
/// leader's answers (the one with a non-zero cursor or bytes copied).
fn sample_status(
    http: Http,
    nodes: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for n in &nodes {
                let url = format!("{n}/_stowage/replication");
                if let Ok((StatusCode::OK, _, body)) =
                    request(&http, Method::GET, &url, &[], Bytes::new()).await
                {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    for r in v["rules"].as_array().into_iter().flatten() {
                        out.push(json!({
                            "t_ms": ms(start.elapsed()),
                            "node": n,
                            "rule": r["rule"]["name"],
                            "cursor": r["cursor"],
                            "lag_entries": r["lag_entries"],
                            "lag_secs": r["lag_secs"],
                            "bytes_copied": r["bytes_copied"],
                            "manifests_copied": r["manifests_copied"],
                            "last_error": r["last_error"],
                        }));
                    }
                }
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
        out
    })
}

#[allow(clippy::too_many_arguments)]
async fn lag(
    sources: Vec<String>,
    target: String,
    clients: usize,
    per_client: usize,
    pace_ms: u64,
    repo_prefix: String,
    poll: Duration,
    timeout: Duration,
    seed: u64,
    out: Option<std::path::PathBuf>,
    status: Vec<String>,
    status_out: Option<std::path::PathBuf>,
) -> Res<Value> {
    let http = http_client();
    let reg = Registry::new(&sources).map_err(|e| e.to_string())?;
    let clients = clients.max(1);
    let work: Vec<(String, Vec<Image>)> = (0..clients)
        .map(|k| {
            let repo = format!("{repo_prefix}/c{k}");
            let images = (0..per_client)
                .map(|j| Image::small(mix(seed ^ ((k as u64) << 32 | j as u64))))
                .collect();
            (repo, images)
        })
        .collect();
    let deadline = Deadline::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let sampler = sample_status(http.clone(), status.clone(), stop.clone(), start);
    let mut watchers = Vec::new();
    let mut pushers = Vec::new();
    for (k, (repo, images)) in work.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        watchers.push(tokio::spawn(watch(
            http.clone(),
            target.clone(),
            rx,
            poll,
            deadline.clone(),
        )));
        let reg = reg.clone();
        let http = http.clone();
        pushers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut tally = Tally::default();
            let begun = Instant::now();
            for (j, image) in images.iter().enumerate() {
                if pace_ms > 0 {
                    let at = begun + Duration::from_millis(pace_ms * j as u64);
                    tokio::time::sleep_until(at.into()).await;
                }
                let node = (k + j) % reg.nodes();
                let tag = format!("v{j}");
                let pushed = async {
                    for layer in &image.layers {
                        reg.push_blob(node, &repo, layer, &mut tally)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    reg.push_blob(node, &repo, &image.config, &mut tally)
                        .await
                        .map_err(|e| e.to_string())?;
                    put_manifest(&http, &reg.targets()[node], &repo, &tag, &image.manifest).await
                }
                .await;
                match pushed {
                    Ok(log_index) => {
                        let _ = tx.send(Pending {
                            repo: repo.clone(),
                            tag,
                            digest: image.manifest.digest.clone(),
                            acked: Instant::now(),
                            log_index,
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
            errors
        }));
    }
    let mut push_errors = Vec::new();
    for p in pushers {
        push_errors.extend(p.await.map_err(|e| e.to_string())?);
    }
    let pushed_at = Instant::now();
    deadline.set(pushed_at + timeout);
    let mut seen = Vec::new();
    for w in watchers {
        seen.extend(w.await.map_err(|e| e.to_string())?);
    }
    // A little more status after the end, to see the cursor settle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.map_err(|e| e.to_string())?;
    let push_secs = (pushed_at - start).as_secs_f64();
    let mut v = lag_summary(&seen, start);
    v["pushed"] = json!(seen.len());
    v["push_errors"] = json!(push_errors.len());
    v["first_push_error"] = json!(push_errors.first());
    v["push_secs"] = json!(push_secs);
    v["push_images_per_s"] = json!(seen.len() as f64 / push_secs.max(1e-9));
    v["clients"] = json!(clients);
    v["pace_ms"] = json!(pace_ms);
    v["poll_ms"] = json!(ms(poll));
    let max_lag_entries = samples
        .iter()
        .filter_map(|s| s["lag_entries"].as_u64())
        .max();
    v["status_max_lag_entries"] = json!(max_lag_entries);
    if let Some(last) = samples
        .iter()
        .rev()
        .find(|s| s["cursor"].as_u64() > Some(0))
    {
        v["status_last"] = last.clone();
    }
    if let Some(log) = seen.iter().filter_map(|s| s.pending.log_index).max() {
        v["last_log_index"] = json!(log);
    }
    if let Some(p) = out {
        write_seen(&p, &seen, start)?;
    }
    if let Some(p) = status_out {
        let mut f = std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        for s in &samples {
            writeln!(f, "{s}").map_err(|e| e.to_string())?;
        }
    }
    Ok(v)
}

/// One large image: its blobs and manifest.
struct BigImage {
    tag: String,
    layer: Blob,
    config: Blob,
    manifest: Blob,
}

fn big_image(seed: u64, i: usize, layer_mib: usize) -> BigImage {
    let layer = Blob::new(random_bytes(mix(seed ^ (i as u64) << 40), layer_mib * MIB));
    let refs = [BlobRef::from(&layer)];
    let config = config_for(&refs, &format!("big-{seed}-{i}"));
    let manifest = Blob::new(manifest_bytes(&BlobRef::from(&config), &refs, TAR_LAYER));
    BigImage {
        tag: format!("img-{i}"),
        layer,
        config,
        manifest,
    }
}

fn image_line(repo: &str, b: &BigImage) -> Value {
    json!({
        "repo": repo,
        "tag": b.tag,
        "manifest": b.manifest.digest,
        "manifest_size": b.manifest.size(),
        "blobs": [
            { "digest": b.config.digest, "size": b.config.size() },
            { "digest": b.layer.digest, "size": b.layer.size() },
        ],
        "bytes": b.layer.size() + b.config.size() + b.manifest.size(),
    })
}

fn read_images(path: &std::path::Path) -> Res<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn big(
    source: String,
    target: Option<String>,
    images: usize,
    layer_mib: usize,
    repo: String,
    seed: u64,
    images_file: std::path::PathBuf,
    poll: Duration,
    timeout: Duration,
    out: Option<std::path::PathBuf>,
) -> Res<Value> {
    let http = http_client();
    let reg = Registry::new(std::slice::from_ref(&source)).map_err(|e| e.to_string())?;
    // Data and digests first, before any clock starts.
    let made: Vec<BigImage> = (0..images).map(|i| big_image(seed, i, layer_mib)).collect();
    {
        let mut f = std::fs::File::create(&images_file)
            .map_err(|e| format!("{}: {e}", images_file.display()))?;
        for b in &made {
            writeln!(f, "{}", image_line(&repo, b)).map_err(|e| e.to_string())?;
        }
    }
    let bytes: u64 = made
        .iter()
        .map(|b| b.layer.size() + b.config.size() + b.manifest.size())
        .sum();
    let deadline = Deadline::default();
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = target
        .clone()
        .map(|t| tokio::spawn(watch(http.clone(), t, rx, poll, deadline.clone())));
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut acks = Vec::new();
    for b in &made {
        reg.push_blob(0, &repo, &b.layer, &mut tally)
            .await
            .map_err(|e| e.to_string())?;
        reg.push_blob(0, &repo, &b.config, &mut tally)
            .await
            .map_err(|e| e.to_string())?;
        let log_index = put_manifest(&http, &source, &repo, &b.tag, &b.manifest).await?;
        let acked = Instant::now();
        acks.push(acked);
        let _ = tx.send(Pending {
            repo: repo.clone(),
            tag: b.tag.clone(),
            digest: b.manifest.digest.clone(),
            acked,
            log_index,
        });
    }
    drop(tx);
    let pushed = Instant::now();
    deadline.set(pushed + timeout);
    let push_secs = (pushed - start).as_secs_f64();
    let mut v = json!({
        "images": images,
        "layer_mib": layer_mib,
        "bytes": bytes,
        "push_secs": push_secs,
        "push_mb_per_s": bytes as f64 / 1e6 / push_secs.max(1e-9),
        "done_unix_ms": unix_ms(),
    });
    if let Some(w) = watcher {
        let seen = w.await.map_err(|e| e.to_string())?;
        if let Some(p) = &out {
            write_seen(p, &seen, start)?;
        }
        let mut s = lag_summary(&seen, start);
        let first = acks.first().copied().unwrap_or(start);
        if let Some(last) = seen.iter().filter_map(|s| s.visible).max() {
            if s["missing"] == json!(0) {
                let secs = last.saturating_duration_since(first).as_secs_f64();
                s["repl_secs"] = json!(secs);
                s["repl_mb_per_s"] = json!(bytes as f64 / 1e6 / secs.max(1e-9));
            }
        }
        if let Some(o) = s.as_object() {
            for (k, val) in o {
                v[k] = val.clone();
            }
        }
    }
    Ok(v)
}

async fn wait(
    target: String,
    images_file: std::path::PathBuf,
    poll: Duration,
    timeout: Duration,
) -> Res<Value> {
    let http = http_client();
    let images = read_images(&images_file)?;
    let start = Instant::now();
    let mut pending: Vec<(String, String, String)> = images
        .iter()
        .map(|i| {
            (
                i["repo"].as_str().unwrap_or("").to_owned(),
                i["tag"].as_str().unwrap_or("").to_owned(),
                i["manifest"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut visible = Vec::new();
    let mut wrong = 0usize;
    while !pending.is_empty() && start.elapsed() < timeout {
        let mut left = Vec::new();
        for (repo, tag, digest) in pending {
            match manifest_digest(&http, &target, &repo, &tag).await {
                Ok(Some(d)) => {
                    if d != digest {
                        wrong += 1;
                    }
                    visible.push(json!({ "tag": tag, "unix_ms": unix_ms() }));
                }
                Ok(None) => left.push((repo, tag, digest)),
                Err(e) => {
                    eprintln!("wait: {e}");
                    left.push((repo, tag, digest));
                }
            }
        }
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(poll).await;
        }
    }
    Ok(json!({
        "images": images.len(),
        "visible": visible.len(),
        "missing": pending.len(),
        "wrong_digest": wrong,
        "done_unix_ms": unix_ms(),
        "waited_secs": start.elapsed().as_secs_f64(),
        "tags": visible,
    }))
}

async fn verify(target: String, images_file: std::path::PathBuf, blobs: bool) -> Res<Value> {
    let http = http_client();
    let reg = Registry::new(std::slice::from_ref(&target)).map_err(|e| e.to_string())?;
    let images = read_images(&images_file)?;
    let (mut ok, mut missing, mut wrong, mut blob_ok, mut blob_bad) = (0, 0, 0, 0, 0);
    let mut first_error: Option<String> = None;
    for i in &images {
        let repo = i["repo"].as_str().unwrap_or("");
        let tag = i["tag"].as_str().unwrap_or("");
        match manifest_digest(&http, &target, repo, tag).await {
            Ok(Some(d)) if Some(d.as_str()) == i["manifest"].as_str() => ok += 1,
            Ok(Some(_)) => wrong += 1,
            Ok(None) => missing += 1,
            Err(e) => {
                missing += 1;
                first_error.get_or_insert(e);
            }
        }
        if blobs {
            for b in i["blobs"].as_array().into_iter().flatten() {
                let r = BlobRef {
                    digest: b["digest"].as_str().unwrap_or("").to_owned(),
                    size: b["size"].as_u64().unwrap_or(0),
                };
                let mut tally = Tally::default();
                match reg.get_blob(0, repo, &r, &mut tally).await {
                    Ok(()) => blob_ok += 1,
                    Err(e) => {
                        blob_bad += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
    }
    Ok(json!({
        "images": images.len(),
        "ok": ok,
        "missing": missing,
        "wrong_digest": wrong,
        "blobs_ok": blob_ok,
        "blobs_bad": blob_bad,
        "first_error": first_error,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Lag {
            sources,
            target,
            clients,
            images_per_client,
            pace_ms,
            repo_prefix,
            poll_ms,
            timeout_secs,
            seed,
            out,
            status,
            status_out,
        } => {
            lag(
                sources,
                target,
                clients,
                images_per_client,
                pace_ms,
                repo_prefix,
                Duration::from_millis(poll_ms),
                Duration::from_secs(timeout_secs),
                seed,
                out,
                status,
                status_out,
            )
            .await
        }
        Cmd::Big {
            source,
            target,
            images,
            layer_mib,
            repo,
            seed,
            images_file,
            poll_ms,
            timeout_secs,
            out,
        } => {
            big(
                source,
                target,
                images,
                layer_mib,
                repo,
                seed,
                images_file,
                Duration::from_millis(poll_ms),
                Duration::from_secs(timeout_secs),
                out,
            )
            .await
        }
        Cmd::Wait {
            target,
            images_file,
            poll_ms,
            timeout_secs,
        } => {
            wait(
                target,
                images_file,
                Duration::from_millis(poll_ms),
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Cmd::Verify {
            target,
            images_file,
            blobs,
        } => verify(target, images_file, blobs).await,
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stowage-repl-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
