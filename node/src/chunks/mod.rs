//! The chunk subsystem, on the model of Garage's block manager: chunk I/O
//! for the registry, both ends of the `Chunks` RPC, and the background jobs
//! that keep exactly `replicas` verified copies of every referenced chunk
//! and nothing else. Writes are durable here and streamed to the nodes
//! placement names, answered at the write quorum; reads are verified, and a
//! chunk this node lacks is fetched from one that has it.
//!
//! Layout: this file (`ChunkIo`: put, get, stream, fetch), `pins.rs`
//! (chunks of requests in progress), `replicate.rs` (the quorum fan-out),
//! `rpc.rs` (client calls and the `Chunks` service), `gc.rs` (metadata
//! collection passes and chunk file removal), `repair.rs` (the sweep that
//! finds missing and misplaced copies), `resync.rs` (the queue worker that
//! fetches them), `scrub.rs` (re-hashing local chunks), `lifecycle.rs`
//! (starting the jobs and reporting their state).

pub mod gc;
pub mod lifecycle;
pub mod pins;
pub mod repair;
mod replicate;
pub mod resync;
pub mod rpc;
pub mod scrub;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::{ChunkId, NodeId};
use stowage_storage::Store;
use tokio::sync::mpsc;

pub use self::lifecycle::Lifecycle;
pub use self::pins::{PinTable, Pins};
pub use self::replicate::Replication;
use crate::cluster::peers::Peers;
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::placement::{self, Member};
use crate::raft::NodeInfo;

/// Chunks a pull has in flight from disk (or a peer) at most: enough to
/// keep the disk busy while the client drains the current one.
const READ_AHEAD_CHUNKS: usize = 3;
/// Chunks read beyond the next one, across every pull on this node. Each
/// pull always reads its next chunk; only reading further ahead takes a
/// share, so a single pull gets its full read-ahead while parallel layer
/// pulls (docker, skopeo and containerd run 3-6) share a bounded amount of
/// memory instead of each holding its own, and a stalled client holds no
/// more than its own few chunks.
const READ_AHEAD_BUDGET: usize = 8;
/// How long a pull waits to learn whether peers hold the chunks this node
/// lacks, before it answers.
const AVAILABILITY_TIMEOUT: Duration = Duration::from_secs(3);

pub struct ChunkIo {
    store: Arc<Store>,
    consensus: Arc<Consensus>,
    peers: Arc<Peers>,
    replication: Replication,
    pins: Arc<PinTable>,
    metrics: Arc<crate::metrics::Metrics>,
    read_ahead: Arc<tokio::sync::Semaphore>,
}

/// A chunk written: its reference, its pin, and the nodes holding a copy.
pub struct Written {
    pub chunk: ChunkRef,
    pub pins: Pins,
    pub holders: BTreeSet<NodeId>,
}

