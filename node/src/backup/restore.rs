//! Restore, from the repository alone: the state a snapshot (rolled
//! forward by the archive for `--at`) describes is rebuilt with the same
//! `apply` the cluster uses, then either becomes the data directory of the
//! first node of a new cluster, or one repository of it is pushed back into
//! a running cluster over the OCI API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use indicatif::ProgressBar;
use serde::Serialize;
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::{Digest, NodeId, RepoName};
use stowage_storage::{Store, StoreConfig};

use super::archive;
use super::repo::Repo;
use super::{mark_position, read_state, snapshots, SnapshotInfo};
use crate::error::{Error, Result};
use crate::raft::codec::encode;
use crate::raft::{LogId, NodeInfo, StoredMembership};

const CHUNKS_IN_FLIGHT: usize = 4;

/// Which moment to restore.
#[derive(Debug, Clone)]
pub enum Target {
    Latest,
    Snapshot(String),
    /// Unix ms: the newest snapshot at or before it, rolled forward by the
    /// archive to the last entry applied at or before it.
    At(u64),
}

/// The moment a restore rebuilt.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub snapshot: SnapshotInfo,
    /// Archived entries applied on top of the snapshot.
    pub rolled_forward: u64,
    pub log_index: u64,
    /// Where a gap in the archive stopped the roll-forward, if one did.
    pub archive_gap_at: Option<u64>,
}

fn bad(repo: &Repo, reason: String) -> Error {
    Error::BackupRepo {
        repo: repo.location.clone(),
        reason,
    }
}

pub async fn pick(repo: &Repo, target: &Target) -> Result<SnapshotInfo> {
    let all = snapshots(repo).await?;
    let found = match target {
        Target::Latest => all.last().cloned(),
        Target::Snapshot(id) => all.iter().find(|s| s.id.starts_with(id.as_str())).cloned(),
        Target::At(t) => all.iter().rev().find(|s| s.time_ms <= *t).cloned(),
    };
    found.ok_or_else(|| match (target, all.first()) {
        (_, None) => bad(repo, "it holds no snapshot".into()),
        (Target::Snapshot(id), _) => bad(
            repo,
            format!("no snapshot {id}; `stowage backup list` shows them"),
        ),
        (_, Some(first)) => bad(
            repo,
            format!(
                "no snapshot at or before that time; the oldest is from {}",
                rfc3339(first.time_ms)
            ),
        ),
    })
}

/// Rebuilds the state `target` names in a new store at `dir` (no chunks).
pub async fn build_state(repo: &Repo, target: &Target, dir: &Path) -> Result<(Arc<Store>, Point)> {
    let snap = pick(repo, target).await?;
    let state = read_state(repo, &snap).await?;
    let (entries, gap) = match target {
        Target::At(t) => archive::entries_after(repo, snap.log_index, *t).await?,
        _ => (Vec::new(), None),
    };
    let dir = dir.to_owned();
    let rolled = entries.len() as u64;
    let store = tokio::task::spawn_blocking(move || -> Result<Arc<Store>> {
        let store = Arc::new(Store::open(&StoreConfig::new(&dir))?);
        store.meta.import(&mut state.as_slice())?;
        for e in &entries {
            // The membership in these marks is never used: the restored
            // node's own replaces it.
            let mark = encode(&(Some(e.log_id), StoredMembership::default()));
            match &e.command {
                Some(cmd) => {
                    store.meta.apply(cmd, &mark)?;
                }
                None => store.meta.set_mark(&mark)?,
            }
        }
        Ok(store)
    })
    .await??;
    let (applied, _) = mark_position(store.meta.applied_mark()?.as_deref())?;
    let point = Point {
        log_index: applied.map_or(snap.log_index, |l| l.index),
        snapshot: snap,
        rolled_forward: rolled,
        archive_gap_at: gap,
    };
    Ok((store, point))
}

/// The applied log id of a rebuilt state.
fn applied_of(store: &Store) -> Result<Option<LogId>> {
    Ok(mark_position(store.meta.applied_mark()?.as_deref())?.0)
}

/// Who the restored node is in its new cluster.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: NodeId,
    pub zone: stowage_storage::types::Zone,
    /// Its cluster RPC address (empty for a single node).
    pub rpc_addr: String,
}

/// What `restore --data-dir` did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub point: Point,
    pub chunks: u64,
    pub bytes: u64,
}

