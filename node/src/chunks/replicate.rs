//! The write fan-out: a chunk this node holds goes to the other nodes
//! placement names, and the write is answered once `write_quorum` copies
//! spanning two zones (where the cluster has two) are fsynced. A target
//! whose node is known to be down is not waited for: its copy is owed, and
//! that node's repair sweep fetches it when it is back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use stowage_storage::types::{ChunkId, NodeId, Zone};

use super::{rpc, ChunkIo};
use crate::error::{Error, Result};

/// Once the quorum is met, slower copies get this much longer before the
/// write is answered without them (they are then under-replicated until
/// the node's repair sweep).
const STRAGGLER_GRACE: Duration = Duration::from_millis(500);
/// How often a write waiting for its quorum looks whether the peers it
/// still waits for have been found down.
const RECHECK_PENDING: Duration = Duration::from_millis(250);

/// How many copies a chunk gets, and how many must be durable before a
/// write is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    pub replicas: usize,
    pub write_quorum: usize,
}

impl ChunkIo {
    /// Sends a chunk this node holds to the other placement targets and
    /// waits for the write quorum. Returns every node known to hold it.
    pub async fn replicate(&self, id: ChunkId, data: Bytes) -> Result<BTreeSet<NodeId>> {
        let me = self.me();
        let (members, all) = self.members();
        let mut holders = BTreeSet::from([me]);
        if members.len() <= 1 {
            return Ok(holders);
        }
        let zone_of: HashMap<NodeId, Zone> = members
            .iter()
            .map(|(id, n)| (*id, n.zone.clone()))
            .collect();
        let need = self.replication.write_quorum.min(members.len());
        let zone_count = zone_of.values().collect::<BTreeSet<_>>().len();
        let need_zones = zone_count.min(2);
        let satisfied = |h: &BTreeSet<NodeId>| {
            let zones: BTreeSet<&Zone> = h.iter().filter_map(|n| zone_of.get(n)).collect();
            h.len() >= need && zones.len() >= need_zones
        };
        let mut skipped = Vec::new();
        let mut pending = BTreeSet::new();
        let mut sends: FuturesUnordered<_> = self
            .targets(&id, &all)
            .into_iter()
            .filter(|t| *t != me)
            .filter(|t| {
                let down = self.peers.is_down(*t);
                if down {
                    skipped.push(*t);
                }
                !down
            })
            .filter_map(|t| members.get(&t).map(|info| (t, info.rpc_addr.clone())))
            .map(|(t, addr)| {
                pending.insert(t);
                let data = data.clone();
                async move { (t, rpc::put_chunk(&self.peers, t, &addr, id, data).await) }
            })
            .collect();
        let mut failures: Vec<String> = skipped
            .iter()
            .map(|t| format!("node {t}: unreachable"))
            .collect();
        // A peer that vanishes mid-write (a partition: no reset, just
        // silence) would hold the write until the transfer timeout; once
        // the peers still pending are known to be down and the rest cannot
        // make the quorum, the write fails at once instead.
        let mut peer_disk_full = false;
        let mut recheck = tokio::time::interval(RECHECK_PENDING);
        recheck.tick().await;
        // However the peers fail, a write waits for its quorum no longer
        // than a client request may wait for the cluster.
        let deadline = self.consensus.timing().request_deadline;
        let give_up = tokio::time::sleep(deadline);
        tokio::pin!(give_up);
        while !satisfied(&holders) {
            tokio::select! {
                () = &mut give_up => {
                    failures.extend(pending.iter().map(|t| {
                        format!("node {t}: no answer within {} ms", deadline.as_millis())
                    }));
                    break;
                }
                next = sends.next() => match next {
                    Some((t, Ok(()))) => {
                        pending.remove(&t);
                        holders.insert(t);
                    }
                    Some((t, Err(e))) => {
                        pending.remove(&t);
                        peer_disk_full |= e.disk_full;
                        failures.push(format!("node {t}: {e}"));
                    }
                    None => break,
                },
                _ = recheck.tick() => {
                    let mut could = holders.clone();
                    could.extend(pending.iter().filter(|t| !self.peers.is_down(**t)));
                    if !satisfied(&could) {
                        failures.extend(
                            pending
                                .iter()
                                .filter(|t| self.peers.is_down(**t))
                                .map(|t| format!("node {t}: stopped answering")),
                        );
                        break;
                    }
                }
            }
        }
        if !satisfied(&holders) {
            let zones: BTreeSet<&Zone> = holders.iter().filter_map(|n| zone_of.get(n)).collect();
            let why = if peer_disk_full {
                // Retrying soon will not help: an operator must make room.
                Error::DiskFull
            } else {
                Error::Unavailable
            };
            return Err(why(format!(
                "write quorum unavailable: chunk {id} reached {} of the {need} copies in {} of \
                 the {need_zones} zones a write needs ({})",
                holders.len(),
                zones.len(),
                failures.join("; ")
            )));
        }
        // Give the remaining copies a moment; whatever misses it stays
        // under-replicated until the repair sweep.
        let _ = tokio::time::timeout(STRAGGLER_GRACE, async {
            while let Some((t, r)) = sends.next().await {
                if r.is_ok() {
                    holders.insert(t);
                }
            }
        })
        .await;
        Ok(holders)
    }
}
