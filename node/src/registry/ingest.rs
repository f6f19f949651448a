//! The upload data path: a request body flows through a bounded pipeline
//! (network → hashing thread → parallel durable chunk writes), so memory
//! stays flat whatever the blob size and hashing overlaps with fsync.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use stowage_storage::chunker::Chunker;
use stowage_storage::meta::ChunkRef;
use tokio::sync::{mpsc, Semaphore};

use super::chunks::{ChunkIo, Pins};
use crate::error::{Error, Result};

/// Bodies that end within this many bytes are hashed and written in one
/// blocking call, skipping the pipeline's thread hand-offs (small layers,
/// configs).
const SMALL_BODY_BYTES: usize = 256 * 1024;
/// Frames queued between the network and the hashing thread.
const FRAME_QUEUE: usize = 16;

/// Shared limits of the upload data path.
pub struct Ingest {
    pub chunks: Arc<ChunkIo>,
    /// Caps chunk writes in flight across all uploads, which caps the memory
    /// they hold at `permits × chunk size`.
    pub write_permits: Arc<Semaphore>,
}

/// What one body added to an upload.
pub struct Ingested {
    pub chunker: Chunker,
    pub chunks: Vec<ChunkRef>,
    /// Hold until the chunks are referenced by something durable.
    pub pins: Pins,
}

impl Ingest {
    /// Streams `body` into chunks. `limit_bytes`, when given, is the exact
    /// number of bytes the client declared; a body of another length is
    /// rejected (its chunks become garbage for the sweeper).
    pub async fn body<B>(
        &self,
        mut chunker: Chunker,
        mut body: B,
        limit_bytes: Option<u64>,
    ) -> Result<Ingested>
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
            match next_data(&mut body).await? {
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
            return tokio::task::spawn_blocking(move || {
                let mut sealed = Vec::new();
                for piece in &head {
                    chunker.push(piece, &mut sealed);
                }
                sealed.extend(chunker.flush());
                let mut pins = Pins::new(&chunks);
                let refs = sealed
                    .iter()
                    .map(|c| chunks.put_local(c, &mut pins))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Ingested {
                    chunker,
                    chunks: refs,
                    pins,
                })
            })
            .await?;
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
            let mut pins = Pins::new(&chunk_io);
            for w in writes {
                let (r, p) = w.await??;
                out.push(r);
                pins.absorb(p);
            }
            Ok::<_, Error>((out, pins))
        });

        let fed: Result<()> = async {
            for data in head {
                frame_tx.send(data).await.map_err(|_| pipeline_broke())?;
            }
            while let Some(data) = next_data(&mut body).await? {
                received += data.len() as u64;
                check_limit(received, limit_bytes)?;
                frame_tx.send(data).await.map_err(|_| pipeline_broke())?;
            }
            check_exact(received, limit_bytes)
        }
        .await;
        drop(frame_tx);
        let chunker = hasher.await?;
        let written = writer.await?;
        fed?;
        let (chunks, pins) = written?;
        Ok(Ingested {
            chunker,
            chunks,
            pins,
        })
    }
}

fn pipeline_broke() -> Error {
    Error::Unavailable("the upload pipeline stopped".into())
}

async fn next_data<B>(body: &mut B) -> Result<Option<Bytes>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        match body.frame().await {
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
