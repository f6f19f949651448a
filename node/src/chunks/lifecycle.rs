//! Starts the chunk subsystem's background jobs (gc, chunk-gc, repair,
//! resync, scrub) and is what the admin API asks about them: `gc run` and
//! `gc status`, `scrub run` and `scrub status`, and the replica health of
//! this node and of the whole cluster. It also wakes the repair sweep when
//! the membership changes or a peer comes back, since either can leave
//! copies missing or misplaced.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stowage_storage::types::NodeId;

use super::gc::{ChunkGcTask, ChunkGcWorker, ChunkSweep, GcConfig, GcReport, GcWorker};
use super::repair::{HealthBoard, NodeHealth, RepairWorker};
use super::resync::ResyncWorker;
use super::scrub::{Pass, ScrubStatus, ScrubWorker};
use super::{rpc, ChunkIo};
use crate::consensus::Consensus;
use crate::error::Result;
use crate::registry::now_ms;
use crate::workers::{Handle, Workers};

/// How often membership and peer reachability are looked at for changes
/// that call for a repair sweep.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The lifecycle settings, with their units.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub gc: GcConfig,
    pub repair_interval: Duration,
    pub repair_max_bytes_per_sec: u64,
    pub scrub_interval: Duration,
    pub scrub_max_bytes_per_sec: u64,
}

pub struct Lifecycle {
    pub workers: Arc<Workers>,
    io: Arc<ChunkIo>,
    consensus: Arc<Consensus>,
    health: Arc<HealthBoard>,
    gc: Arc<GcWorker>,
    chunk_gc: Arc<ChunkGcWorker>,
    scrub: Arc<ScrubWorker>,
    handles: Mutex<Option<Handles>>,
}

struct Handles {
    chunk_gc: Arc<Handle>,
    repair: Arc<Handle>,
    scrub: Arc<Handle>,
}

/// What `stowage gc status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcStatus {
    pub would_collect: GcReport,
    pub last_pass: Option<GcReport>,
    pub chunk_files: ChunkSweep,
}

/// One member's replica health, as the cluster-wide status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberHealth {
    pub id: u64,
    pub zone: String,
    /// `None` when the member did not answer.
    pub health: Option<NodeHealth>,
}

/// Replica health of every member, and the one-line verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterHealth {
    pub nodes: Vec<MemberHealth>,
    pub missing_chunks: u64,
    pub under_replicated_blobs: u64,
    pub misplaced_chunks: u64,
    pub lost_chunks: u64,
    pub unreachable_nodes: u64,
    pub summary: String,
}

impl Lifecycle {
    pub fn new(
        io: Arc<ChunkIo>,
        consensus: Arc<Consensus>,
        health: Arc<HealthBoard>,
        workers: Arc<Workers>,
        config: LifecycleConfig,
    ) -> Arc<Self> {
        let gc = Arc::new(GcWorker {
            consensus: consensus.clone(),
            io: io.clone(),
            config: config.gc.clone(),
            last: Mutex::new(None),
        });
        let chunk_gc = Arc::new(ChunkGcWorker {
            io: io.clone(),
            config: config.gc.clone(),
            last: Mutex::new(ChunkSweep::default()),
        });
        let scrub = Arc::new(ScrubWorker {
            io: io.clone(),
            health: health.clone(),
            interval: config.scrub_interval,
            max_bytes_per_sec: config.scrub_max_bytes_per_sec,
            requested: AtomicBool::new(false),
            state: Mutex::new(Pass::default()),
            started_unix_ms: now_ms(),
        });
        let this = Arc::new(Lifecycle {
            workers,
            io,
            consensus,
            health,
            gc,
            chunk_gc,
            scrub,
            handles: Mutex::new(None),
        });
        this.clone().start(&config);
        this
    }

