//! Backups: snapshots of the replicated state with every chunk it needs,
//! taken online on any node into a repository (`repo.rs`), the continuous
//! archive of committed entries (`archive.rs`), and restore (`restore.rs`:
//! a new data directory, or one repository put back into a running
//! cluster).
//!
//! A snapshot is recorded only after every chunk it references is in the
//! repository and durable, so a listed snapshot is always restorable, and
//! each backup writes only the chunks the repository lacks.

pub mod archive;
pub mod cli;
pub mod repo;
pub mod restore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use stowage_storage::meta::ChunkRef;
use stowage_storage::Store;

use self::repo::{Key, Repo};
use crate::chunks::ChunkIo;
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::raft::codec::decode;
use crate::raft::{LogId, StoredMembership};
use crate::registry::now_ms;
use crate::workers::{Step, Worker};

/// Chunks copied into the repository at once.
const COPIES_IN_FLIGHT: usize = 4;
/// A lock older than this is a backup that died; prune ignores it.
pub const LOCK_STALE_MS: u64 = 6 * 3600 * 1000;

/// One snapshot as the repository lists it (`snapshots/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    /// The cluster the state came from (the restored one gets a new name).
    pub cluster_id: Option<String>,
    /// The node that took it.
    pub node: u64,
    /// The last log entry the state includes.
    pub log_index: u64,
    pub term: u64,
    /// When the state was taken (Unix ms, the taking node's clock).
    pub time_ms: u64,
    pub state_bytes: u64,
    /// blake3 of the state object's plaintext.
    pub state_blake3: String,
    /// Chunks the state references, and their bytes.
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// What this backup added to the repository.
    pub new_chunks: u64,
    pub new_bytes: u64,
}

impl SnapshotInfo {
    pub fn path(&self) -> String {
        format!("snapshots/{}", self.id)
    }

    pub fn state_path(&self) -> String {
        format!("states/{}", self.id)
    }
}

/// Every snapshot in the repository, oldest first.
pub async fn snapshots(repo: &Repo) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    for (path, _) in repo.list("snapshots").await? {
        let bytes = repo.need(&path).await?;
        let info: SnapshotInfo = serde_json::from_slice(&bytes).map_err(|e| Error::BackupRepo {
            repo: repo.location.clone(),
            reason: format!("object {path} is not a snapshot header ({e})"),
        })?;
        out.push(info);
    }
    out.sort_by_key(|s| (s.time_ms, s.log_index));
    Ok(out)
}

/// A snapshot's state, checked against its header.
pub async fn read_state(repo: &Repo, snap: &SnapshotInfo) -> Result<Vec<u8>> {
    let path = snap.state_path();
    let state = repo.need(&path).await?;
    if blake3::hash(&state).to_hex().as_str() != snap.state_blake3 {
        return Err(Error::BackupRepo {
            repo: repo.location.clone(),
            reason: format!("object {path} does not match its snapshot's checksum"),
        });
    }
    Ok(state)
}

/// The chunks a state export references.
pub fn state_chunks(repo: &Repo, state: &[u8]) -> Result<Vec<ChunkRef>> {
    stowage_storage::meta::snapshot_chunks(state).map_err(|e| Error::BackupRepo {
        repo: repo.location.clone(),
        reason: format!("a snapshot's state is unreadable: {e}"),
    })
}

/// The log position an applied mark names: (index, term).
pub fn mark_position(mark: Option<&[u8]>) -> Result<(Option<LogId>, StoredMembership)> {
    match mark {
        Some(b) => decode(b).map_err(|e| Error::BackupSource(format!("applied mark: {e}"))),
        None => Ok((None, StoredMembership::default())),
    }
}

/// What a running or finished backup shows (`GET /_stowage/backup`, the
/// CLI's progress bar).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStatus {
    pub repo: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// What it is doing: `state`, `listing`, `copying`, `recording`.
    pub phase: String,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_done: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub snapshot: Option<SnapshotInfo>,
    pub error: Option<String>,
}

/// Counters a backup updates as it goes.
#[derive(Default)]
struct Progress {
    phase: Mutex<String>,
    chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    bytes_done: AtomicU64,
    new_chunks: AtomicU64,
    new_bytes: AtomicU64,
}

impl Progress {
    fn phase(&self, p: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p.to_owned();
    }
}

