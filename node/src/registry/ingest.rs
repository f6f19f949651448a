//! The upload data path: a request body flows through a bounded pipeline
//! (network → hashing thread → parallel durable chunk writes), so memory
//! stays flat whatever the blob size and hashing overlaps with fsync.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use stowage_storage::chunker::Chunker;
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::NodeId;
use tokio::sync::{mpsc, Semaphore};

use crate::chunks::{ChunkIo, Pins, Written};
use crate::error::{Error, Result};

/// Bodies that end within this many bytes are hashed and written in one
/// blocking call, skipping the pipeline's thread hand-offs (small layers,
/// configs).
const SMALL_BODY_BYTES: usize = 256 * 1024;
/// Frames queued between the network and the hashing thread.
const FRAME_QUEUE: usize = 16;
/// When a push is refused before its body is read (or the pipeline stops
/// taking it), up to this much of the rest is read and dropped before the
/// error is answered: hyper closes a connection whose body is left unread,
/// so an HTTP/1.1 client that sends its whole body before reading the
/// answer would see a reset instead of the error (a 507 on a full disk).
/// A longer rest is cut off; the client's retry gets the error at once.
/// (A chunk write that fails does not stop the pipeline: the body is read
/// to its end and the write's error answered.)
const DRAIN_AFTER_FAILURE_BYTES: u64 = 16 << 20;

/// Shared limits of the upload data path.
pub struct Ingest {
    pub chunks: Arc<ChunkIo>,
    /// Caps chunk writes in flight across all uploads, which caps the memory
    /// they hold at `permits × chunk size`.
    pub write_permits: Arc<Semaphore>,
    /// A body that sends nothing for this long fails, so a stalled client
    /// does not hold its upload session (and its lock) forever.
    pub body_idle: std::time::Duration,
}

/// The chunks of one body, durably stored.
pub struct Stored {
    pub chunks: Vec<ChunkRef>,
    /// Hold until the chunks are referenced by something durable.
    pub pins: Pins,
    /// Nodes that hold every one of these chunks.
    pub holders: BTreeSet<NodeId>,
}

pub type StoredFuture = Pin<Box<dyn Future<Output = Result<Stored>> + Send>>;

/// A body fully received and hashed; its last chunks may still be on their
/// way to disk, which `stored` resolves once they are.
pub struct Received {
    /// The hash state and size after this body.
    pub chunker: Chunker,
    pub stored: StoredFuture,
}

/// Nodes in both sets; `None` stands for "no chunk yet", the identity.
fn intersect(acc: Option<BTreeSet<NodeId>>, next: &BTreeSet<NodeId>) -> Option<BTreeSet<NodeId>> {
    Some(match acc {
        None => next.clone(),
        Some(a) => a.intersection(next).copied().collect(),
    })
}