    fn start(self: Arc<Self>, config: &LifecycleConfig) {
        let w = &self.workers;
        w.spawn(self.gc.clone());
        let chunk_gc = w.spawn(Arc::new(ChunkGcTask(self.chunk_gc.clone())));
        let repair_worker = Arc::new(RepairWorker {
            io: self.io.clone(),
            health: self.health.clone(),
            interval: config.repair_interval,
            resync: Mutex::new(None),
            unsettled: AtomicBool::new(false),
        });
        let resync_worker = Arc::new(ResyncWorker {
            io: self.io.clone(),
            health: self.health.clone(),
            max_bytes_per_sec: config.repair_max_bytes_per_sec,
            repair: Mutex::new(None),
            busy: AtomicBool::new(false),
        });
        let repair = w.spawn(repair_worker.clone());
        let resync = w.spawn(resync_worker.clone());
        *repair_worker
            .resync
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(resync);
        *resync_worker
            .repair
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(repair.clone());
        let scrub = w.spawn(self.scrub.clone());
        *self.handles.lock().unwrap_or_else(|e| e.into_inner()) = Some(Handles {
            chunk_gc,
            repair: repair.clone(),
            scrub,
        });
        tokio::spawn(watch_for_repair(
            self.consensus.clone(),
            self.io.clone(),
            repair,
        ));
    }

    fn with_handles(&self, f: impl FnOnce(&Handles)) {
        if let Some(h) = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            f(h);
        }
    }

    /// `stowage gc run`: a metadata pass on this node now, then this
    /// node's chunk files.
    pub async fn gc_run(&self, dry_run: bool) -> Result<GcReport> {
        let report = self.gc.run_pass(dry_run).await?;
        if !dry_run {
            self.with_handles(|h| h.chunk_gc.wake());
        }
        Ok(report)
    }

    pub async fn gc_status(&self) -> Result<GcStatus> {
        Ok(GcStatus {
            would_collect: self.gc.run_pass(true).await?,
            last_pass: self.gc.last(),
            chunk_files: self.chunk_gc.last(),
        })
    }

    pub fn scrub_run(&self) -> ScrubStatus {
        self.scrub.request();
        self.with_handles(|h| h.scrub.wake());
        self.scrub.status()
    }

    pub fn scrub_status(&self) -> ScrubStatus {
        self.scrub.status()
    }

    /// What this node's chunk-file sweeps removed, last and in total.
    pub fn chunk_sweep(&self) -> ChunkSweep {
        self.chunk_gc.last()
    }

    /// Asks for a repair sweep now.
    pub fn repair_now(&self) {
        self.with_handles(|h| h.repair.wake());
    }

    pub fn health(&self) -> NodeHealth {
        self.health.snapshot()
    }

    /// Every member's replica health (asked over the cluster RPC).
    pub async fn cluster_health(&self) -> ClusterHealth {
        let me = self.io.me();
        let members = self.consensus.members();
        let asks = members.iter().map(|(id, info)| async move {
            let health = if *id == me {
                Some(self.health.snapshot())
            } else if self.io.peers.is_down(*id) {
                // Known down: do not make every status request wait for it.
                None
            } else {
                rpc::report(&self.io.peers, *id, &info.rpc_addr).await.ok()
            };
            MemberHealth {
                id: id.0,
                zone: info.zone.to_string(),
                health,
            }
        });
        let nodes: Vec<MemberHealth> = futures_util::future::join_all(asks).await;
        let ids: Vec<u64> = members.keys().map(|id| id.0).collect();
        summarize(nodes, &ids, self.io.replication().replicas)
    }
}

