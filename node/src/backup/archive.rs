//! The continuous archive: the leader copies every committed log entry into
//! the repository (`archive/<first>-<last>`, metadata only), after the
//! chunks of every blob an entry records, so `restore --at TIME` can roll a
//! snapshot forward to any moment the archive covers.
//!
//! The cursor is the repository itself (the last archived index), so a new
//! leader resumes where the old one stopped; an entry archived twice by two
//! leaders for a moment is the same committed entry, and readers keep one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use stowage_storage::meta::Command;

use super::repo::Repo;
use super::Backups;
use crate::error::{Error, Result};
use crate::raft::codec::decode;
use crate::raft::{Entry, LogId};
use crate::registry::now_ms;
use crate::workers::{Step, Worker};

/// Entries written per archive object at most.
const SEGMENT_ENTRIES: u64 = 2_000;

/// One committed entry as the archive keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedEntry {
    pub log_id: LogId,
    /// When this node saw the entry applied (Unix ms): what `--at` compares.
    pub time_ms: u64,
    /// `None` for entries that change no data (blank, membership).
    pub command: Option<Command>,
}

/// Each cluster archives under its own name, so a cluster restored from
/// a repository (a new name) never continues, or is rolled forward by,
/// the old cluster's entries.
pub fn segment_path(cluster: &str, first: u64, last: u64) -> String {
    format!("archive/{cluster}/{first:020}-{last:020}")
}

/// `(first, last)` of an archive object's name.
pub fn segment_range(path: &str) -> Option<(u64, u64)> {
    let name = path.strip_prefix("archive/")?.rsplit('/').next()?;
    let (a, b) = name.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Every archive object's range (of one cluster, or of all), in order of
/// first index.
pub async fn segments(repo: &Repo, cluster: Option<&str>) -> Result<Vec<(u64, u64, String)>> {
    let prefix = match cluster {
        Some(c) => format!("archive/{c}"),
        None => "archive".to_owned(),
    };
    let mut out: Vec<_> = repo
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|(p, _)| segment_range(&p).map(|(a, b)| (a, b, p)))
        .collect();
    out.sort();
    Ok(out)
}

pub async fn read_segment(repo: &Repo, path: &str) -> Result<Vec<ArchivedEntry>> {
    let bytes = repo.need(path).await?;
    postcard::from_bytes(&bytes).map_err(|e| Error::BackupRepo {
        repo: repo.location.clone(),
        reason: format!("object {path} is not an archive segment ({e})"),
    })
}

/// The archived entries after `after`, in order and without gaps, up to
/// the last one applied at or before `until_ms`. The second value is the
/// index where a gap in the archive stopped the walk, if one did.
pub async fn entries_after(
    repo: &Repo,
    cluster: &str,
    after: u64,
    until_ms: u64,
) -> Result<(Vec<ArchivedEntry>, Option<u64>)> {
    let mut out = Vec::new();
    let mut next = after + 1;
    for (first, last, path) in segments(repo, Some(cluster)).await? {
        if last < next {
            continue;
        }
        if first > next {
            return Ok((out, Some(next)));
        }
        for e in read_segment(repo, &path).await? {
            if e.log_id.index != next {
                continue;
            }
            if e.time_ms > until_ms {
                return Ok((out, None));
            }
            next += 1;
            out.push(e);
        }
    }
    Ok((out, None))
}

/// The chunk ids an archived command needs in the repository.
pub fn command_chunks(cmd: &Command) -> Vec<stowage_storage::types::ChunkId> {
    match cmd {
        Command::PutBlob { chunks, .. } => chunks.iter().map(|c| c.id).collect(),
        _ => Vec::new(),
    }
}

/// When this node saw each log index applied, from Raft's metrics as they
/// change: the archive's clock.
#[derive(Default)]
struct AppliedTimes(Mutex<BTreeMap<u64, u64>>);

impl AppliedTimes {
    fn record(&self, index: u64, at: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(index).or_insert(at);
    }

    /// The time of the first record at or after `index`: an entry was
    /// applied no later than the next mark that covers it.
    fn of(&self, index: u64) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.range(index..).next().map_or_else(now_ms, |(_, t)| *t)
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn forget_through(&self, index: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m = m.split_off(&(index + 1));
    }
}

struct Cursor {
    repo: Repo,
    cluster: String,
    /// The last index in the archive.
    last: u64,
}

pub struct Archiver {
    backups: Arc<Backups>,
    location: String,
    times: Arc<AppliedTimes>,
    cursor: tokio::sync::Mutex<Option<Cursor>>,
}

impl Archiver {
    pub fn new(backups: Arc<Backups>, location: String) -> Archiver {
        let times = Arc::new(AppliedTimes::default());
        let mut metrics = backups.consensus.raft().metrics();
        let t = times.clone();
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let applied = metrics.borrow_watched().last_applied.map(|l| l.index);
                if let Some(i) = applied {
                    t.record(i, now_ms());
                }
            }
        });
        Archiver {
            backups,
            location,
            times,
            cursor: tokio::sync::Mutex::new(None),
        }
    }

    async fn open(&self, cluster: String) -> Result<Cursor> {
        let repo = Repo::open_or_init(&self.location, self.backups.config.key.as_ref()).await?;
        let last = segments(&repo, Some(&cluster))
            .await?
            .last()
            .map_or(0, |s| s.1);
        Ok(Cursor {
            repo,
            cluster,
            last,
        })
    }
}

