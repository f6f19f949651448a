//! The resync worker (after Garage's `src/block/resync.rs`): takes due
//! chunks from this node's persistent queue, checks each is still wanted
//! here (referenced, assigned by placement, absent), fetches a verified copy
//! from a holder and writes it durably, at most `repair_max_bytes_per_sec`.
//! A failure is queued again with exponential backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use stowage_storage::resync::Queued;
use stowage_storage::types::ChunkId;

use super::repair::HealthBoard;
use super::ChunkIo;
use crate::error::Result;
use crate::registry::now_ms;
use crate::workers::{Handle, Step, Worker};

/// Chunks taken from the queue per step, and fetched at once.
const BATCH: usize = 32;
const PARALLEL_FETCHES: usize = 4;
/// A failed fetch waits this long, doubling per failure up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(600);

fn retry_after(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << attempts.min(12))
        .min(MAX_RETRY)
}

pub struct ResyncWorker {
    pub(super) io: Arc<ChunkIo>,
    pub(super) health: Arc<HealthBoard>,
    /// 0 means no cap.
    pub(super) max_bytes_per_sec: u64,
    /// The repair sweep, woken when the queue drains so the counts of
    /// under-replicated blobs are fresh.
    pub(super) repair: Mutex<Option<Arc<Handle>>>,
    /// Whether anything was repaired since the queue was last empty.
    pub(super) busy: std::sync::atomic::AtomicBool,
}

enum Done {
    /// Fetched and stored (bytes).
    Repaired(u64),
    /// No longer needed here.
    Skipped,
    Failed(String),
}

impl ResyncWorker {
    async fn handle(&self, id: ChunkId) -> Done {
        let io = self.io.clone();
        let wanted = tokio::task::spawn_blocking(move || {
            let (_, all) = io.members();
            let store = io.store();
            Ok::<_, stowage_storage::Error>(
                store.meta.chunk_referenced(&id)?
                    && io.targets(&id, &all).contains(&io.me())
                    && !store.chunks.contains(&id),
            )
        })
        .await;
        match wanted {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Done::Skipped,
            Ok(Err(e)) => return Done::Failed(e.to_string()),
            Err(e) => return Done::Failed(e.to_string()),
        }
        match self.io.fetch(id, &[]).await {
            Ok(data) => Done::Repaired(data.len() as u64),
            Err(why) => Done::Failed(why),
        }
    }
}

impl Worker for ResyncWorker {
    fn name(&self) -> &'static str {
        "resync"
    }

    fn interval(&self) -> Duration {
        // The queue holds retry times; look at it again soon.
        Duration::from_secs(1)
    }

    async fn step(&self) -> Result<Step> {
        // A fetched copy could not be kept below the free-space reserve;
        // the queue waits (its entries stay due) instead of fetching chunks
        // over the network only to drop them.
        if let Err(e) = self.io.store().space.check() {
            // Not the queue's length: that is a scan of the whole tree,
            // every second, while paused.
            return Ok(Step::Idle(format!("paused: {e}")));
        }
        let store = self.io.store().clone();
        let due: Vec<Queued> =
            tokio::task::spawn_blocking(move || store.resync.take_due(now_ms(), BATCH)).await??;
        if due.is_empty() {
            if self.busy.swap(false, std::sync::atomic::Ordering::Relaxed) {
                if let Some(h) = self
                    .repair
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    h.wake();
                }
            }
            return Ok(Step::Idle(format!(
                "{} chunks queued",
                self.io.store().resync.len()
            )));
        }
        self.busy.store(true, std::sync::atomic::Ordering::Relaxed);
        let _fetching = self.health.fetching(due.len() as u64);
        let started = Instant::now();
        let results: Vec<(Queued, Done)> = stream::iter(due)
            .map(|q| async move { (q, self.handle(q.id).await) })
            .buffer_unordered(PARALLEL_FETCHES)
            .collect()
            .await;
        let (mut repaired, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        for (q, done) in results {
            match done {
                Done::Repaired(n) => {
                    repaired += 1;
                    bytes += n;
                }
                Done::Skipped => {}
                Done::Failed(why) => {
                    failed += 1;
                    tracing::debug!(chunk = %q.id, attempts = q.attempts, %why, "repair fetch failed; will retry");
                    let retry_ms = u64::try_from(retry_after(q.attempts).as_millis()).unwrap_or(0);
                    self.io.store().resync.push(
                        q.id,
                        now_ms().saturating_add(retry_ms),
                        q.attempts.saturating_add(1),
                    )?;
                }
            }
        }
        self.health.update(|h| {
            h.repaired_chunks += repaired;
            h.repaired_bytes += bytes;
        });
        if self.max_bytes_per_sec > 0 && bytes > 0 {
            // Spread the batch over the time the cap allows for its bytes.
            let allowed = Duration::from_secs_f64(bytes as f64 / self.max_bytes_per_sec as f64);
            if let Some(rest) = allowed.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
        Ok(Step::More(format!(
            "repaired {repaired} chunks ({bytes} bytes), {failed} to retry, {} queued",
            self.io.store().resync.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_cap() {
        assert_eq!(retry_after(0), Duration::from_secs(1));
        assert_eq!(retry_after(3), Duration::from_secs(8));
        assert_eq!(retry_after(40), MAX_RETRY);
    }
}