/// Sums the members' reports into one verdict. Only sweeps made over the
/// current membership count: right after a change, every node's last
/// sweep describes the old placement.
fn summarize(nodes: Vec<MemberHealth>, members: &[u64], replicas: usize) -> ClusterHealth {
    let sum = |f: fn(&NodeHealth) -> u64| -> u64 {
        nodes.iter().filter_map(|n| n.health.as_ref()).map(f).sum()
    };
    let missing_chunks = sum(|h| h.missing_chunks);
    let under_replicated_blobs = sum(|h| h.under_replicated_blobs);
    let misplaced_chunks = sum(|h| h.misplaced_chunks);
    let lost_chunks = sum(|h| h.lost_chunks);
    let unreachable: Vec<String> = nodes
        .iter()
        .filter(|n| n.health.is_none())
        .map(|n| format!("{} (zone {})", n.id, n.zone))
        .collect();
    let swept = nodes
        .iter()
        .filter_map(|n| n.health.as_ref())
        .all(|h| h.last_sweep_unix_ms.is_some() && h.swept_members == members);
    let summary = if !unreachable.is_empty() {
        format!(
            "replica health unknown: node {} not answering; {missing_chunks} copies missing elsewhere",
            unreachable.join(", ")
        )
    } else if lost_chunks > 0 {
        format!("{lost_chunks} chunks LOST (no good copy on any node): see `stowage scrub status`")
    } else if missing_chunks > 0 || under_replicated_blobs > 0 {
        format!(
            "under-replicated: {missing_chunks} copies missing ({under_replicated_blobs} blobs); repair is fetching them"
        )
    } else if !swept && nodes.len() > 1 {
        "repair has not swept every node over the current membership yet".into()
    } else {
        format!("every chunk has its {replicas} copies (or one per node)")
    };
    ClusterHealth {
        missing_chunks,
        under_replicated_blobs,
        misplaced_chunks,
        lost_chunks,
        unreachable_nodes: unreachable.len() as u64,
        summary,
        nodes,
    }
}

/// Wakes the repair sweep when the membership changes or a peer that was
/// unreachable answers again: both can leave this node missing copies (it
/// was cut off while others wrote) or holding copies placement moved.
async fn watch_for_repair(consensus: Arc<Consensus>, io: Arc<ChunkIo>, repair: Arc<Handle>) {
    // No baseline: the first look always wakes repair once. The start-up
    // sweep may have run over an older membership (a node added while two
    // joins followed each other quickly swept over the first of them and
    // then waited out the whole repair interval).
    let mut last_members: Option<BTreeSet<NodeId>> = Some(BTreeSet::new());
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let members: BTreeSet<NodeId> = consensus.members().into_keys().collect();
        let mut wake = last_members.as_ref().is_some_and(|m| *m != members);
        last_members = Some(members.clone());
        for id in members.iter().filter(|id| **id != io.me()) {
            if io.peers.is_down(*id) {
                down.insert(*id);
            } else if down.remove(id) {
                wake = true;
            }
        }
        if wake {
            tracing::debug!("membership or reachability changed: sweeping for repair");
            repair.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, h: Option<NodeHealth>) -> MemberHealth {
        MemberHealth {
            id,
            zone: format!("z{id}"),
            health: h,
        }
    }

    #[test]
    fn the_summary_says_healthy_only_when_every_node_answers_and_lacks_nothing() {
        let swept = NodeHealth {
            last_sweep_unix_ms: Some(1),
            swept_members: vec![1, 2],
            ..NodeHealth::default()
        };
        let ok = summarize(
            vec![node(1, Some(swept.clone())), node(2, Some(swept.clone()))],
            &[1, 2],
            3,
        );
        assert!(
            ok.summary.starts_with("every chunk has its 3 copies"),
            "{}",
            ok.summary
        );
        let short = NodeHealth {
            missing_chunks: 4,
            under_replicated_blobs: 2,
            ..swept.clone()
        };
        let s = summarize(
            vec![node(1, Some(swept.clone())), node(2, Some(short))],
            &[1, 2],
            3,
        );
        assert_eq!((s.missing_chunks, s.under_replicated_blobs), (4, 2));
        assert!(s.summary.starts_with("under-replicated"));
        let s = summarize(
            vec![node(1, Some(swept.clone())), node(2, None)],
            &[1, 2],
            3,
        );
        assert_eq!(s.unreachable_nodes, 1);
        assert!(s.summary.contains("not answering"));
        // Swept before node 3 joined: not a verdict on the new placement.
        let s = summarize(
            vec![node(1, Some(swept.clone())), node(2, Some(swept))],
            &[1, 2, 3],
            3,
        );
        assert!(
            s.summary.starts_with("repair has not swept"),
            "{}",
            s.summary
        );
    }
}
