//! The storage crate's one error type. The HTTP edge in `stowage-node` maps
//! each variant to an OCI error code once; nothing here knows about HTTP.

use std::io;
use std::path::PathBuf;

use crate::types::ChunkId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest { input: String, reason: &'static str },

    #[error("invalid repository name {input:?}: {reason}")]
    InvalidName { input: String, reason: &'static str },

    #[error("invalid tag {input:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag { input: String },

    #[error("invalid chunk id {input:?}: expected 64 hex characters")]
    InvalidChunkId { input: String },

    #[error("invalid upload id {input:?}")]
    InvalidUploadId { input: String },

    #[error("invalid node id {input:?}: expected a positive integer")]
    InvalidNodeId { input: String },

    #[error("invalid zone {input:?}: 1-63 characters of [A-Za-z0-9._-]")]
    InvalidZone { input: String },

    #[error("invalid account name {input:?}: {reason}")]
    InvalidAccount { input: String, reason: &'static str },

    #[error("invalid access rule: {0}")]
    InvalidRule(String),

    #[error("chunk {0} failed verification: its content does not hash to its name")]
    ChunkCorrupt(ChunkId),

    #[error("chunk {0} is not on this node")]
    ChunkMissing(ChunkId),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("metadata database: {0}")]
    Db(#[from] sled::Error),

    #[error("metadata record in {tree} does not decode: {source}")]
    Decode {
        tree: &'static str,
        #[source]
        source: postcard::Error,
    },

    #[error("log file {path} is damaged at byte {offset}: {reason}")]
    LogCorrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },

    #[error(
        "{path} does not hold an incarnation id (32 hex characters); the data directory is damaged"
    )]
    BadIncarnation { path: PathBuf },

    #[error("log entry {index} is not in the log (first {first}, last {last})")]
    LogGap { index: u64, first: u64, last: u64 },

    #[error("the log writer has stopped")]
    LogClosed,

    #[error("snapshot is malformed: {0}")]
    SnapshotFormat(&'static str),

    #[error(
        "disk full: {path} has {free_bytes} bytes free, under the {min_free_bytes}-byte reserve \
         (min_free_bytes); this node takes no new data until space is freed, and reads still work"
    )]
    DiskFull {
        path: PathBuf,
        free_bytes: u64,
        min_free_bytes: u64,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done and to which file, since a
    /// bare `io::Error` names neither.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Whether this is the disk being full: below the reserve, or the
    /// filesystem's own ENOSPC (or quota) from any write, sled's included.
    /// The HTTP edge answers these 507, never as a client error.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Io { source, .. } => crate::space::is_out_of_space(source),
            Error::Db(sled::Error::Io(source)) => crate::space::is_out_of_space(source),
            _ => false,
        }
    }
}
