//! Chunk-sized read buffers kept for reuse. A pull reads every chunk into a
//! fresh multi-MiB buffer; allocating one from the system each time cost
//! about a tenth of a warm pull's CPU in page faults and page clearing
//! (benches/README.md), so buffers come back here when the last `Bytes`
//! pointing into them is dropped.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Reads shorter than this take a buffer of their own (small chunks would
/// otherwise pin a chunk-sized buffer each).
pub const POOLED_MIN_BYTES: usize = 1 << 20;
/// Buffers larger than this are not kept (a chunk size changed at run
/// time must not leave oversized buffers behind).
const POOLED_MAX_BYTES: usize = 16 << 20;
/// Buffers kept at most: about what the node's pulls have in flight at
/// once (the node-wide read-ahead budget of 8 chunks, plus the chunk each
/// of a few parallel pulls is sending), so steady-state memory grows by
/// this many chunks and no more.
const POOLED_BUFFERS: usize = 12;

/// A stack of zero-initialised buffers, each at least `POOLED_MIN_BYTES`.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A zero-initialised buffer of at least `len` bytes (kept ones may be
    /// longer and hold old bytes past what the caller writes).
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOLED_MIN_BYTES {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = free.iter().position(|b| b.len() >= len) {
                return free.swap_remove(i);
            }
        }
        vec![0; len]
    }

    /// `buf[..used]` as `Bytes`; the buffer comes back to the pool when the
    /// last clone is dropped.
    pub fn share(self: &Arc<Self>, buf: Vec<u8>, used: usize) -> Bytes {
        let used = used.min(buf.len());
        if !kept_size(buf.len()) {
            let mut buf = buf;
            buf.truncate(used);
            return Bytes::from(buf);
        }
        Bytes::from_owner(Lent {
            buf,
            used,
            pool: self.clone(),
        })
    }

    /// Returns a buffer from `take` that was used in place (not shared).
    pub fn give_back(&self, buf: Vec<u8>) {
        if !kept_size(buf.len()) {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_BUFFERS {
            free.push(buf);
        }
    }

    /// Buffers waiting for reuse.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Whether a buffer of `len` bytes is worth keeping.
fn kept_size(len: usize) -> bool {
    (POOLED_MIN_BYTES..=POOLED_MAX_BYTES).contains(&len)
}

/// A pooled buffer lent out behind `Bytes`.
struct Lent {
    buf: Vec<u8>,
    used: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.used]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_when_the_last_clone_goes() {
        let pool = Arc::new(BufferPool::default());
        let mut buf = pool.take(POOLED_MIN_BYTES);
        buf[..3].copy_from_slice(b"abc");
        let bytes = pool.share(buf, 3);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a slice still points into it");
        assert_eq!(&slice[..], b"bc");
        drop(slice);
        assert_eq!(pool.kept(), 1);
        // Reused for a read that fits, not for one that does not.
        let again = pool.take(POOLED_MIN_BYTES - 10);
        assert_eq!(pool.kept(), 1, "small reads get their own buffer");
        drop(again);
        let reused = pool.take(POOLED_MIN_BYTES);
        assert_eq!(reused.len(), POOLED_MIN_BYTES);
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn small_and_oversized_buffers_are_not_kept_and_the_pool_is_capped() {
        let pool = Arc::new(BufferPool::default());
        drop(pool.share(vec![1; 10], 10));
        drop(pool.share(vec![1; POOLED_MAX_BYTES + 1], 5));
        assert_eq!(pool.kept(), 0);
        let lent: Vec<Bytes> = (0..POOLED_BUFFERS + 3)
            .map(|_| pool.share(pool.take(POOLED_MIN_BYTES), 1))
            .collect();
        drop(lent);
        assert_eq!(pool.kept(), POOLED_BUFFERS);
    }
}