/// Builds `data_dir` (which must not exist or be empty) from the
/// repository: the state, every chunk it references, and a new cluster of
/// this node alone. Built in a sibling temp directory renamed at the end,
/// so a failed restore leaves no half-built data directory.
pub async fn data_dir(
    repo: &Repo,
    target: &Target,
    data_dir: &Path,
    node: NewNode,
    bar: &ProgressBar,
) -> Result<Restored> {
    let not_empty = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if not_empty {
        return Err(bad(
            repo,
            format!(
                "{} exists and is not empty; restore builds a new data directory",
                data_dir.display()
            ),
        ));
    }
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| bad(repo, format!("cannot create {}: {e}", parent.display())))?;
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stowage-data".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.restoring-"))
        .tempdir_in(&parent)
        .map_err(|e| {
            bad(
                repo,
                format!("cannot make a temp directory in {}: {e}", parent.display()),
            )
        })?;
    let (store, point) = build_state(repo, target, tmp.path()).await?;

    // Every chunk the rebuilt state references, from the repository.
    let s = store.clone();
    let refs = tokio::task::spawn_blocking(move || -> Result<Vec<ChunkRef>> {
        let mut state = Vec::new();
        s.meta.export(&mut state)?;
        Ok(stowage_storage::meta::snapshot_chunks(&state)?)
    })
    .await??;
    let total: u64 = refs.iter().map(|c| u64::from(c.len)).sum();
    bar.set_length(total);
    bar.set_message("chunks");
    stream::iter(refs.iter().map(|c| c.id))
        .map(|id| {
            let store = store.clone();
            async move {
                let data = repo.get_chunk(&id).await?;
                let n = data.len() as u64;
                tokio::task::spawn_blocking(move || store.chunks.put_as(id, &data)).await??;
                bar.inc(n);
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(CHUNKS_IN_FLIGHT)
        .try_collect::<()>()
        .await?;

    let last =
        applied_of(&store)?.ok_or_else(|| bad(repo, "the snapshot has no applied entry".into()))?;
    let info = NodeInfo {
        zone: node.zone,
        rpc_addr: node.rpc_addr,
        incarnation: Some(store.incarnation().to_owned()),
    };
    crate::raft::seed_restored(&store, node.id, info, last)
        .map_err(|e| Error::BackupSource(e.to_string()))?;
    drop(store);
    // The store's files are closed once the last handle is gone.
    let tmp_path = tmp.keep();
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .map_err(|e| bad(repo, format!("cannot replace {}: {e}", data_dir.display())))?;
    }
    std::fs::rename(&tmp_path, data_dir).map_err(|e| {
        bad(
            repo,
            format!("cannot move the restored directory into place: {e}"),
        )
    })?;
    stowage_storage::durable::sync_dir(&parent)?;
    bar.finish_and_clear();
    Ok(Restored {
        data_dir: data_dir.to_owned(),
        point,
        chunks: refs.len() as u64,
        bytes: total,
    })
}

/// What `restore --repository --into` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepositoryRestored {
    pub repository: String,
    pub into: String,
    pub blobs_uploaded: u64,
    pub blobs_present: u64,
    pub bytes_uploaded: u64,
    pub manifests: u64,
    pub tags: Vec<String>,
    /// Tags the target refused (an immutable tag now elsewhere, say).
    pub refused: Vec<String>,
    pub log_index: u64,
}

/// An OCI registry to push to.
pub struct Registry {
    pub base: String,
    pub authorization: Option<String>,
    pub client: crate::cli::HttpClient,
}

