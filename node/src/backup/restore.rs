//! Restore, from the repository alone: the state a snapshot (rolled
//! forward by the archive for `--at`) describes is rebuilt with the same
//! `apply` the cluster uses, then either becomes the data directory of the
//! first node of a new cluster, or one repository of it is pushed back into
//! a running cluster over the OCI API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::{NodeId, RepoName};
use stowage_storage::{Store, StoreConfig};

use super::archive;
use super::repo::Repo;
use super::{mark_position, read_state, snapshots, SnapshotInfo};
use crate::error::{Error, Result};
use crate::raft::codec::encode;
use crate::raft::{LogId, NodeInfo, StoredMembership};
use crate::replication::client::{BlobSource, Pushed, Remote};

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
        Target::Snapshot(id) => {
            let found: Vec<&SnapshotInfo> = all
                .iter()
                .filter(|s| !id.is_empty() && s.id.starts_with(id.as_str()))
                .collect();
            if found.len() > 1 {
                return Err(bad(
                    repo,
                    format!(
                        "{id:?} names {} snapshots; give more of the id",
                        found.len()
                    ),
                ));
            }
            found.first().map(|s| (*s).clone())
        }
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
        Target::At(t) => match &snap.cluster_id {
            Some(c) => archive::entries_after(repo, c, snap.log_index, *t).await?,
            None => (Vec::new(), None),
        },
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
    /// The old cluster's replication rules, left out of the new one.
    pub replication_rules_removed: Vec<String>,
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

    // The restored cluster must not push the past over the live targets
    // of the old one: its replication rules go (listed in the report, to
    // be added again on purpose).
    let mut removed = Vec::new();
    for (rule, _) in store.meta.replication_rules()? {
        let mark = store.meta.applied_mark()?.unwrap_or_default();
        let cmd = stowage_storage::meta::Command::RemoveReplication {
            name: rule.name.clone(),
        };
        store.meta.apply(&cmd, &mark)?;
        removed.push(format!("{} -> {}", rule.name, rule.target));
    }
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
    // The store's files are closed once the last handle is gone; the temp
    // directory is removed on any failure until the rename succeeds.
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .map_err(|e| bad(repo, format!("cannot replace {}: {e}", data_dir.display())))?;
    }
    std::fs::rename(tmp.path(), data_dir).map_err(|e| {
        bad(
            repo,
            format!("cannot move the restored directory into place: {e}"),
        )
    })?;
    let _moved = tmp.keep();
    stowage_storage::durable::sync_dir(&parent)?;
    bar.finish_and_clear();
    Ok(Restored {
        data_dir: data_dir.to_owned(),
        point,
        chunks: refs.len() as u64,
        bytes: total,
        replication_rules_removed: removed,
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

/// A blob's bytes from the repository's chunks, by range.
struct RepoBlob<'a> {
    repo: &'a Repo,
    chunks: &'a [ChunkRef],
}

impl BlobSource for RepoBlob<'_> {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        crate::replication::client::read_chunks(self.chunks, offset, len, |id| async move {
            self.repo.get_chunk(&id).await
        })
        .await
    }
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
    into: &Remote,
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
        let source = RepoBlob {
            repo,
            chunks: &rec.chunks,
        };
        let from = (as_name != name).then_some(name.as_str());
        let inc = |n: u64| bar.inc(n);
        match into
            .push_blob(
                as_name.as_str(),
                digest.as_str(),
                rec.size,
                from,
                &source,
                &inc,
            )
            .await?
        {
            Pushed::Uploaded { bytes, .. } => {
                out.blobs_uploaded += 1;
                out.bytes_uploaded += bytes;
            }
            Pushed::Present | Pushed::Mounted => out.blobs_present += 1,
        }
    }
    // Children before the indexes that list them.
    manifests.sort_by_key(|(_, m)| !m.children.is_empty());
    for (digest, m) in &manifests {
        let bytes = Bytes::copy_from_slice(&m.bytes);
        into.put_manifest(as_name.as_str(), digest.as_str(), &m.media_type, bytes)
            .await?;
        out.manifests += 1;
    }
    for tag in tags {
        let Some(d) = store.meta.tag(name, &tag)? else {
            continue;
        };
        let Some((_, m)) = manifests.iter().find(|(md, _)| *md == d) else {
            continue;
        };
        let bytes = Bytes::copy_from_slice(&m.bytes);
        match into
            .put_manifest(as_name.as_str(), tag.as_str(), &m.media_type, bytes)
            .await
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
