//! Both ends of the `Chunks` RPC: the client calls this node makes (put a
//! chunk, get one, ask which chunks a peer holds, ask for its report) and
//! the service it offers its peers, with the one function that frames a
//! chunk into pieces for either direction.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use stowage_proto::v1::chunks_server::{Chunks, ChunksServer};
use stowage_proto::v1::{
    ChunkPiece, ChunkReport, ChunkReportRequest, GetChunkRequest, HasChunksReply, HasChunksRequest,
    PutChunkReply,
};
use stowage_storage::chunker::aligned_buffer;
use stowage_storage::types::{ChunkId, NodeId};
use stowage_storage::Store;
use tonic::{Request, Response, Status, Streaming};

use super::repair::{HealthBoard, NodeHealth};
use crate::cluster::peers::{Peers, CHUNK_PIECE_BYTES};

/// A peer gets this long to store one chunk.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
const GET_TIMEOUT: Duration = Duration::from_secs(30);
/// A chunk stream that moves no piece for this long was abandoned: its
/// sender vanished (a lost zone drops packets, so nothing resets the
/// connection) or stalled. Both ends give up instead of holding a pull, or
/// an inbound write permit, until HTTP/2 keep-alive notices.
const PIECE_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Small questions (which chunks, a report) get a short deadline: a peer
/// that does not answer them quickly is treated as not holding anything
/// (or, for a report, as not answering).
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest chunk a peer may send; chunks are at most `chunk_size_bytes`,
/// which configuration caps at 256 MiB.
const MAX_CHUNK_BYTES: usize = 256 << 20;
/// Chunk ids asked about in one `Has` call.
pub const HAS_BATCH: usize = 4096;

/// A chunk as wire pieces: slices of its buffer, not copies, with the
/// chunk's name in the first piece only.
fn pieces(id: &ChunkId, data: &Bytes) -> Vec<ChunkPiece> {
    let id_bytes = Bytes::copy_from_slice(id.as_bytes());
    (0..data.len().max(1))
        .step_by(CHUNK_PIECE_BYTES)
        .map(|start| ChunkPiece {
            chunk_id: if start == 0 {
                id_bytes.clone()
            } else {
                Bytes::new()
            },
            data: data.slice(start.min(data.len())..(start + CHUNK_PIECE_BYTES).min(data.len())),
        })
        .collect()
}

fn chunk_id_of(bytes: &[u8]) -> Result<ChunkId, Status> {
    let id: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Status::invalid_argument("chunk_id must be 32 bytes"))?;
    Ok(ChunkId::from_bytes(id))
}

// ---- client side ----

pub async fn put_chunk(
    peers: &Peers,
    target: NodeId,
    addr: &str,
    id: ChunkId,
    data: Bytes,
) -> Result<(), PutFailure> {
    let mut client = peers.chunks(target, addr).map_err(|e| PutFailure {
        disk_full: false,
        why: e.to_string(),
    })?;
    let mut req = Request::new(tokio_stream::iter(pieces(&id, &data)));
    req.set_timeout(PUT_TIMEOUT);
    client.put(req).await.map(|_| ()).map_err(|s| PutFailure {
        disk_full: s.code() == tonic::Code::ResourceExhausted,
        why: s.to_string(),
    })
}

/// Why a copy was not written; `disk_full` (the peer is below its reserve)
/// tells the write fan-out that a lost quorum is a 507, not a "retry soon".
#[derive(Debug)]
pub struct PutFailure {
    pub disk_full: bool,
    pub why: String,
}

