//! Scrub: re-reads and re-hashes every local chunk at a capped rate, so bit
//! rot is found before a client asks for the chunk. A copy that no longer
//! matches its name is moved to quarantine (never served, never deleted
//! silently) and rewritten from a good replica; a chunk with no good copy
//! anywhere is reported as lost, with everything that depends on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stowage_storage::chunks::Check;
use stowage_storage::types::ChunkId;

use super::repair::HealthBoard;
use super::ChunkIo;
use crate::error::Result;
use crate::registry::now_ms;
use crate::workers::{Step, Worker};

/// Chunks checked per step, so status shows progress and a pass yields.
const CHUNKS_PER_STEP: usize = 64;

/// A chunk with no good copy on any node, and what needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostChunk {
    pub chunk: String,
    pub found_unix_ms: u64,
    pub blobs: Vec<String>,
    pub manifests: Vec<String>,
    pub tags: Vec<String>,
    pub repositories: Vec<String>,
}

/// What `stowage scrub status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubStatus {
    pub running: bool,
    pub checked: u64,
    pub total: u64,
    pub bytes_checked: u64,
    pub passes: u64,
    pub last_pass_unix_ms: Option<u64>,
    pub corrupt_found: u64,
    pub repaired: u64,
    pub lost: Vec<LostChunk>,
}

pub struct ScrubWorker {
    pub(super) io: Arc<ChunkIo>,
    pub(super) health: Arc<HealthBoard>,
    pub(super) interval: Duration,
    /// 0 means no cap.
    pub(super) max_bytes_per_sec: u64,
    /// `stowage scrub run`: start a pass whatever the interval says.
    pub(super) requested: AtomicBool,
    pub(super) state: Mutex<Pass>,
    /// When the node started: the first pass is due an interval later.
    pub(super) started_unix_ms: u64,
}

/// A pass in progress: the chunks it still has to check.
#[derive(Default)]
pub(super) struct Pass {
    todo: Vec<ChunkId>,
    status: ScrubStatus,
}

impl ScrubWorker {
    pub fn status(&self) -> ScrubStatus {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .clone()
    }

    /// Starts a pass at the next step.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    fn due(&self, status: &ScrubStatus) -> bool {
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        self.requested.swap(false, Ordering::Relaxed)
            || status
                .last_pass_unix_ms
                .unwrap_or(self.started_unix_ms)
                .saturating_add(interval_ms)
                <= now_ms()
    }

    /// Checks one chunk: `Ok(bytes read)`, after handling a corrupt copy.
    async fn check(&self, id: ChunkId) -> Result<u64> {
        let store = self.io.store().clone();
        let read = tokio::task::spawn_blocking(move || store.chunks.read(&id, Check::Name)).await?;
        match read {
            Ok(data) => Ok(data.len() as u64),
            // Removed since the pass began (collected, or rebalanced away).
            Err(stowage_storage::Error::ChunkMissing(_)) => Ok(0),
            Err(stowage_storage::Error::ChunkCorrupt(_)) => {
                let store = self.io.store().clone();
                let moved =
                    tokio::task::spawn_blocking(move || store.chunks.quarantine(&id)).await??;
                tracing::error!(chunk = %id, quarantined = %moved.display(), "scrub found a corrupt chunk; fetching a good copy");
                self.mark(|s| s.corrupt_found += 1);
                match self.io.fetch(id, &[]).await {
                    Ok(data) => {
                        tracing::info!(chunk = %id, "rewrote a corrupt chunk from a replica");
                        self.mark(|s| s.repaired += 1);
                        Ok(data.len() as u64)
                    }
                    Err(why) => {
                        self.lost(id, &why).await?;
                        Ok(0)
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn lost(&self, id: ChunkId, why: &str) -> Result<()> {
        let store = self.io.store().clone();
        let d = tokio::task::spawn_blocking(move || store.meta.dependents(&id)).await??;
        let lost = LostChunk {
            chunk: id.to_hex(),
            found_unix_ms: now_ms(),
            blobs: d.blobs.iter().map(|b| b.to_string()).collect(),
            manifests: d
                .manifests
                .iter()
                .map(|(r, m)| format!("{r}@{m}"))
                .collect(),
            tags: d.tags.iter().map(|(r, t)| format!("{r}:{t}")).collect(),
            repositories: d.repositories.iter().map(|r| r.to_string()).collect(),
        };
        tracing::error!(
            chunk = %id,
            %why,
            blobs = ?lost.blobs,
            images = ?lost.tags,
            repositories = ?lost.repositories,
            "a chunk has no good copy on any node: it is lost"
        );
        self.mark(|s| {
            s.lost.retain(|l| l.chunk != lost.chunk);
            s.lost.push(lost);
        });
        let n = self.status().lost.len() as u64;
        self.health.update(|h| h.lost_chunks = n);
        Ok(())
    }

    fn mark(&self, f: impl FnOnce(&mut ScrubStatus)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).status);
    }
}

impl Worker for ScrubWorker {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn interval(&self) -> Duration {
        // Checked often so a requested pass starts soon; `due` keeps the
        // configured interval between passes.
        Duration::from_secs(1)
    }

    async fn step(&self) -> Result<Step> {
        if !self.status().running {
            if !self.due(&self.status()) {
                let s = self.status();
                return Ok(Step::Idle(format!(
                    "{} passes, {} corrupt found, {} repaired, {} lost",
                    s.passes,
                    s.corrupt_found,
                    s.repaired,
                    s.lost.len()
                )));
            }
            let store = self.io.store().clone();
            let todo = tokio::task::spawn_blocking(move || store.chunks.list()).await??;
            let store = self.io.store();
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.status.running = true;
            st.status.total = todo.len() as u64;
            st.status.checked = 0;
            st.status.bytes_checked = 0;
            st.todo = todo;
            // A lost chunk that is back (repaired from elsewhere) is no
            // longer lost.
            st.status.lost.retain(|l| {
                ChunkId::parse(&l.chunk)
                    .map_or(true, |id| store.chunks.read(&id, Check::Name).is_err())
            });
        }
        let batch: Vec<ChunkId> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let n = st.todo.len().min(CHUNKS_PER_STEP);
            let at = st.todo.len() - n;
            st.todo.split_off(at)
        };
        for id in batch {
            let started = Instant::now();
            let bytes = self.check(id).await?;
            self.mark(|s| {
                s.checked += 1;
                s.bytes_checked += bytes;
            });
            if self.max_bytes_per_sec > 0 && bytes > 0 {
                let allowed = Duration::from_secs_f64(bytes as f64 / self.max_bytes_per_sec as f64);
                if let Some(rest) = allowed.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }
        let (finished, progress, lost) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let finished = st.todo.is_empty();
            if finished {
                st.status.running = false;
                st.status.passes += 1;
                st.status.last_pass_unix_ms = Some(now_ms());
            }
            let progress = format!(
                "checked {} of {} chunks",
                st.status.checked, st.status.total
            );
            (finished, progress, st.status.lost.len() as u64)
        };
        if finished {
            self.health.update(|h| h.lost_chunks = lost);
            return Ok(Step::Idle(format!("pass finished: {progress}")));
        }
        Ok(Step::More(progress))
    }
}