impl ChunkIo {
    pub fn new(
        store: Arc<Store>,
        consensus: Arc<Consensus>,
        peers: Arc<Peers>,
        replication: Replication,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        ChunkIo {
            metrics,
            store,
            consensus,
            peers,
            replication,
            pins: Arc::new(PinTable::default()),
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BUDGET)),
        }
    }

    pub fn me(&self) -> NodeId {
        self.consensus.id()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn pins(&self) -> &Arc<PinTable> {
        &self.pins
    }

    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// The membership, and the same as placement's input.
    fn members(&self) -> (BTreeMap<NodeId, NodeInfo>, Vec<Member>) {
        let members = self.consensus.members();
        let all = members
            .iter()
            .map(|(id, n)| Member {
                id: *id,
                zone: n.zone.clone(),
            })
            .collect();
        (members, all)
    }

    /// The nodes that should hold `id` under the current membership.
    pub fn targets(&self, id: &ChunkId, all: &[Member]) -> Vec<NodeId> {
        placement::place(id, all, self.replication.replicas)
    }

    /// Writes a chunk durably on this node (blocking), pinned in `pins`
    /// before it exists on disk.
    pub fn put_local(&self, data: &[u8], pins: &mut Pins) -> Result<ChunkRef> {
        self.put_local_named(data, pins, |_| {})
    }

    /// `put_local`, telling `named` the chunk's id once it is pinned and
    /// before it is written (so copies to peers can start meanwhile).
    fn put_local_named(
        &self,
        data: &[u8],
        pins: &mut Pins,
        named: impl FnOnce(ChunkId),
    ) -> Result<ChunkRef> {
        let len =
            u32::try_from(data.len()).map_err(|_| Error::SizeInvalid("chunk larger than 4 GiB"))?;
        let id = ChunkId::of(data);
        pins.add(id);
        named(id);
        self.store.chunks.put_as(id, data)?;
        Ok(ChunkRef { id, len })
    }

    /// Whether this node is alone, so no chunk ever leaves it.
    pub fn is_single_node(&self) -> bool {
        self.consensus.members().len() <= 1
    }

    /// Writes a chunk here and on the nodes placement names for it. The
    /// copies to peers start as soon as the chunk is named and pinned, so
    /// this node's write and fsync overlap theirs instead of preceding them.
    pub async fn put(self: &Arc<Self>, data: Bytes) -> Result<Written> {
        let started = std::time::Instant::now();
        let this = self.clone();
        let local = data.clone();
        let (named, id) = tokio::sync::oneshot::channel();
        let write = tokio::task::spawn_blocking(move || {
            let mut pins = Pins::new(&this.pins);
            let chunk = this.put_local_named(&local, &mut pins, |id| {
                let _ = named.send(id);
            })?;
            Ok::<_, Error>((chunk, pins))
        });
        let Ok(id) = id.await else {
            // Unsent: the chunk was refused before it was named (its size),
            // or the task panicked; either error says why.
            return Err(match write.await {
                Err(e) => e.into(),
                Ok(Err(e)) => e,
                Ok(Ok(_)) => Error::Unavailable("a chunk write ended without its name".into()),
            });
        };
        let (written, replicated) = tokio::join!(write, self.replicate(id, data));
        let written = written.map_err(Error::from).and_then(|w| w);
        self.metrics
            .chunk_write(written.is_ok() && replicated.is_ok(), started.elapsed());
        let (chunk, pins) = written?;
        let holders = replicated?;
        Ok(Written {
            chunk,
            pins,
            holders,
        })
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.pins.is_pinned(id)
    }

    /// A verified chunk: the local copy, or one fetched from `holders` (then
    /// placement targets, then any member) and kept here. A corrupt local
    /// copy is replaced the same way.
    pub async fn get(self: &Arc<Self>, id: ChunkId, holders: &[NodeId]) -> Result<Bytes> {
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || store.chunks.get(&id)).await?;
        match local {
            Ok(b) => Ok(b),
            Err(
                e @ (stowage_storage::Error::ChunkMissing(_)
                | stowage_storage::Error::ChunkCorrupt(_)),
            ) => {
                if matches!(e, stowage_storage::Error::ChunkCorrupt(_)) {
                    // Moved aside, not deleted: an operator can look at it,
                    // and the good copy fetched below takes its place.
                    let store = self.store.clone();
                    let moved =
                        tokio::task::spawn_blocking(move || store.chunks.quarantine(&id)).await?;
                    tracing::error!(chunk = %id, quarantined = ?moved.map(|p| p.display().to_string()), "local copy is corrupt; fetching it from a peer");
                }
                self.fetch(id, holders).await.map_err(|why| {
                    tracing::error!(chunk = %id, %why, "no node could provide the chunk");
                    Error::Storage(e)
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches a verified copy from another node and keeps it here, trying
    /// `holders` first, then the placement order over every member; peers
    /// known to be down come last (asking one first would cost the pull its
    /// idle timeout).
    pub async fn fetch(&self, id: ChunkId, holders: &[NodeId]) -> Result<Bytes, String> {
        let me = self.me();
        let (members, all) = self.members();
        if members.len() <= 1 {
            return Err("no other node to ask".into());
        }
        let mut order: Vec<NodeId> = holders.to_vec();
        order.extend(placement::place(&id, &all, all.len()));
        // Stable: the preference order holds within the up and the down.
        order.sort_by_key(|n| self.peers.is_down(*n));
        let mut seen = BTreeSet::new();
        let mut errors = Vec::new();
        for node in order {
            if node == me || !seen.insert(node) {
                continue;
            }
            let Some(info) = members.get(&node) else {
                continue;
            };
            match rpc::get_chunk(&self.peers, node, &info.rpc_addr, id).await {
                Ok(data) => {
                    let store = self.store.clone();
                    let kept = data.clone();
                    // get_chunk has checked the copy against its name.
                    let stored =
                        tokio::task::spawn_blocking(move || store.chunks.put_as(id, &kept)).await;
                    match stored {
                        Ok(Ok(())) => {}
                        // Served all the same; the disk watch reports a
                        // full disk once, not per chunk.
                        Ok(Err(e)) if e.is_disk_full() => {
                            tracing::debug!(chunk = %id, error = %e, "could not keep a fetched chunk")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(chunk = %id, error = %e, "could not keep a fetched chunk")
                        }
                        Err(e) => {
                            tracing::warn!(chunk = %id, error = %e, "could not keep a fetched chunk")
                        }
                    }
                    return Ok(data);
                }
                Err(e) => errors.push(format!("node {node}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Checks, before a pull is answered, that every chunk in `chunks` is
    /// here or held by a reachable peer, so a blob that cannot be served
    /// whole fails with an error instead of a truncated `200`.
    pub async fn ensure_available(&self, chunks: &[ChunkId]) -> Result<()> {
        let store = self.store.clone();
        let wanted = chunks.to_vec();
        let missing: Vec<ChunkId> = tokio::task::spawn_blocking(move || {
            let mut seen = BTreeSet::new();
            wanted
                .into_iter()
                .filter(|id| seen.insert(*id) && !store.chunks.contains(id))
                .collect()
        })
        .await?;
        if missing.is_empty() {
            return Ok(());
        }
        let me = self.me();
        let (members, _) = self.members();
        // Every peer is asked at once, and the answer comes as soon as the
        // peers that answered cover every missing chunk: a peer that
        // vanished (or one this node wrongly thinks down) costs the pull
        // its timeout only when its answer is the one that matters.
        let mut asks: futures_util::stream::FuturesUnordered<_> = members
            .iter()
            .filter(|(id, info)| **id != me && !info.rpc_addr.is_empty())
            .map(|(id, info)| {
                let ids = missing.clone();
                async move {
                    let r = tokio::time::timeout(
                        AVAILABILITY_TIMEOUT,
                        rpc::has_chunks(&self.peers, *id, &info.rpc_addr, &ids),
                    )
                    .await;
                    match r {
                        Ok(Ok(present)) => present,
                        _ => vec![false; ids.len()],
                    }
                }
            })
            .collect();
        let mut held = vec![false; missing.len()];
        while !held.iter().all(|h| *h) {
            let Some(answer) = futures_util::StreamExt::next(&mut asks).await else {
                break;
            };
            for (h, a) in held.iter_mut().zip(answer) {
                *h |= a;
            }
        }
        let unheld: Vec<ChunkId> = missing
            .iter()
            .zip(&held)
            .filter(|(_, h)| !**h)
            .map(|(id, _)| *id)
            .collect();
        let missing = unheld;
        match missing.first() {
            None => Ok(()),
            Some(id) => {
                tracing::error!(chunk = %id, missing = missing.len(), "a pull needs chunks no reachable node holds");
                Err(Error::ChunkUnavailable {
                    chunk: *id,
                    missing: missing.len(),
                })
            }
        }
    }

    /// Streams bytes `start..end` of the blob made of `chunks`. The next
    /// chunks are read while the current one is sent; a chunk that fails
    /// verification everywhere ends the stream with an error, so a client
    /// never gets bytes that are not the blob's.
    pub fn stream(
        self: &Arc<Self>,
        chunks: Vec<ChunkRef>,
        holders: Vec<NodeId>,
        start: u64,
        end: u64,
    ) -> mpsc::Receiver<std::io::Result<Bytes>> {
        // One chunk waits for the connection while the next is read.
        let (tx, rx) = mpsc::channel(1);
        let this = self.clone();
        tokio::spawn(async move {
            let pieces = pieces_in_range(&chunks, start, end);
            let holders = Arc::new(holders);
            let fetch = |id: ChunkId| {
                let this = this.clone();
                let holders = holders.clone();
                tokio::spawn(async move { this.get(id, &holders).await })
            };
            let mut ahead = VecDeque::new();
            let mut next = 0;
            for i in 0..pieces.len() {
                while next < pieces.len() && ahead.len() < READ_AHEAD_CHUNKS {
                    let share = if ahead.is_empty() {
                        None
                    } else {
                        match this.read_ahead.clone().try_acquire_owned() {
                            Ok(share) => Some(share),
                            Err(_) => break,
                        }
                    };
                    ahead.push_back((fetch(pieces[next].0), share));
                    next += 1;
                }
                let Some((current, _share)) = ahead.pop_front() else {
                    break;
                };
                let data = match current.await {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        tracing::error!(chunk = %pieces[i].0, error = %e, "cannot serve chunk");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                };
                let (_, from, to) = pieces[i];
                let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
                    return;
                };
                if to > data.len() {
                    let _ = tx
                        .send(Err(std::io::Error::other("chunk shorter than its record")))
                        .await;
                    return;
                }
                if tx.send(Ok(data.slice(from..to))).await.is_err() {
                    return; // The client went away.
                }
            }
        });
        rx
    }
}

/// The chunks of a blob that overlap `start..end`, each with the slice of
/// it to send.
pub fn pieces_in_range(chunks: &[ChunkRef], start: u64, end: u64) -> Vec<(ChunkId, u64, u64)> {
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for c in chunks {
        let c_end = offset + u64::from(c.len);
        if c_end > start && offset < end {
            let from = start.saturating_sub(offset);
            let to = end.min(c_end) - offset;
            pieces.push((c.id, from, to));
        }
        offset = c_end;
        if offset >= end {
            break;
        }
    }
    pieces
}