impl std::fmt::Display for PutFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// A verified copy of `id` from `node`.
pub async fn get_chunk(
    peers: &Peers,
    node: NodeId,
    addr: &str,
    id: ChunkId,
) -> Result<Bytes, String> {
    let mut client = peers.chunks(node, addr).map_err(|e| e.to_string())?;
    let mut req = Request::new(GetChunkRequest {
        chunk_id: Bytes::copy_from_slice(id.as_bytes()),
    });
    req.set_timeout(GET_TIMEOUT);
    let mut stream = client
        .get(req)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let mut data = Vec::new();
    while let Some(piece) = next_piece(&mut stream)
        .await
        .map_err(|s| s.message().to_owned())?
    {
        data.extend_from_slice(&piece.data);
    }
    if ChunkId::of(&data) != id {
        return Err("the copy it sent is corrupt".into());
    }
    Ok(Bytes::from(data))
}

/// Which of `ids` `node` holds, in order.
pub async fn has_chunks(
    peers: &Peers,
    node: NodeId,
    addr: &str,
    ids: &[ChunkId],
) -> Result<Vec<bool>, String> {
    let mut client = peers.chunks(node, addr).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(ids.len());
    for batch in ids.chunks(HAS_BATCH) {
        let mut req = Request::new(HasChunksRequest {
            chunk_ids: batch
                .iter()
                .map(|id| Bytes::copy_from_slice(id.as_bytes()))
                .collect(),
        });
        req.set_timeout(ASK_TIMEOUT);
        let reply = client
            .has(req)
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        if reply.present.len() != batch.len() {
            return Err("answered for another number of chunks".into());
        }
        out.extend(reply.present);
    }
    Ok(out)
}

pub async fn report(peers: &Peers, node: NodeId, addr: &str) -> Result<NodeHealth, String> {
    let mut client = peers.chunks(node, addr).map_err(|e| e.to_string())?;
    let mut req = Request::new(ChunkReportRequest {});
    req.set_timeout(ASK_TIMEOUT);
    let reply = client
        .report(req)
        .await
        .map_err(|s| s.message().to_owned())?;
    Ok(reply.into_inner().into())
}

impl From<ChunkReport> for NodeHealth {
    fn from(r: ChunkReport) -> Self {
        NodeHealth {
            held_chunks: r.held_chunks,
            held_bytes: r.held_bytes,
            missing_chunks: r.missing_chunks,
            under_replicated_blobs: r.under_replicated_blobs,
            misplaced_chunks: r.misplaced_chunks,
            queued: r.queued,
            repaired_chunks: r.repaired_chunks,
            repaired_bytes: r.repaired_bytes,
            last_sweep_unix_ms: (r.last_sweep_unix_ms > 0).then_some(r.last_sweep_unix_ms),
            lost_chunks: r.lost_chunks,
            swept_members: r.swept_members,
        }
    }
}

impl From<NodeHealth> for ChunkReport {
    fn from(h: NodeHealth) -> Self {
        ChunkReport {
            held_chunks: h.held_chunks,
            held_bytes: h.held_bytes,
            missing_chunks: h.missing_chunks,
            under_replicated_blobs: h.under_replicated_blobs,
            misplaced_chunks: h.misplaced_chunks,
            queued: h.queued,
            repaired_chunks: h.repaired_chunks,
            repaired_bytes: h.repaired_bytes,
            last_sweep_unix_ms: h.last_sweep_unix_ms.unwrap_or(0),
            lost_chunks: h.lost_chunks,
            swept_members: h.swept_members,
        }
    }
}

/// The next piece of a chunk stream, or an error once it has been idle for
/// `PIECE_IDLE_TIMEOUT`.
async fn next_piece(stream: &mut Streaming<ChunkPiece>) -> Result<Option<ChunkPiece>, Status> {
    tokio::time::timeout(PIECE_IDLE_TIMEOUT, stream.message())
        .await
        .map_err(|_| Status::deadline_exceeded("the chunk stream stalled"))?
}

// ---- server side ----

pub struct ChunksService {
    store: Arc<Store>,
    health: Arc<HealthBoard>,
    /// Bounds the chunks this node buffers for peers at once, and so the
    /// memory their uploads can make it hold.
    inbound: Arc<tokio::sync::Semaphore>,
    chunk_size_bytes: usize,
}