impl Worker for Archiver {
    fn name(&self) -> &'static str {
        "archive"
    }

    fn interval(&self) -> Duration {
        self.backups.config.archive_interval
    }

    async fn step(&self) -> Result<Step> {
        let consensus = &self.backups.consensus;
        let mut slot = self.cursor.lock().await;
        if !consensus.raft().is_leader() {
            // Another node archives; read the cursor again if this one
            // becomes the leader.
            *slot = None;
            self.times.clear();
            return Ok(Step::Idle("not the leader; the leader archives".into()));
        }
        if slot.is_none() {
            let Some(cluster) = self.backups.store.meta.cluster_id()? else {
                return Ok(Step::Idle("the cluster has no name yet".into()));
            };
            *slot = Some(self.open(cluster).await?);
        }
        let Some(cur) = slot.as_mut() else {
            return Ok(Step::Idle(String::new()));
        };
        let applied = consensus.metrics().last_applied.map_or(0, |l| l.index);
        if applied <= cur.last {
            return Ok(Step::Idle(format!(
                "archived through log index {}",
                cur.last
            )));
        }
        // A prune and an archive step exclude each other (see `Repo::lock`).
        let lock = match cur.repo.lock(false, "archive").await {
            Ok(l) => l,
            Err(Error::BackupRepo { reason, .. }) => return Ok(Step::Idle(reason)),
            Err(e) => return Err(e),
        };
        let repo = cur.repo.clone();
        let result = self.step_locked(cur, applied).await;
        repo.unlock(&lock).await;
        result
    }
}

impl Archiver {
    async fn step_locked(&self, cur: &mut Cursor, applied: u64) -> Result<Step> {
        let store = self.backups.store.clone();
        let Some((first_kept, _)) = store.log.bounds() else {
            return Ok(Step::Idle("the log is empty".into()));
        };
        let mut start = cur.last + 1;
        if start < first_kept {
            tracing::warn!(
                archived = cur.last,
                log_starts = first_kept,
                "the archive has a gap: entries up to {} were compacted before they were \
                 archived; `restore --at` a time inside it uses the snapshot before it",
                first_kept - 1
            );
            start = first_kept;
        }
        let end = applied.min(start + SEGMENT_ENTRIES - 1);
        let raw =
            tokio::task::spawn_blocking(move || store.log.read_range(start, end + 1)).await??;
        // Compacted since the bounds were read: the segment names what it
        // holds, and a reader sees the gap.
        let start = raw.first().map_or(start, |(i, _)| *i);
        let mut entries = Vec::with_capacity(raw.len());
        for (index, bytes) in raw {
            let entry: Entry = decode(&bytes)
                .map_err(|e| Error::BackupSource(format!("log entry {index}: {e}")))?;
            let command = match entry.payload {
                EntryPayload::Normal(cmd) => Some(cmd),
                _ => None,
            };
            entries.push(ArchivedEntry {
                log_id: entry.log_id,
                time_ms: self.times.of(index),
                command,
            });
        }
        let Some(last) = entries.last().map(|e| e.log_id.index) else {
            return Ok(Step::Idle(String::new()));
        };
        // The chunks first, so an archived blob is always restorable.
        let mut copied = 0u64;
        for e in &entries {
            let Some(cmd) = &e.command else { continue };
            for id in command_chunks(cmd) {
                // Asked each time rather than remembered: a prune may have
                // removed what an earlier step saw.
                if cur.repo.has(&cur.repo.chunk_path(&id)).await? {
                    continue;
                }
                let data = match self.backups.chunks.get(id, &[]).await {
                    Ok(d) => d,
                    // A blob apply refused (a quota), or one deleted and
                    // collected before it was archived: no state needs it.
                    Err(_) if !self.backups.store.meta.chunk_referenced(&id)? => {
                        tracing::warn!(chunk = %id, entry = e.log_id.index, "an archived entry's chunk is gone and nothing references it; archived without it");
                        continue;
                    }
                    Err(err) => {
                        return Err(Error::BackupSource(format!(
                            "chunk {id} of log entry {}: {err}",
                            e.log_id.index
                        )))
                    }
                };
                copied += cur.repo.put_chunk(&id, &data).await?;
            }
        }
        cur.repo.sync().await?;
        let body = postcard::to_stdvec(&entries)
            .map_err(|e| Error::BackupSource(format!("encoding the archive: {e}")))?;
        cur.repo
            .put(&segment_path(&cur.cluster, start, last), &body)
            .await?;
        cur.repo.sync().await?;
        cur.last = last;
        self.times.forget_through(last);
        let what = format!("archived log entries {start}..={last} ({copied} bytes of new chunks)");
        if last < applied {
            Ok(Step::More(what))
        } else {
            Ok(Step::Idle(what))
        }
    }
}