struct Job {
    repo: String,
    started_ms: u64,
    progress: Arc<Progress>,
    outcome: Mutex<Option<(u64, std::result::Result<SnapshotInfo, String>)>>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let p = &self.progress;
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (state, finished_ms, snapshot, error) = match outcome {
            None => ("running", None, None, None),
            Some((t, Ok(s))) => ("done", Some(t), Some(s), None),
            Some((t, Err(e))) => ("failed", Some(t), None, Some(e)),
        };
        JobStatus {
            repo: self.repo.clone(),
            state: state.into(),
            phase: p.phase.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            chunks_total: p.chunks_total.load(Ordering::Relaxed),
            chunks_done: p.chunks_done.load(Ordering::Relaxed),
            bytes_done: p.bytes_done.load(Ordering::Relaxed),
            new_chunks: p.new_chunks.load(Ordering::Relaxed),
            new_bytes: p.new_bytes.load(Ordering::Relaxed),
            started_ms: self.started_ms,
            finished_ms,
            snapshot,
            error,
        }
    }
}

/// The backup settings of a node (`backup_*` in the config).
#[derive(Debug, Clone, Default)]
pub struct BackupConfig {
    /// Where scheduled backups and the archive go.
    pub repo: Option<String>,
    pub key: Option<Key>,
    /// Time between scheduled snapshots (zero: none).
    pub interval: Duration,
    /// Whether the leader archives every committed entry.
    pub archive: bool,
    /// How often the archive is written.
    pub archive_interval: Duration,
}

/// This node's backups: the one running now (or the last), and the
/// scheduled and archiving jobs.
pub struct Backups {
    store: Arc<Store>,
    chunks: Arc<ChunkIo>,
    consensus: Arc<Consensus>,
    pub config: BackupConfig,
    job: Mutex<Option<Arc<Job>>>,
}

impl Backups {
    pub fn new(
        store: Arc<Store>,
        chunks: Arc<ChunkIo>,
        consensus: Arc<Consensus>,
        config: BackupConfig,
    ) -> Arc<Backups> {
        Arc::new(Backups {
            store,
            chunks,
            consensus,
            config,
            job: Mutex::new(None),
        })
    }

    /// The running or last backup of this node.
    pub fn status(&self) -> Option<JobStatus> {
        self.job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|j| j.status())
    }

    /// Starts a backup into `location` in the background; one at a time.
    pub fn start(self: &Arc<Self>, location: String, key: Option<Key>) -> Result<JobStatus> {
        let job = {
            let mut slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(j) = slot.as_ref() {
                if j.outcome
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                {
                    return Err(Error::BackupBusy(j.repo.clone()));
                }
            }
            let job = Arc::new(Job {
                repo: location.clone(),
                started_ms: now_ms(),
                progress: Arc::default(),
                outcome: Mutex::new(None),
            });
            *slot = Some(job.clone());
            job
        };
        let this = self.clone();
        let j = job.clone();
        tokio::spawn(async move {
            // In a task of its own, so that a panic still ends the job (as
            // failed) instead of leaving it running forever.
            let run = {
                let this = this.clone();
                let j = j.clone();
                let location = location.clone();
                tokio::spawn(async move {
                    let repo = Repo::open_or_init(&location, key.as_ref()).await?;
                    this.create(&repo, &j.progress).await
                })
            };
            let result = match run.await {
                Ok(r) => r,
                Err(e) => Err(Error::Task(e)),
            };
            match &result {
                Ok(s) => tracing::info!(
                    repo = %location, snapshot = %s.id, log_index = s.log_index,
                    new_bytes = s.new_bytes, "backup done"
                ),
                Err(e) => tracing::error!(repo = %location, error = %e, "backup failed"),
            }
            *j.outcome.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((now_ms(), result.map_err(|e| e.to_string())));
        });
        Ok(job.status())
    }

    /// Runs a backup to completion (the scheduled job's path).
    async fn run_now(self: &Arc<Self>, location: &str, key: Option<&Key>) -> Result<SnapshotInfo> {
        let job = self.start(location.to_owned(), key.cloned())?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match self.status() {
                Some(s) if s.started_ms == job.started_ms && s.state != "running" => {
                    return match (s.snapshot, s.error) {
                        (Some(snap), _) => Ok(snap),
                        (None, e) => Err(Error::BackupSource(e.unwrap_or_default())),
                    };
                }
                _ => {}
            }
        }
    }

    /// Takes one snapshot into `repo`: the state at one applied index,
    /// then every chunk the repository lacks, then (durably) the state and
    /// last its header.
    async fn create(&self, repo: &Repo, progress: &Arc<Progress>) -> Result<SnapshotInfo> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::BackupSource(format!("no randomness: {e}")))?;
        let id = hex::encode(id);
        let who = format!("backup {id} on node {}", self.consensus.id());
        // While it is held, no prune removes a chunk this backup found present.
        let lock = repo.lock(false, &who).await?;
        let result = self.create_locked(repo, progress, id).await;
        repo.unlock(&lock).await;
        result
    }

    async fn create_locked(
        &self,
        repo: &Repo,
        progress: &Arc<Progress>,
        id: String,
    ) -> Result<SnapshotInfo> {
        progress.phase("state");
        // A follower first catches up with what the leader had committed
        // when the backup began: a snapshot never misses an acknowledged
        // write, wherever it is taken.
        self.consensus.read_barrier().await?;
        // The first leader names the cluster right after it is elected;
        // a snapshot names its cluster, which is how the archive it rolls
        // forward with is found.
        let named_by = std::time::Instant::now() + Duration::from_secs(10);
        while self.store.meta.cluster_id()?.is_none() {
            if std::time::Instant::now() > named_by {
                return Err(Error::BackupSource(
                    "the cluster has no name yet (no leader has named it); try again".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.consensus.read_barrier().await?;
        }
        let time_ms = now_ms();
        let store = self.store.clone();
        // Metadata only: applies wait for the length of one export.
        let (state, mark, cluster_id) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut state = Vec::new();
            let mark = store.meta.export(&mut state)?;
            Ok((state, mark, store.meta.cluster_id()?))
        })
        .await??;
        let (applied, _) = mark_position(mark.as_deref())?;
        let (log_index, term) = applied.map_or((0, 0), |l| (l.index, l.leader_id.term));
        let chunks = state_chunks(repo, &state)?;
        progress
            .chunks_total
            .store(chunks.len() as u64, Ordering::Relaxed);

        progress.phase("listing");
        let present = Arc::new(repo.chunk_paths().await?);
        progress.phase("copying");
        let (io, r, p) = (self.chunks.clone(), repo.clone(), progress.clone());
        let ids: Vec<_> = chunks.iter().map(|c| c.id).collect();
        stream::iter(ids)
            .map(move |cid| {
                copy_chunk(
                    io.clone(),
                    r.clone(),
                    present.clone(),
                    p.clone(),
                    cid,
                    log_index,
                )
            })
            .buffer_unordered(COPIES_IN_FLIGHT)
            .try_collect::<()>()
            .await?;

        progress.phase("recording");
        repo.sync().await?;
        let info = SnapshotInfo {
            id,
            cluster_id,
            node: self.consensus.id().0,
            log_index,
            term,
            time_ms,
            state_bytes: state.len() as u64,
            state_blake3: blake3::hash(&state).to_hex().to_string(),
            chunks: chunks.len() as u64,
            chunk_bytes: chunks.iter().map(|c| u64::from(c.len)).sum(),
            new_chunks: progress.new_chunks.load(Ordering::Relaxed),
            new_bytes: progress.new_bytes.load(Ordering::Relaxed),
        };
        let state_written = repo.put(&info.state_path(), &state).await?;
        progress
            .new_bytes
            .fetch_add(state_written, Ordering::Relaxed);
        repo.sync().await?;
        let mut info = info;
        info.new_bytes = progress.new_bytes.load(Ordering::Relaxed);
        // The header last: its presence is what makes the snapshot exist.
        repo.put(
            &info.path(),
            &serde_json::to_vec_pretty(&info).unwrap_or_default(),
        )
        .await?;
        repo.sync().await?;
        progress.phase("done");
        Ok(info)
    }
}