type PieceStream = Pin<Box<dyn Stream<Item = Result<ChunkPiece, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn out_of_space(e: stowage_storage::Error) -> Status {
    Status::resource_exhausted(e.to_string())
}

#[tonic::async_trait]
impl Chunks for ChunksService {
    async fn put(
        &self,
        req: Request<Streaming<ChunkPiece>>,
    ) -> Result<Response<PutChunkReply>, Status> {
        let _permit = self
            .inbound
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        // Refused before the chunk is received: a node below its free-space
        // reserve takes no copies (the writer counts it as a failed copy and
        // this node's repair fetches it once space is back).
        self.store.space.check().map_err(out_of_space)?;
        let mut stream = req.into_inner();
        let first = next_piece(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty chunk stream"))?;
        let id = chunk_id_of(&first.chunk_id)?;
        // Aligned like the chunker's buffers, so the chunk goes to disk
        // with O_DIRECT without another copy.
        let mut data = aligned_buffer(self.chunk_size_bytes);
        data.extend_from_slice(&first.data);
        while let Some(piece) = next_piece(&mut stream).await? {
            if data.len() + piece.data.len() > MAX_CHUNK_BYTES {
                return Err(Status::invalid_argument("chunk too large"));
            }
            data.extend_from_slice(&piece.data);
        }
        let data = data.freeze();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.chunks.put_verified(id, &data))
            .await
            .map_err(internal)?
            .map_err(|e| match e {
                stowage_storage::Error::ChunkCorrupt(_) => Status::invalid_argument(e.to_string()),
                e if e.is_disk_full() => out_of_space(e),
                other => internal(other),
            })?;
        Ok(Response::new(PutChunkReply {}))
    }

    type GetStream = PieceStream;

    async fn get(&self, req: Request<GetChunkRequest>) -> Result<Response<PieceStream>, Status> {
        let id = chunk_id_of(&req.into_inner().chunk_id)?;
        let store = self.store.clone();
        let data = tokio::task::spawn_blocking(move || store.chunks.get(&id))
            .await
            .map_err(internal)?
            .map_err(|e| match e {
                stowage_storage::Error::ChunkMissing(_) => Status::not_found(e.to_string()),
                stowage_storage::Error::ChunkCorrupt(_) => Status::data_loss(e.to_string()),
                other => internal(other),
            })?;
        let pieces = pieces(&id, &data).into_iter().map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(pieces))))
    }

    async fn has(
        &self,
        req: Request<HasChunksRequest>,
    ) -> Result<Response<HasChunksReply>, Status> {
        let ids = req
            .into_inner()
            .chunk_ids
            .iter()
            .map(|b| chunk_id_of(b))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.len() > HAS_BATCH {
            return Err(Status::invalid_argument(
                "too many chunk ids in one request",
            ));
        }
        let store = self.store.clone();
        let present = tokio::task::spawn_blocking(move || {
            ids.iter().map(|id| store.chunks.contains(id)).collect()
        })
        .await
        .map_err(internal)?;
        Ok(Response::new(HasChunksReply { present }))
    }

    async fn report(
        &self,
        _req: Request<ChunkReportRequest>,
    ) -> Result<Response<ChunkReport>, Status> {
        Ok(Response::new(self.health.snapshot().into()))
    }
}

/// The `Chunks` service for the cluster RPC server.
pub fn service(
    store: Arc<Store>,
    health: Arc<HealthBoard>,
    chunk_size_bytes: usize,
    // Chunks taken from peers at once, each buffered whole before it is
    // written and verified: the same bound as this node's own writes.
    inbound_chunk_writes: usize,
) -> ChunksServer<ChunksService> {
    ChunksServer::new(ChunksService {
        store,
        health,
        inbound: Arc::new(tokio::sync::Semaphore::new(inbound_chunk_writes.max(1))),
        chunk_size_bytes,
    })
    .max_decoding_message_size(4 * CHUNK_PIECE_BYTES)
    .max_encoding_message_size(4 * CHUNK_PIECE_BYTES)
}
