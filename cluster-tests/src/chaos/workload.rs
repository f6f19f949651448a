//! The chaos workload: concurrent workers, each with its own seeded
//! stream, pushing small and multi-chunk images (monolithic blob POST with
//! `?digest=`, then the manifest PUT, often to another node), moving a few
//! shared tags, reading them back, pulling acknowledged images and deleting
//! some of their own, all against random nodes while the nemesis works.
//! Every request has a client timeout and lands in the `History`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::json;

use super::history::{
    AckedBlob, AckedImage, BlobBytes, Clock, ImagePush, ReqKind, Request, Shared, TagOp,
};
use super::linearizable::Kind;
use super::rng::Rng;
use crate::oci::{data, sha256, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};

/// The repository all shared tags live in.
pub const SHARED_REPO: &str = "chaos/shared";

/// Shared tags in use at once.
const ACTIVE_TAGS: usize = 3;

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// `(node id, base URL)` of every node.
    pub nodes: Vec<(u64, String)>,
    pub workers: usize,
    /// Client timeout of every request.
    pub request_timeout: Duration,
    /// Operations per shared tag before a fresh tag takes its place, so the
    /// linearizability search stays small.
    pub ops_per_tag: usize,
    /// Chunk size the nodes were configured with (multi-chunk layers span
    /// several).
    pub chunk_size_bytes: usize,
}

/// The shared tags: a few active at a time, each retired after a bounded
/// number of operations.
#[derive(Debug)]
pub struct TagPool {
    inner: Mutex<TagPoolInner>,
    cap: usize,
}

#[derive(Debug)]
struct TagPoolInner {
    active: Vec<(String, usize)>,
    all: Vec<String>,
    next: u64,
}

impl TagPool {
    pub fn new(cap: usize) -> TagPool {
        let active: Vec<(String, usize)> = (0..ACTIVE_TAGS).map(|i| (format!("s{i}"), 0)).collect();
        let all = active.iter().map(|(t, _)| t.clone()).collect();
        TagPool {
            inner: Mutex::new(TagPoolInner {
                active,
                all,
                next: u64::try_from(ACTIVE_TAGS).unwrap_or(3),
            }),
            cap,
        }
    }

    /// A tag for one more operation.
    pub fn pick(&self, rng: &mut Rng) -> String {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let i = rng.index(g.active.len());
        g.active[i].1 += 1;
        let tag = g.active[i].0.clone();
        if g.active[i].1 >= self.cap {
            let fresh = format!("s{}", g.next);
            g.next += 1;
            g.all.push(fresh.clone());
            g.active[i] = (fresh, 0);
        }
        tag
    }

    /// Every tag ever handed out.
    pub fn all(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .clone()
    }
}

/// The blobs every shared-tag manifest references, pushed before the run.
#[derive(Debug, Clone)]
pub struct SharedBlobs {
    pub config: (String, usize),
    pub layer: (String, usize),
}

