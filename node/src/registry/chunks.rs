//! Chunk I/O for the registry: durable writes of new chunks and verified,
//! prefetching reads that stream a blob (or a byte range of it) to a client
//! in bounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use stowage_storage::meta::ChunkRef;
use stowage_storage::types::ChunkId;
use stowage_storage::Store;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

pub struct ChunkIo {
    store: Arc<Store>,
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

impl ChunkIo {
    pub fn new(store: Arc<Store>) -> Self {
        ChunkIo {
            store,
            pinned: Mutex::new(HashMap::new()),
        }
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

    pub async fn put(self: &Arc<Self>, data: Bytes) -> Result<(ChunkRef, Pins)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut pins = Pins::new(&this);
            let r = this.put_local(&data, &mut pins)?;
            Ok((r, pins))
        })
        .await?
    }

    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    pub async fn get(self: &Arc<Self>, id: ChunkId) -> Result<Bytes> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.chunks.get(&id)).await??)
    }

    /// Streams bytes `start..end` of the blob made of `chunks`. The next
    /// chunk is read while the current one is sent; a chunk that fails
    /// verification ends the stream with an error, so a client never gets
    /// bytes that are not the blob's.
    pub fn stream(
        self: &Arc<Self>,
        chunks: Vec<ChunkRef>,
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
            let mut next = pieces.first().map(|p| {
                let this = this.clone();
                let id = p.0;
                tokio::spawn(async move { this.get(id).await })
            });
            for i in 0..pieces.len() {
                let Some(current) = next.take() else { break };
                next = pieces.get(i + 1).map(|p| {
                    let this = this.clone();
                    let id = p.0;
                    tokio::spawn(async move { this.get(id).await })
                });
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
