//! Splits a blob's byte stream into chunks of at most `chunk_size_bytes`
//! while computing the blob's OCI digest over the whole stream. Chunks are
//! named (blake3) by whoever stores them, so that hashing can run in parallel
//! with the sequential digest.

use bytes::{Buf, Bytes, BytesMut};

use crate::chunks::DIRECT_IO_ALIGN;

use crate::types::{Digest, DigestAlgorithm, DigestHasher};

/// Default largest chunk: big enough that per-file costs (fsync, rename) are
/// amortised, small enough that a chunk fits comfortably in memory.
pub const DEFAULT_CHUNK_SIZE_BYTES: usize = 4 * 1024 * 1024;

/// An empty buffer for `capacity` bytes whose first byte is aligned for
/// O_DIRECT, so a full chunk goes to disk without another copy.
pub fn aligned_buffer(capacity: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(capacity + DIRECT_IO_ALIGN);
    let off = b.as_ptr().align_offset(DIRECT_IO_ALIGN);
    b.resize(off, 0);
    b.advance(off);
    b
}

pub struct Chunker {
    hasher: DigestHasher,
    size_bytes: u64,
    chunk_size_bytes: usize,
    buf: BytesMut,
}

impl Chunker {
    pub fn new(algorithm: DigestAlgorithm, chunk_size_bytes: usize) -> Self {
        Self::resume(algorithm.hasher(), 0, chunk_size_bytes)
    }

    /// Continues a stream whose first `size_bytes` went through `hasher`.
    pub fn resume(hasher: DigestHasher, size_bytes: u64, chunk_size_bytes: usize) -> Self {
        Chunker {
            hasher,
            size_bytes,
            chunk_size_bytes: chunk_size_bytes.max(1),
            buf: BytesMut::new(),
        }
    }

    /// Feeds `data`; every chunk that fills up is appended to `sealed`.
    pub fn push(&mut self, mut data: &[u8], sealed: &mut Vec<Bytes>) {
        self.hasher.update(data);
        self.size_bytes += data.len() as u64;
        while !data.is_empty() {
            if self.buf.is_empty() {
                self.buf = aligned_buffer(self.chunk_size_bytes);
            }
            let room = self.chunk_size_bytes - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.chunk_size_bytes {
                sealed.push(self.buf.split().freeze());
            }
        }
    }

    /// Seals whatever is buffered as a (short) chunk.
    pub fn flush(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The hash state so far, for resuming the stream in a later request.
    pub fn into_hasher(self) -> DigestHasher {
        self.hasher
    }

    /// The digest of everything pushed; buffered bytes must be flushed first.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_chunk_size_and_hashes_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = Chunker::new(DigestAlgorithm::Sha256, 4096);
        let mut sealed = Vec::new();
        for piece in data.chunks(777) {
            c.push(piece, &mut sealed);
        }
        sealed.extend(c.flush());
        assert_eq!(
            sealed.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
        assert_eq!(sealed.concat(), data);
        assert_eq!(c.digest(), Digest::of(DigestAlgorithm::Sha256, &data));
        assert_eq!(c.size_bytes(), 10_000);
    }

    #[test]
    fn full_chunks_are_aligned_for_direct_io() {
        let mut c = Chunker::new(DigestAlgorithm::Sha256, 64 * 1024);
        let mut sealed = Vec::new();
        c.push(&vec![7u8; 200 * 1024], &mut sealed);
        assert_eq!(sealed.len(), 3);
        for chunk in &sealed {
            assert_eq!(chunk.as_ptr().align_offset(DIRECT_IO_ALIGN), 0);
            assert_eq!(chunk.len(), 64 * 1024);
        }
    }

    #[test]
    fn resume_continues_the_digest() {
        let mut a = Chunker::new(DigestAlgorithm::Sha512, 8);
        let mut sealed = Vec::new();
        a.push(b"hello ", &mut sealed);
        sealed.extend(a.flush());
        let mut b = Chunker::resume(a.into_hasher(), 6, 8);
        b.push(b"world", &mut sealed);
        sealed.extend(b.flush());
        assert_eq!(
            b.digest(),
            Digest::of(DigestAlgorithm::Sha512, b"hello world")
        );
        assert_eq!(sealed.concat(), b"hello world");
    }
}
