//! Chunk I/O for the registry. Writes: durable on this node, and streamed to
//! the other nodes placement names, answered once `write_quorum` copies
//! spanning two zones (where the cluster has two) are fsynced. Reads:
//! verified local copy, else fetched from a node that has it (verified,
//! kept), reading the next chunk while the current one is sent.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use stowage_proto::v1::{ChunkPiece, GetChunkRequest};
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::{ChunkId, NodeId, Zone};
use stowage_storage::Store;
use tokio::sync::mpsc;

use crate::cluster::peers::{Peers, CHUNK_PIECE_BYTES};
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::placement::{self, Member};

/// A peer gets this long to store one chunk.
const REMOTE_PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the quorum is met, slower copies get this much longer before the
/// write is answered without them (they are then under-replicated).
const STRAGGLER_GRACE: Duration = Duration::from_millis(500);
const REMOTE_GET_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks read ahead of the one being sent: enough to keep the disk (or a
/// peer) busy while the client drains the current one, few enough that a
/// pull holds only a few chunks in memory.
const READ_AHEAD_CHUNKS: usize = 3;

/// How many copies a chunk gets, and how many must be durable before a
/// write is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    pub replicas: usize,
    pub write_quorum: usize,
}

pub struct ChunkIo {
    store: Arc<Store>,
    consensus: Arc<Consensus>,
    peers: Arc<Peers>,
    replication: Replication,
    /// Chunks written by requests still in progress, which nothing durable
    /// references yet; the sweeper must not take them whatever their age.
    pinned: Mutex<HashMap<ChunkId, usize>>,
}

/// Keeps chunks pinned until the upload session or blob record that
/// references them is stored; unpins on drop.
pub struct Pins {
    io: Arc<ChunkIo>,
    ids: Vec<ChunkId>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut pinned = self.io.pinned.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            if let Some(n) = pinned.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    pinned.remove(id);
                }
            }
        }
    }
}

impl Pins {
    pub fn new(io: &Arc<ChunkIo>) -> Self {
        Pins {
            io: io.clone(),
            ids: Vec::new(),
        }
    }