impl Ingest {
    /// The next frame of an upload body, counted in the metrics as it
    /// arrives (chunked bodies declare no length).
    async fn next<B>(&self, body: &mut B) -> Result<Option<Bytes>>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let data = next_data(body, self.body_idle).await?;
        if let Some(d) = &data {
            self.chunks.metrics().received(d.len());
        }
        Ok(data)
    }

    /// Streams `body` into chunks and waits until they are all stored.
    /// `limit_bytes`, when given, is the exact number of bytes the client
    /// declared; a body of another length is rejected (its chunks become
    /// garbage for the sweeper).
    pub async fn body<B>(
        &self,
        chunker: Chunker,
        body: B,
        limit_bytes: Option<u64>,
    ) -> Result<(Chunker, Stored)>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let received = self.receive(chunker, body, limit_bytes).await?;
        Ok((received.chunker, received.stored.await?))
    }

    /// Streams `body` into chunks and returns once it is all received and
    /// hashed, leaving the last chunk writes to `Received::stored`: a
    /// client's next request can then be taken while they complete.
    pub async fn receive<B>(
        &self,
        mut chunker: Chunker,
        mut body: B,
        limit_bytes: Option<u64>,
    ) -> Result<Received>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let mut received = 0u64;
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_bytes = 0usize;
        let mut ended = false;
        // Gather the start of the body; a small body ends here.
        while head_bytes <= SMALL_BODY_BYTES {
            match self.next(&mut body).await? {
                Some(data) => {
                    received += data.len() as u64;
                    check_limit(received, limit_bytes)?;
                    head_bytes += data.len();
                    head.push(data);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            check_exact(received, limit_bytes)?;
            let chunks = self.chunks.clone();
            let permits = self.write_permits.clone();
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| Error::Unavailable("shutting down".into()))?;
            let io = chunks.clone();
            let (chunker, written, pins) = tokio::task::spawn_blocking(move || {
                let mut sealed = Vec::new();
                for piece in &head {
                    chunker.push(piece, &mut sealed);
                }
                sealed.extend(chunker.flush());
                let mut pins = Pins::new(io.pins());
                let written = sealed
                    .into_iter()
                    .map(|c| io.put_local(&c, &mut pins).map(|r| (r, c)))
                    .collect::<Result<Vec<_>>>()?;
                Ok::<_, Error>((chunker, written, pins))
            })
            .await??;
            let replicated = futures_util::future::try_join_all(
                written
                    .iter()
                    .map(|(r, data)| chunks.replicate(r.id, data.clone())),
            )
            .await?;
            let holders = replicated
                .iter()
                .fold(None, intersect)
                .unwrap_or_else(|| BTreeSet::from([chunks.me()]));
            let stored = Stored {
                chunks: written.into_iter().map(|(r, _)| r).collect(),
                pins,
                holders,
            };
            return Ok(Received {
                chunker,
                stored: Box::pin(std::future::ready(Ok(stored))),
            });
        }

        let (frame_tx, mut frame_rx) = mpsc::channel::<Bytes>(FRAME_QUEUE);
        let (sealed_tx, mut sealed_rx) = mpsc::channel::<Bytes>(1);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut sealed = Vec::new();
            while let Some(data) = frame_rx.blocking_recv() {
                chunker.push(&data, &mut sealed);
                for c in sealed.drain(..) {
                    if sealed_tx.blocking_send(c).is_err() {
                        return chunker;
                    }
                }
            }
            if let Some(c) = chunker.flush() {
                let _ = sealed_tx.blocking_send(c);
            }
            chunker
        });
        let chunk_io = self.chunks.clone();
        let permits = self.write_permits.clone();
        let writer = tokio::spawn(async move {
            let mut writes = VecDeque::new();
            while let Some(data) = sealed_rx.recv().await {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Unavailable("shutting down".into()))?;
                let chunk_io = chunk_io.clone();
                writes.push_back(tokio::spawn(async move {
                    let _permit = permit;
                    chunk_io.put(data).await
                }));
            }
            let mut out = Vec::with_capacity(writes.len());
            let mut pins = Pins::new(chunk_io.pins());
            let mut holders: Option<BTreeSet<NodeId>> = None;
            for w in writes {
                let Written {
                    chunk,
                    pins: p,
                    holders: h,
                } = w.await??;
                out.push(chunk);
                pins.absorb(p);
                holders = intersect(holders, &h);
            }
            let holders = holders.unwrap_or_else(|| BTreeSet::from([chunk_io.me()]));
            Ok::<_, Error>((out, pins, holders))
        });

        // `None`: the pipeline stopped taking frames (its hasher or writer
        // ended early); the writer's error, if it has one, is the cause and
        // the one to report.
        let fed: Result<(), Option<Error>> = async {
            for data in head {
                frame_tx.send(data).await.map_err(|_| None)?;
            }
            while let Some(data) = self.next(&mut body).await.map_err(Some)? {
                received += data.len() as u64;
                check_limit(received, limit_bytes).map_err(Some)?;
                frame_tx.send(data).await.map_err(|_| None)?;
            }
            check_exact(received, limit_bytes).map_err(Some)
        }
        .await;
        drop(frame_tx);
        // Hashing ends soon after the body does; the writes may take longer.
        let chunker = hasher.await?;
        let stored = async move {
            let (chunks, pins, holders) = writer.await??;
            Ok(Stored {
                chunks,
                pins,
                holders,
            })
        };
        if let Err(e) = fed {
            if e.is_none() {
                drain(&mut body, self.body_idle).await;
            }
            // Let the pipeline wind down before reporting the failure.
            let written = stored.await;
            return Err(match (e, written) {
                (Some(e), _) => e,
                (None, Err(cause)) => cause,
                (None, Ok(_)) => pipeline_broke(),
            });
        }
        Ok(Received {
            chunker,
            stored: Box::pin(stored),
        })
    }
}

fn pipeline_broke() -> Error {
    Error::Unavailable("the upload pipeline stopped".into())
}

async fn next_data<B>(body: &mut B, idle: std::time::Duration) -> Result<Option<Bytes>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| {
                Error::Body(format!(
                    "the body sent nothing for {} s; the session resumes at its last stored offset",
                    idle.as_secs()
                ))
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::Body(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Reads and drops what is left of `body`, up to
/// `DRAIN_AFTER_FAILURE_BYTES`; any failure just ends it.
pub(super) async fn drain<B>(body: &mut B, idle: std::time::Duration)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut dropped = 0u64;
    while dropped < DRAIN_AFTER_FAILURE_BYTES {
        match next_data(body, idle).await {
            Ok(Some(data)) => dropped += data.len() as u64,
            Ok(None) | Err(_) => return,
        }
    }
}

fn check_limit(received: u64, limit: Option<u64>) -> Result<()> {
    match limit {
        Some(l) if received > l => Err(Error::SizeInvalid(
            "body is longer than its Content-Length or Content-Range",
        )),
        _ => Ok(()),
    }
}

fn check_exact(received: u64, limit: Option<u64>) -> Result<()> {
    match limit {
        Some(l) if received != l => Err(Error::SizeInvalid(
            "body is shorter than its Content-Length or Content-Range",
        )),
        _ => Ok(()),
    }
}