/// Pushes the shared tags' blobs, retrying until `limit`.
pub async fn prepare(cfg: &WorkloadConfig, limit: Duration) -> Result<SharedBlobs, String> {
    let c = crate::netns::client(cfg.request_timeout);
    let config = br#"{"chaos":"shared"}"#.to_vec();
    let layer = data(0xC4A05, 2048);
    let deadline = std::time::Instant::now() + limit;
    for (_, url) in cfg.nodes.iter().cycle() {
        let a = crate::oci::try_push_blob(&c, url, SHARED_REPO, &config).await;
        let b = crate::oci::try_push_blob(&c, url, SHARED_REPO, &layer).await;
        let last = match (a, b) {
            (Ok(cd), Ok(ld)) => {
                return Ok(SharedBlobs {
                    config: (cd, config.len()),
                    layer: (ld, layer.len()),
                })
            }
            (Err(e), _) | (_, Err(e)) => e,
        };
        if std::time::Instant::now() > deadline {
            return Err(format!("shared blobs not pushed within {limit:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("no nodes".into())
}

/// One worker's state.
struct Worker {
    id: u64,
    cfg: WorkloadConfig,
    client: Client,
    rng: Rng,
    history: Shared,
    clock: Clock,
    tags: Arc<TagPool>,
    shared: SharedBlobs,
    n: u64,
}

/// Runs worker `id` until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub async fn run_worker(
    id: u64,
    cfg: WorkloadConfig,
    rng: Rng,
    history: Shared,
    clock: Clock,
    tags: Arc<TagPool>,
    shared: SharedBlobs,
    stop: Arc<AtomicBool>,
) {
    let client = crate::netns::client(cfg.request_timeout);
    let mut w = Worker {
        id,
        cfg,
        client,
        rng,
        history,
        clock,
        tags,
        shared,
        n: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        w.n += 1;
        let roll = w.rng.below(100);
        let ok = match roll {
            0..=49 => w.push_image().await,
            50..=69 => w.write_tag().await,
            70..=86 => w.read_tag().await,
            87..=97 => w.pull().await,
            _ => w.delete().await,
        };
        if !ok {
            // A failing node: do not spin on it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Worker {
    /// Two workers per node keep to it (their home), so a hung node holds
    /// up only its own and the survivors' availability stays measurable;
    /// the others roam, picking a random node per operation (and soon
    /// waiting on a hung node, as a naive client would).
    fn roaming(&self) -> bool {
        let homed = 2 * u64::try_from(self.cfg.nodes.len()).unwrap_or(1);
        self.id >= homed
    }

    fn node(&mut self) -> (u64, String) {
        if self.roaming() {
            let i = self.rng.index(self.cfg.nodes.len());
            return self.cfg.nodes[i].clone();
        }
        let n = u64::try_from(self.cfg.nodes.len()).unwrap_or(1);
        let i = usize::try_from(self.id % n).unwrap_or(0);
        self.cfg.nodes[i].clone()
    }

    /// For a roaming worker, a random node other than `not` (a read of
    /// one's writes across nodes); a homed worker stays home.
    fn other_node(&mut self, not: u64) -> (u64, String) {
        if !self.roaming() {
            return self.node();
        }
        let others: Vec<(u64, String)> = self
            .cfg
            .nodes
            .iter()
            .filter(|(id, _)| *id != not)
            .cloned()
            .collect();
        if others.is_empty() {
            return self.node();
        }
        others[self.rng.index(others.len())].clone()
    }

    fn record(
        &self,
        kind: ReqKind,
        node: u64,
        start_us: u64,
        status: Option<StatusCode>,
        ok: bool,
    ) {
        self.history.lock().requests.push(Request {
            kind,
            node,
            start_us,
            end_us: self.clock.now_us(),
            ok,
            status: status.map(|s| s.as_u16()),
        });
    }

    /// Keeps the body of a 503 (the node names why), for the report.
    async fn note_unavailable(&self, r: reqwest::Result<reqwest::Response>, node: u64) {
        let Ok(resp) = r else { return };
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            return;
        }
        let at = self.clock.now_us();
        let body = resp.text().await.unwrap_or_default();
        let mut h = self.history.lock();
        if h.unavailable.len() < 2000 {
            h.unavailable
                .push((at, node, body.chars().take(300).collect()));
        }
    }

    /// POST ?digest= one blob; its index in `History::blobs` once acked.
    async fn push_blob(
        &mut self,
        node: u64,
        url: &str,
        repo: &str,
        bytes: BlobBytes,
    ) -> Option<usize> {
        let body = bytes.bytes();
        let digest = sha256(&body);
        let start = self.clock.now_us();
        let r = self
            .client
            .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await;
        let status = r.as_ref().ok().map(reqwest::Response::status);
        self.note_unavailable(r, node).await;
        let ok = status == Some(StatusCode::CREATED);
        self.record(ReqKind::BlobPush, node, start, status, ok);
        if !ok {
            return None;
        }
        let mut h = self.history.lock();
        h.blobs.push(AckedBlob {
            repo: repo.to_string(),
            digest,
            bytes,
            acked_us: self.clock.now_us(),
        });
        Some(h.blobs.len() - 1)
    }

    async fn push_image(&mut self) -> bool {
        let push_start = self.clock.now_us();
        let repo = format!("chaos/w{}", self.id);
        let tag = format!("i{}", self.n);
        let seed = (self.id << 40) | self.n;
        let (node, url) = self.node();
        let config = BlobBytes::Literal(format!("{{\"chaos\":{seed}}}").into_bytes());
        let mut layers = vec![BlobBytes::Seeded {
            seed: seed * 4,
            len: usize::try_from(self.rng.range(512, 4096)).unwrap_or(1024),
        }];
        if self.rng.chance(35) {
            // Three to five chunks.
            let chunk = u64::try_from(self.cfg.chunk_size_bytes).unwrap_or(65_536);
            let len = self.rng.range(2 * chunk + 1, 5 * chunk);
            layers.push(BlobBytes::Seeded {
                seed: seed * 4 + 1,
                len: usize::try_from(len).unwrap_or(200_000),
            });
        }
        let mut blob_ids = Vec::new();
        let mut descs = Vec::new();
        for (i, b) in std::iter::once(config).chain(layers).enumerate() {
            let len = b.bytes().len();
            let Some(idx) = self.push_blob(node, &url, &repo, b).await else {
                return false;
            };
            let digest = self.history.lock().blobs[idx].digest.clone();
            descs.push((digest, len, i == 0));
            blob_ids.push(idx);
        }
        let layers_json: Vec<_> = descs
            .iter()
            .filter(|d| !d.2)
            .map(|(d, s, _)| json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": descs[0].0, "size": descs[0].1},
            "layers": layers_json,
        }))
        .unwrap_or_default();
        // Half the manifests of roaming workers go to another node than their blobs: the blob
        // records must be visible there (read-your-writes across nodes).
        let (mnode, murl) = if self.rng.chance(50) {
            self.other_node(node)
        } else {
            (node, url)
        };
        let start = self.clock.now_us();
        let r = self
            .client
            .put(format!("{murl}/v2/{repo}/manifests/{tag}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await;
        let status = r.as_ref().ok().map(reqwest::Response::status);
        self.note_unavailable(r, mnode).await;
        let ok = status == Some(StatusCode::CREATED);
        self.record(ReqKind::ManifestPush, mnode, start, status, ok);
        if ok {
            let acked_us = self.clock.now_us();
            let mut nodes = vec![node];
            if mnode != node {
                nodes.push(mnode);
            }
            self.history.lock().image_pushes.push(ImagePush {
                start_us: push_start,
                end_us: acked_us,
                nodes,
            });
            self.history.lock().images.push(AckedImage {
                repo,
                tag,
                digest: sha256(&manifest),
                manifest,
                blobs: blob_ids,
                acked_us,
                delete_started: false,
                deleted: false,
            });
        }
        ok
    }

    async fn write_tag(&mut self) -> bool {
        let tag = self.tags.pick(&mut self.rng);
        let (node, url) = self.node();
        let s = &self.shared;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": s.config.0, "size": s.config.1},
            "layers": [{"mediaType": OCI_LAYER, "digest": s.layer.0, "size": s.layer.1}],
            "annotations": {"chaos.write": format!("w{}-{}", self.id, self.n)},
        }))
        .unwrap_or_default();
        let digest = sha256(&manifest);
        let start = self.clock.now_us();
        let r = self
            .client
            .put(format!("{url}/v2/{SHARED_REPO}/manifests/{tag}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await;
        let status = r.as_ref().ok().map(reqwest::Response::status);
        self.note_unavailable(r, node).await;
        let ok = status == Some(StatusCode::CREATED);
        self.record(ReqKind::TagWrite, node, start, status, ok);
        let end = ok.then(|| self.clock.now_us());
        // Only a 4xx other than a timeout-like answer proves the write was
        // refused; everything else may have been applied.
        let refused =
            status.is_some_and(|s| s.is_client_error() && s != StatusCode::REQUEST_TIMEOUT);
        if !refused {
            self.history.lock().tag_ops.push(TagOp {
                tag,
                start_us: start,
                end_us: end,
                kind: Kind::Write(Some(digest)),
                node,
            });
        }
        ok
    }

    async fn read_tag(&mut self) -> bool {
        let tag = self.tags.pick(&mut self.rng);
        let (node, url) = self.node();
        let start = self.clock.now_us();
        let value = read_manifest(&self.client, &url, SHARED_REPO, &tag).await;
        let end = self.clock.now_us();
        let ok = value.is_ok();
        self.record(ReqKind::TagRead, node, start, None, ok);
        if let Ok(v) = value {
            self.history.lock().tag_ops.push(TagOp {
                tag,
                start_us: start,
                end_us: Some(end),
                kind: Kind::Read(v.map(|b| sha256(&b))),
                node,
            });
        }
        ok
    }

    /// Pulls an image acknowledged before this read started and checks
    /// its manifest and one blob.
    async fn pull(&mut self) -> bool {
        let start = self.clock.now_us();
        let pick = {
            let h = self.history.lock();
            if h.images.is_empty() {
                None
            } else {
                let i = self.rng.index(h.images.len());
                let img = &h.images[i];
                let b = img.blobs[self.rng.index(img.blobs.len())];
                // Only a write acknowledged before this read began must be
                // visible to it.
                (!img.delete_started && img.acked_us < start)
                    .then(|| (i, img.clone(), h.blobs[b].clone()))
            }
        };
        let Some((i, img, blob)) = pick else {
            return true;
        };
        let (node, url) = self.node();
        let m = read_manifest(&self.client, &url, &img.repo, &img.digest).await;
        let b = match &m {
            Ok(Some(_)) => Some(read_blob(&self.client, &url, &img.repo, &blob.digest).await),
            _ => None,
        };
        let ok = matches!(m, Ok(Some(_))) && matches!(b, Some(Ok(Some(_))));
        self.record(ReqKind::Pull, node, start, None, ok);
        let mut h = self.history.lock();
        if h.images[i].delete_started {
            // Deleted under the read: nothing to conclude.
            return true;
        }
        let what = format!(
            "{}@{} (blob {}) on node {node}",
            img.repo, img.digest, blob.digest
        );
        match (m, b) {
            (Ok(None), _) | (_, Some(Ok(None))) => h.stale_reads.push(format!("not found: {what}")),
            (Ok(Some(body)), _) if sha256(&body) != img.digest => h
                .corrupt_reads
                .push(format!("manifest bytes differ: {what}")),
            (_, Some(Ok(Some(bytes)))) if bytes != blob.bytes.bytes() => {
                h.corrupt_reads.push(format!("blob bytes differ: {what}"))
            }
            _ => {}
        }
        ok
    }

    /// Deletes one of this worker's own images by digest.
    async fn delete(&mut self) -> bool {
        let repo = format!("chaos/w{}", self.id);
        let pick = {
            let mut h = self.history.lock();
            let own: Vec<usize> = (0..h.images.len())
                .filter(|&i| h.images[i].repo == repo && !h.images[i].delete_started)
                .collect();
            if own.is_empty() {
                None
            } else {
                let i = own[self.rng.index(own.len())];
                h.images[i].delete_started = true;
                Some((i, h.images[i].digest.clone()))
            }
        };
        let Some((i, digest)) = pick else {
            return true;
        };
        let (node, url) = self.node();
        let start = self.clock.now_us();
        let r = self
            .client
            .delete(format!("{url}/v2/{repo}/manifests/{digest}"))
            .send()
            .await;
        let status = r.as_ref().ok().map(reqwest::Response::status);
        self.note_unavailable(r, node).await;
        let ok = status.is_some_and(|s| s.is_success());
        self.record(ReqKind::Delete, node, start, status, ok);
        let mut h = self.history.lock();
        if ok {
            h.images[i].deleted = true;
        } else if status.is_some_and(|s| {
            s == StatusCode::METHOD_NOT_ALLOWED
                || s == StatusCode::BAD_REQUEST
                || s == StatusCode::UNSUPPORTED_MEDIA_TYPE
        }) {
            // Refused outright: the image stays and is still expected.
            h.images[i].delete_started = false;
        }
        ok
    }
}

/// GET a manifest: `Ok(Some(bytes))` on 200, `Ok(None)` on 404, `Err` on
/// anything else (no answer, 5xx).
pub async fn read_manifest(
    c: &Client,
    url: &str,
    repo: &str,
    reference: &str,
) -> Result<Option<Vec<u8>>, String> {
    let r = c
        .get(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    body_or_absent(r).await
}

/// GET a blob, like `read_manifest`.
pub async fn read_blob(
    c: &Client,
    url: &str,
    repo: &str,
    digest: &str,
) -> Result<Option<Vec<u8>>, String> {
    let r = c
        .get(format!("{url}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    body_or_absent(r).await
}

async fn body_or_absent(r: reqwest::Response) -> Result<Option<Vec<u8>>, String> {
    match r.status() {
        StatusCode::OK => r
            .bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| e.to_string()),
        StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!("status {s}")),
    }
}