    pub fn absorb(&mut self, mut other: Pins) {
        self.ids.append(&mut other.ids);
    }
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
    ) -> Self {
        ChunkIo {
            store,
            consensus,
            peers,
            replication,
            pinned: Mutex::new(HashMap::new()),
        }
    }

    pub fn me(&self) -> NodeId {
        self.consensus.id()
    }

    /// Writes a chunk durably on this node (blocking), pinned in `pins`
    /// before it exists on disk.
    pub fn put_local(self: &Arc<Self>, data: &[u8], pins: &mut Pins) -> Result<ChunkRef> {
        let len =
            u32::try_from(data.len()).map_err(|_| Error::SizeInvalid("chunk larger than 4 GiB"))?;
        let id = ChunkId::of(data);
        *self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
        pins.ids.push(id);
        self.store.chunks.put_as(id, data)?;
        Ok(ChunkRef { id, len })
    }

    /// Whether this node is alone, so no chunk ever leaves it.
    pub fn is_single_node(&self) -> bool {
        self.consensus.members().len() <= 1
    }

    /// Writes a chunk here and on the nodes placement names for it.
    pub async fn put(self: &Arc<Self>, data: Bytes) -> Result<Written> {
        let this = self.clone();
        let local = data.clone();
        let (chunk, pins) = tokio::task::spawn_blocking(move || {
            let mut pins = Pins::new(&this);
            let r = this.put_local(&local, &mut pins)?;
            Ok::<_, Error>((r, pins))
        })
        .await??;
        let holders = self.replicate(chunk.id, data).await?;
        Ok(Written {
            chunk,
            pins,
            holders,
        })
    }

    /// Sends a chunk this node holds to the other placement targets and
    /// waits for the write quorum. Returns every node known to hold it.
    pub async fn replicate(&self, id: ChunkId, data: Bytes) -> Result<BTreeSet<NodeId>> {
        let me = self.me();
        let members = self.consensus.members();
        let mut holders = BTreeSet::from([me]);
        if members.len() <= 1 {
            return Ok(holders);
        }
        let zone_of: HashMap<NodeId, Zone> = members
            .iter()
            .map(|(id, n)| (*id, n.zone.clone()))
            .collect();
        let all: Vec<Member> = members
            .iter()
            .map(|(id, n)| Member {
                id: *id,
                zone: n.zone.clone(),
            })
            .collect();
        let targets: Vec<NodeId> = placement::place(&id, &all, self.replication.replicas)
            .into_iter()
            .filter(|t| *t != me)
            .collect();
        let need = self.replication.write_quorum.min(members.len());
        let zone_count = zone_of.values().collect::<BTreeSet<_>>().len();
        let need_zones = zone_count.min(2);
        let satisfied = |h: &BTreeSet<NodeId>| {
            let zones: BTreeSet<&Zone> = h.iter().filter_map(|n| zone_of.get(n)).collect();
            h.len() >= need && zones.len() >= need_zones
        };
        let mut sends: FuturesUnordered<_> = targets
            .iter()
            .filter_map(|t| members.get(t).map(|info| (*t, info.rpc_addr.clone())))
            .map(|(t, addr)| {
                let data = data.clone();
                async move { (t, self.send(t, &addr, id, data).await) }
            })
            .collect();
        let mut failures = Vec::new();
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
            return Err(Error::Unavailable(format!(
                "chunk {id} reached {} of the {need} copies a write needs ({})",
                holders.len(),
                failures.join("; ")
            )));
        }
        // Give the remaining copies a moment; whatever misses it stays
        // under-replicated until read or repaired.
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

    async fn send(
        &self,
        target: NodeId,
        addr: &str,
        id: ChunkId,
        data: Bytes,
    ) -> Result<(), String> {
        let mut client = self.peers.chunks(target, addr).map_err(|e| e.to_string())?;
        // Pieces are slices of the chunk's buffer, not copies.
        let id_bytes = Bytes::copy_from_slice(id.as_bytes());
        let pieces: Vec<ChunkPiece> = if data.is_empty() {
            vec![ChunkPiece {
                chunk_id: id_bytes,
                data: Bytes::new(),
            }]
        } else {
            (0..data.len())
                .step_by(CHUNK_PIECE_BYTES)
                .map(|start| ChunkPiece {
                    chunk_id: if start == 0 {
                        id_bytes.clone()
                    } else {
                        Bytes::new()
                    },
                    data: data.slice(start..(start + CHUNK_PIECE_BYTES).min(data.len())),
                })
                .collect()
        };
        let mut req = tonic::Request::new(tokio_stream::iter(pieces));
        req.set_timeout(REMOTE_PUT_TIMEOUT);
        client.put(req).await.map(|_| ()).map_err(|s| s.to_string())
    }

    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
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
                    tracing::error!(chunk = %id, "local copy is corrupt; fetching it from a peer");
                }
                self.fetch(id, holders).await.map_err(|why| {
                    tracing::error!(chunk = %id, %why, "no node could provide the chunk");
                    Error::Storage(e)
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn fetch(self: &Arc<Self>, id: ChunkId, holders: &[NodeId]) -> Result<Bytes, String> {
        let me = self.me();
        let members = self.consensus.members();
        if members.len() <= 1 {
            return Err("no other node to ask".into());
        }
        let all: Vec<Member> = members
            .iter()
            .map(|(n, info)| Member {
                id: *n,
                zone: info.zone.clone(),
            })
            .collect();
        let mut order: Vec<NodeId> = holders.to_vec();
        order.extend(placement::place(&id, &all, all.len()));
        let mut seen = BTreeSet::new();
        let mut errors = Vec::new();
        for node in order {
            if node == me || !seen.insert(node) {
                continue;
            }
            let Some(info) = members.get(&node) else {
                continue;
            };
            match self.fetch_from(node, &info.rpc_addr, id).await {
                Ok(data) => {
                    let store = self.store.clone();
                    let kept = data.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        store.chunks.remove(&id)?;
                        store.chunks.put_verified(id, &kept)
                    })
                    .await;
                    match stored {
                        Ok(Ok(())) => {}
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

    async fn fetch_from(&self, node: NodeId, addr: &str, id: ChunkId) -> Result<Bytes, String> {
        let mut client = self.peers.chunks(node, addr).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(GetChunkRequest {
            chunk_id: Bytes::copy_from_slice(id.as_bytes()),
        });
        req.set_timeout(REMOTE_GET_TIMEOUT);
        let mut stream = client
            .get(req)
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut data = Vec::new();
        while let Some(piece) = stream.message().await.map_err(|s| s.to_string())? {
            data.extend_from_slice(&piece.data);
        }
        if ChunkId::of(&data) != id {
            return Err("the copy it sent is corrupt".into());
        }
        Ok(Bytes::from(data))
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
        let (tx, rx) = mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(async move {
            // Pieces of the blob that overlap the range, with the slice of
            // each chunk to send.
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
            let holders = Arc::new(holders);
            let fetch = |id: ChunkId| {
                let this = this.clone();
                let holders = holders.clone();
                tokio::spawn(async move { this.get(id, &holders).await })
            };
            let mut ahead: VecDeque<_> = pieces
                .iter()
                .take(READ_AHEAD_CHUNKS)
                .map(|p| fetch(p.0))
                .collect();
            for i in 0..pieces.len() {
                let Some(current) = ahead.pop_front() else {
                    break;
                };
                if let Some(p) = pieces.get(i + READ_AHEAD_CHUNKS) {
                    ahead.push_back(fetch(p.0));
                }
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
