//! What the run observed, shared by the workload workers and read by the
//! checker: every request with its interval and outcome, every
//! acknowledged write (images, blobs, tag moves) and every tag read. Times
//! are microseconds since the run started (one `Clock`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::linearizable::Kind;

/// The run's time origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant, std::time::SystemTime);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now(), std::time::SystemTime::now())
    }

    /// The origin in Unix milliseconds, to find a request in the nodes'
    /// logs (which carry wall-clock times).
    pub fn origin_unix_ms(&self) -> u128 {
        self.1
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqKind {
    BlobPush,
    ManifestPush,
    TagWrite,
    TagRead,
    Pull,
    Delete,
}

impl ReqKind {
    pub fn is_write(self) -> bool {
        matches!(
            self,
            ReqKind::BlobPush | ReqKind::ManifestPush | ReqKind::TagWrite | ReqKind::Delete
        )
    }
}

/// One HTTP request of the workload.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: ReqKind,
    pub node: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub ok: bool,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
}

/// One acknowledged whole-image push (every blob `POST`, then the
/// manifest `PUT`), for the latency figures.
#[derive(Debug, Clone)]
pub struct ImagePush {
    pub start_us: u64,
    pub end_us: u64,
    /// Every node a request of the push went to (blobs', manifest's).
    pub nodes: Vec<u64>,
}

/// How a blob's bytes are regenerated for the check (kept small in memory).
#[derive(Debug, Clone)]
pub enum BlobBytes {
    /// `oci::data(seed, len)`.
    Seeded {
        seed: u64,
        len: usize,
    },
    Literal(Vec<u8>),
}

impl BlobBytes {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            BlobBytes::Seeded { seed, len } => crate::oci::data(*seed, *len),
            BlobBytes::Literal(b) => b.clone(),
        }
    }
}

/// A blob whose upload was acknowledged (201).
#[derive(Debug, Clone)]
pub struct AckedBlob {
    pub repo: String,
    pub digest: String,
    pub bytes: BlobBytes,
    pub acked_us: u64,
}

/// An image whose manifest PUT was acknowledged (201).
#[derive(Debug, Clone)]
pub struct AckedImage {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub manifest: Vec<u8>,
    /// Indexes into `History::blobs` (config first).
    pub blobs: Vec<usize>,
    pub acked_us: u64,
    /// A delete was started for it: it is no longer expected.
    pub delete_started: bool,
    /// The delete was acknowledged.
    pub deleted: bool,
}

/// One operation on a shared tag, for the linearizability check.
#[derive(Debug, Clone)]
pub struct TagOp {
    pub tag: String,
    pub start_us: u64,
    /// `None` for a write whose outcome is unknown.
    pub end_us: Option<u64>,
    pub kind: Kind,
    pub node: u64,
}

#[derive(Debug, Default)]
pub struct History {
    pub requests: Vec<Request>,
    pub blobs: Vec<AckedBlob>,
    pub images: Vec<AckedImage>,
    pub tag_ops: Vec<TagOp>,
    /// 503 answers to writes: (time, node, body), the first 2000.
    pub unavailable: Vec<(u64, u64, String)>,
    /// Acknowledged whole-image pushes.
    pub image_pushes: Vec<ImagePush>,
    /// A read during the run of an acknowledged write that answered
    /// "unknown" (read-your-writes broken), with what was read.
    pub stale_reads: Vec<String>,
    /// A read during the run that answered wrong bytes.
    pub corrupt_reads: Vec<String>,
}

/// The history, shared between workers.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<History>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, History> {
        // A worker that panicked leaves a usable history behind.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