/// Copies one chunk the state needs into the repository unless it is there.
async fn copy_chunk(
    io: Arc<ChunkIo>,
    repo: Repo,
    present: Arc<std::collections::HashSet<String>>,
    progress: Arc<Progress>,
    cid: stowage_storage::types::ChunkId,
    log_index: u64,
) -> Result<()> {
    if !present.contains(&repo.chunk_path(&cid)) {
        let data = io.get(cid, &[]).await.map_err(|e| {
            Error::BackupSource(format!(
                "chunk {cid} of the state at log index {log_index} is on no reachable node ({e}); \
                 if GC removed it meanwhile, gc_grace_secs is shorter than this backup took"
            ))
        })?;
        let n = repo.put_chunk(&cid, &data).await?;
        progress.new_chunks.fetch_add(1, Ordering::Relaxed);
        progress.new_bytes.fetch_add(n, Ordering::Relaxed);
        progress
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    progress.chunks_done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The scheduled snapshot (`backup_interval_secs`), taken by the leader so
/// that a cluster takes one per interval, not one per node.
pub struct ScheduledBackup {
    pub backups: Arc<Backups>,
    pub location: String,
}

impl Worker for ScheduledBackup {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn interval(&self) -> Duration {
        self.backups.config.interval
    }

    async fn step(&self) -> Result<Step> {
        if !self.backups.consensus.raft().is_leader() {
            return Ok(Step::Idle(
                "not the leader; the leader takes the backups".into(),
            ));
        }
        let key = self.backups.config.key.clone();
        let s = self.backups.run_now(&self.location, key.as_ref()).await?;
        Ok(Step::Idle(format!(
            "snapshot {} at log index {} ({} new bytes)",
            s.id, s.log_index, s.new_bytes
        )))
    }
}
