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
                let data = data.clone();
                async move { (t, rpc::put_chunk(&self.peers, t, &addr, id, data).await) }
            })
            .collect();
        let mut failures: Vec<String> = skipped
            .iter()
            .map(|t| format!("node {t}: unreachable"))
            .collect();
        while !satisfied(&holders) {
            match sends.next().await {
                Some((t, Ok(()))) => {
                    holders.insert(t);
                }
                Some((t, Err(e))) => failures.push(format!("node {t}: {e}")),
                None => break,
            }
        }
        if !satisfied(&holders) {
            let zones: BTreeSet<&Zone> = holders.iter().filter_map(|n| zone_of.get(n)).collect();
            return Err(Error::Unavailable(format!(
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