impl Registry {
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes)> {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base.trim_end_matches('/'))
        };
        let mut req = http::Request::builder().method(method).uri(&url);
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        if let Some(t) = content_type {
            req = req.header(http::header::CONTENT_TYPE, t);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Error::BackupSource(format!("bad URL {url}: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| Error::BackupSource(format!("cannot reach {url}: {e}")))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::BackupSource(format!("{url}: {e}")))?
            .to_bytes();
        Ok((status, headers, body))
    }

    fn failed(what: &str, status: http::StatusCode, body: &[u8]) -> Error {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
        Error::BackupSource(format!("{what}: {status} {msg}"))
    }

    /// Uploads one blob from the repository's chunks unless the target has it.
    async fn put_blob(
        &self,
        repo: &Repo,
        name: &RepoName,
        digest: &Digest,
        chunks: &[ChunkRef],
    ) -> Result<Option<u64>> {
        let (status, _, _) = self
            .send(
                http::Method::HEAD,
                &format!("/v2/{name}/blobs/{digest}"),
                None,
                Bytes::new(),
            )
            .await?;
        if status.is_success() {
            return Ok(None);
        }
        let (status, headers, body) = self
            .send(
                http::Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                None,
                Bytes::new(),
            )
            .await?;
        if status != http::StatusCode::ACCEPTED {
            return Err(Self::failed(
                &format!("starting the upload of {digest}"),
                status,
                &body,
            ));
        }
        let mut location = location_of(&headers, &self.base)?;
        let mut offset = 0u64;
        for c in chunks {
            let data = repo.get_chunk(&c.id).await?;
            let n = data.len() as u64;
            let (status, headers, body) = self
                .send(
                    http::Method::PATCH,
                    &location,
                    Some("application/octet-stream"),
                    data,
                )
                .await?;
            if status != http::StatusCode::ACCEPTED {
                return Err(Self::failed(
                    &format!("uploading {digest} at byte {offset}"),
                    status,
                    &body,
                ));
            }
            location = location_of(&headers, &self.base)?;
            offset += n;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .send(
                http::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                None,
                Bytes::new(),
            )
            .await?;
        if status != http::StatusCode::CREATED {
            return Err(Self::failed(
                &format!("finishing the upload of {digest}"),
                status,
                &body,
            ));
        }
        Ok(Some(offset))
    }

    async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<std::result::Result<(), Error>> {
        let (status, _, body) = self
            .send(
                http::Method::PUT,
                &format!("/v2/{name}/manifests/{reference}"),
                Some(media_type),
                Bytes::copy_from_slice(bytes),
            )
            .await?;
        if status == http::StatusCode::CREATED {
            Ok(Ok(()))
        } else {
            Ok(Err(Self::failed(
                &format!("{name}:{reference}"),
                status,
                &body,
            )))
        }
    }
}

fn location_of(headers: &http::HeaderMap, base: &str) -> Result<String> {
    let loc = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::BackupSource("the target's upload answer has no Location".into()))?;
    Ok(if loc.starts_with("http") {
        loc.to_owned()
    } else {
        format!("{}{loc}", base.trim_end_matches('/'))
    })
}

/// Puts `name`'s tags and manifests, as they were at `target`, back into a
/// running registry as `as_name`: blobs it lacks are uploaded from the
/// repository, then every manifest by digest (an index after its
/// children), then the tags. Tags and repositories not in that state are
/// left as they are.
pub async fn repository(
    repo: &Repo,
    target: &Target,
    name: &RepoName,
    as_name: &RepoName,
    into: &Registry,
    bar: &ProgressBar,
) -> Result<RepositoryRestored> {
    let tmp =
        tempfile::tempdir().map_err(|e| Error::BackupSource(format!("temp directory: {e}")))?;
    let (store, point) = build_state(repo, target, tmp.path()).await?;
    let digests = store.meta.repo_manifests(name)?;
    if digests.is_empty() {
        return Err(bad(
            repo,
            format!(
                "repository {name} has no manifests at log index {}",
                point.log_index
            ),
        ));
    }
    let mut manifests = Vec::new();
    let mut blobs = std::collections::BTreeMap::new();
    for d in &digests {
        if let Some(m) = store.meta.manifest_in_repo(name, d)? {
            for b in &m.blobs {
                if let Some(rec) = store.meta.blob(b)? {
                    blobs.insert(b.clone(), rec);
                }
            }
            manifests.push((d.clone(), m));
        }
    }
    let (tags, _) = store.meta.tags(name, None, usize::MAX)?;
    let mut out = RepositoryRestored {
        repository: name.to_string(),
        into: format!("{}/{as_name}", into.base.trim_end_matches('/')),
        log_index: point.log_index,
        ..Default::default()
    };
    bar.set_length(blobs.values().map(|b| b.size).sum());
    bar.set_message("blobs");
    for (digest, rec) in &blobs {
        match into.put_blob(repo, as_name, digest, &rec.chunks).await? {
            Some(n) => {
                out.blobs_uploaded += 1;
                out.bytes_uploaded += n;
            }
            None => out.blobs_present += 1,
        }
        bar.inc(rec.size);
    }
    // Children before the indexes that list them.
    manifests.sort_by_key(|(_, m)| !m.children.is_empty());
    for (digest, m) in &manifests {
        into.put_manifest(as_name, digest.as_str(), &m.media_type, &m.bytes)
            .await??;
        out.manifests += 1;
    }
    for tag in tags {
        let Some(d) = store.meta.tag(name, &tag)? else {
            continue;
        };
        let Some((_, m)) = manifests.iter().find(|(md, _)| *md == d) else {
            continue;
        };
        match into
            .put_manifest(as_name, tag.as_str(), &m.media_type, &m.bytes)
            .await?
        {
            Ok(()) => out.tags.push(tag.to_string()),
            Err(e) => out.refused.push(format!("{tag}: {e}")),
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Unix ms as RFC 3339 (UTC).
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

/// RFC 3339 to Unix ms.
pub fn parse_time(text: &str) -> std::result::Result<u64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time (e.g. 2026-12-02T10:00:00Z): {e}")
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| format!("{text:?} is before 1970"))
}
