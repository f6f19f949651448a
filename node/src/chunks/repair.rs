//! The repair sweep (anti-entropy): from the replicated blob records and
//! placement over the current membership, each node works out which chunks
//! it should hold. Missing ones go to the resync queue; copies it holds that
//! placement no longer assigns to it (after a membership change) are
//! dropped, but only once every node placement names has confirmed its
//! copy. The sweep's findings are the node's `NodeHealth`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use stowage_storage::types::{ChunkId, NodeId};

use super::{rpc, ChunkIo};
use crate::error::Result;
use crate::registry::now_ms;
use crate::workers::{Handle, Step, Worker};

/// What a node knows of its own copies; the same fields travel in the
/// `Chunks.Report` RPC for the cluster-wide status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub held_chunks: u64,
    pub held_bytes: u64,
    /// Chunks placement assigns here that are not here (the resync queue).
    pub missing_chunks: u64,
    /// Blobs with at least one such chunk, at the last sweep.
    pub under_replicated_blobs: u64,
    /// Copies held here that placement assigns elsewhere, not yet dropped.
    pub misplaced_chunks: u64,
    pub queued: u64,
    pub repaired_chunks: u64,
    pub repaired_bytes: u64,
    pub last_sweep_unix_ms: Option<u64>,
    /// Chunks scrub found with no good copy anywhere.
    pub lost_chunks: u64,
    /// The members the last sweep placed chunks over.
    pub swept_members: Vec<u64>,
}

/// The node's `NodeHealth`, written by the sweep, the resync worker and
/// scrub, read by status and by peers.
pub struct HealthBoard {
    store: Arc<stowage_storage::Store>,
    inner: Mutex<NodeHealth>,
    /// Chunks the resync worker has taken off the queue and is fetching:
    /// still missing until they land.
    fetching: std::sync::atomic::AtomicU64,
}

impl HealthBoard {
    pub fn new(store: Arc<stowage_storage::Store>) -> Self {
        HealthBoard {
            store,
            inner: Mutex::new(NodeHealth::default()),
            fetching: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts `n` chunks as being fetched until the guard drops.
    pub fn fetching(&self, n: u64) -> Fetching<'_> {
        self.fetching
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        Fetching { board: self, n }
    }

    /// The current health; the queue length is read live, so repairs show
    /// as they happen.
    pub fn snapshot(&self) -> NodeHealth {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        h.queued = self.store.resync.len() as u64;
        h.missing_chunks = h.queued + self.fetching.load(std::sync::atomic::Ordering::SeqCst);
        if h.missing_chunks == 0 && h.last_sweep_unix_ms.is_some() {
            // Everything the last sweep found missing has been fetched.
            h.under_replicated_blobs = 0;
        }
        h
    }

    pub fn update(&self, f: impl FnOnce(&mut NodeHealth)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

pub struct Fetching<'a> {
    board: &'a HealthBoard,
    n: u64,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.board
            .fetching
            .fetch_sub(self.n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What one sweep found, before the misplaced copies are dealt with.
struct Findings {
    members: Vec<u64>,
    missing: Vec<ChunkId>,
    under_replicated_blobs: u64,
    /// Copies here that placement assigns elsewhere, with their targets and
    /// the file time seen (a copy written again since is kept).
    misplaced: Vec<(ChunkId, Vec<NodeId>, SystemTime)>,
}

pub struct RepairWorker {
    pub(super) io: Arc<ChunkIo>,
    pub(super) health: Arc<HealthBoard>,
    pub(super) interval: Duration,
    /// The resync worker, woken when the sweep queued something.
    pub(super) resync: Mutex<Option<Arc<Handle>>>,
    /// The last sweep left misplaced copies whose new homes had not
    /// confirmed yet: sweep again soon rather than at the interval.
    pub(super) unsettled: std::sync::atomic::AtomicBool,
}

/// How soon a sweep that left misplaced copies runs again.
const UNSETTLED_RESWEEP: Duration = Duration::from_secs(3);

/// Walks every blob record (blocking): what this node lacks and what it
/// holds for others. `None` when there is nobody to repair from.
fn find(io: &ChunkIo) -> Result<Option<Findings>> {
    let me = io.me();
    let (members, all) = io.members();
    if members.len() <= 1 || !members.contains_key(&me) {
        return Ok(None);
    }
    let store = io.store();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut f = Findings {
        members: members.keys().map(|id| id.0).collect(),
        missing: Vec::new(),
        under_replicated_blobs: 0,
        misplaced: Vec::new(),
    };
    store.meta.for_each_blob(|_, record| {
        let mut short = false;
        for c in &record.chunks {
            let targets = io.targets(&c.id, &all);
            let assigned = targets.contains(&me);
            let first = seen.insert(c.id);
            let here = store.chunks.modified(&c.id);
            match (assigned, here) {
                (true, None) => {
                    short = true;
                    if first {
                        f.missing.push(c.id);
                    }
                }
                (false, Some(at)) if first => f.misplaced.push((c.id, targets, at)),
                _ => {}
            }
        }
        if short {
            f.under_replicated_blobs += 1;
        }
    })?;
    Ok(Some(f))
}

impl RepairWorker {
    /// Drops copies that every node placement names has confirmed holding.
    /// Returns how many stay misplaced.
    async fn drop_confirmed(&self, misplaced: Vec<(ChunkId, Vec<NodeId>, SystemTime)>) -> u64 {
        let me = self.io.me();
        let (members, _) = self.io.members();
        let mut by_target: BTreeMap<NodeId, Vec<ChunkId>> = BTreeMap::new();
        for (id, targets, _) in &misplaced {
            for t in targets.iter().filter(|t| **t != me) {
                by_target.entry(*t).or_default().push(*id);
            }
        }
        let mut confirmed: BTreeMap<(NodeId, ChunkId), bool> = BTreeMap::new();
        for (node, ids) in by_target {
            let Some(info) = members.get(&node) else {
                continue;
            };
            if let Ok(present) = rpc::has_chunks(&self.io.peers, node, &info.rpc_addr, &ids).await {
                for (id, p) in ids.into_iter().zip(present) {
                    confirmed.insert((node, id), p);
                }
            }
        }
        let mut left = 0u64;
        for (id, targets, seen) in misplaced {
            let all_confirmed = targets
                .iter()
                .filter(|t| **t != me)
                .all(|t| confirmed.get(&(*t, id)).copied().unwrap_or(false));
            if !all_confirmed || self.io.is_pinned(&id) {
                left += 1;
                continue;
            }
            let store = self.io.store().clone();
            let dropped = tokio::task::spawn_blocking(move || {
                store.chunks.remove_unless_rewritten(&id, seen)
            })
            .await;
            match dropped {
                Ok(Ok(true)) => tracing::debug!(chunk = %id, "dropped a copy placement moved away"),
                Ok(Ok(false)) => left += 1,
                Ok(Err(e)) => {
                    tracing::warn!(chunk = %id, error = %e, "could not drop a misplaced copy");
                    left += 1;
                }
                Err(_) => left += 1,
            }
        }
        left
    }
}

impl Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn interval(&self) -> Duration {
        if self.unsettled.load(std::sync::atomic::Ordering::Relaxed) {
            self.interval.min(UNSETTLED_RESWEEP)
        } else {
            self.interval
        }
    }

    async fn step(&self) -> Result<Step> {
        use std::sync::atomic::Ordering::Relaxed;
        // A sweep of a state this node has not caught up with would miss
        // the newest blobs (a restarted node replays the log first).
        if let Err(e) = self.io.consensus.readiness().await {
            self.unsettled.store(true, Relaxed);
            return Ok(Step::Idle(format!(
                "waiting to catch up before sweeping: {e}"
            )));
        }
        let io = self.io.clone();
        let found = tokio::task::spawn_blocking(move || find(&io)).await??;
        let Some(f) = found else {
            // The membership may not be known yet: look again soon.
            self.unsettled.store(true, Relaxed);
            return Ok(Step::Idle(
                "single node or not a member: nothing to repair".into(),
            ));
        };
        let now = now_ms();
        let store = self.io.store().clone();
        let missing = f.missing.clone();
        tokio::task::spawn_blocking(move || {
            missing
                .iter()
                .try_for_each(|id| store.resync.push(*id, now, 0))
        })
        .await??;
        if !f.missing.is_empty() {
            if let Some(h) = self
                .resync
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                h.wake();
            }
        }
        let misplaced_seen = f.misplaced.len();
        let misplaced_left = self.drop_confirmed(f.misplaced).await;
        self.unsettled.store(misplaced_left > 0, Relaxed);
        let store = self.io.store().clone();
        let (held, held_bytes) =
            tokio::task::spawn_blocking(move || store.chunks.usage()).await??;
        self.health.update(|h| {
            h.held_chunks = held;
            h.held_bytes = held_bytes;
            h.under_replicated_blobs = f.under_replicated_blobs;
            h.misplaced_chunks = misplaced_left;
            h.last_sweep_unix_ms = Some(now_ms());
            h.swept_members = f.members.clone();
        });
        Ok(Step::Idle(format!(
            "swept: {held} chunks held, {} missing in {} blobs, {} misplaced ({} dropped)",
            f.missing.len(),
            f.under_replicated_blobs,
            misplaced_left,
            misplaced_seen as u64 - misplaced_left
        )))
    }
}
