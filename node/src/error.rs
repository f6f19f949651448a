//! The node's one error type. Each variant says what went wrong in registry
//! terms; `http::error` maps it once to a status, an OCI error code and the
//! JSON body, so handlers only ever return `Error`.

use stowage_storage::types::Digest;
use stowage_storage::types::{NodeId, RepoName};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No valid credential; `challenge` is the `WWW-Authenticate` value.
    #[error("authentication required: {reason}")]
    Unauthorized { reason: String, challenge: String },

    #[error("requested access to the resource is denied: {0}")]
    Denied(String),

    #[error("too many failed logins from this address; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },

    /// An account or rule change the state machine refused.
    #[error("{0}")]
    AccessChange(String),

    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),

    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(&'static str),

    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,

    #[error("provided digest did not match uploaded content: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },

    #[error("{0}")]
    DigestInvalid(String),

    #[error("manifest references a blob or manifest unknown to the repository: {0}")]
    ManifestBlobUnknown(Digest),

    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),

    #[error("manifest unknown to registry")]
    ManifestUnknown,

    #[error(
        "manifest of media type {media_type} is not acceptable to the client (Accept: {accept})"
    )]
    ManifestNotAcceptable { media_type: String, accept: String },

    #[error("{0}")]
    NameInvalid(String),

    #[error("repository name not known to registry: {0}")]
    NameUnknown(RepoName),

    #[error("{0}")]
    SizeInvalid(&'static str),

    #[error("manifest is larger than the {limit_bytes} byte limit")]
    ManifestTooLarge { limit_bytes: usize },

    #[error("chunk out of order: upload is at byte {offset}, chunk starts at {start}")]
    UploadOutOfOrder { offset: u64, start: u64 },

    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },

    #[error("the operation is unsupported: {0}")]
    Unsupported(&'static str),

    #[error("an HTTP/1.1 request needs exactly one Host header; this one has {count}")]
    HostHeader { count: usize },

    #[error("method {method} not allowed here")]
    MethodNotAllowed {
        method: http::Method,
        allow: &'static str,
    },

    #[error("no such endpoint")]
    NotFound,

    #[error("the request body failed: {0}")]
    Body(String),

    #[error("service unavailable: {0}")]
    Unavailable(String),

    #[error(
        "blob data unavailable: chunk {chunk} (and {} more) has no reachable copy; \
         retry when the nodes holding it are back, or see `stowage scrub status`",
        missing.saturating_sub(1)
    )]
    ChunkUnavailable {
        chunk: stowage_storage::types::ChunkId,
        missing: usize,
    },
    #[error("no leader elected yet: this node cannot reach a majority of the cluster")]
    NoLeader,

    #[error(
        "this node leads but cannot reach a quorum of the cluster, so it cannot commit writes"
    )]
    NoQuorum,

    #[error("the leader (node {leader}) did not answer within {waited_ms} ms")]
    LeaderSilent { leader: NodeId, waited_ms: u64 },

    #[error("the cluster did not commit the request within the {secs} s request deadline")]
    Deadline { secs: u64 },

    #[error("this node has not yet applied log entry {index}, which the leader committed")]
    Behind { index: u64 },

    #[error(
        "this node has applied the log up to entry {applied}, not yet {wanted} \
         (Stowage-Min-Log-Index); retry, or ask another node"
    )]
    NotFreshEnough { wanted: u64, applied: u64 },

    #[error(
        "{repo}:{reference} {}: the update's precondition does not hold",
        current.as_ref().map_or("does not exist".to_owned(), |d| format!("points at {d}"))
    )]
    TagPrecondition {
        repo: stowage_storage::types::RepoName,
        reference: String,
        current: Option<stowage_storage::types::Digest>,
    },

    #[error(
        "tag {tag} is immutable (tags {} in repositories {} never move or go; \
         `stowage immutable remove` lifts it)", rule.tags, rule.repositories
    )]
    TagImmutable {
        tag: stowage_storage::types::Tag,
        rule: stowage_storage::meta::policy::ImmutableTags,
    },

    #[error("header {name}: {reason}")]
    BadHeader { name: &'static str, reason: String },

    #[error("membership change refused: {0}")]
    MembershipChange(String),

    #[error("invalid admin request: {0}")]
    AdminRequest(String),

    /// A write failed because a disk was full, found where the storage
    /// error itself no longer travels (an upload's committer keeps its
    /// first failure as text). A storage error that says so directly stays
    /// `Storage`; both answer 507.
    #[error("{0}")]
    DiskFull(String),

    /// A backup repository that cannot be used as it is: not one, another
    /// version, encrypted under another key, corrupt or truncated objects.
    #[error("backup repository {repo}: {reason}")]
    BackupRepo { repo: String, reason: String },

    #[error("a backup is already running on this node ({0}); wait for it or see `stowage backup status`")]
    BackupBusy(String),

    /// What a backup needs from the live cluster and could not get (a chunk
    /// no node holds any more).
    #[error("backup: {0}")]
    BackupSource(String),

    #[error("backup storage: {0}")]
    BackupStore(#[from] object_store::Error),

    /// Another registry (a copy's source or target) failed.
    #[error("{0}")]
    Remote(String),

    /// Another registry refused a request for good (a 4xx that retrying
    /// cannot change: unsupported, invalid, denied by its own policy).
    #[error("{0}")]
    RemoteRefused(String),

    #[error("storage: {0}")]
    Storage(#[from] stowage_storage::Error),

    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// Whether this error is a full disk (this node's reserve, or ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull(_) => true,
            Error::Storage(e) => e.is_disk_full(),
            _ => false,
        }
    }

    /// Classifies validation errors of identifiers from the storage crate
    /// into their API meaning; anything else stays a storage error.
    pub fn from_parse(e: stowage_storage::Error) -> Self {
        use stowage_storage::Error as S;
        match e {
            S::InvalidDigest { .. } => Error::DigestInvalid(e.to_string()),
            S::InvalidName { .. } => Error::NameInvalid(e.to_string()),
            S::InvalidTag { .. } => Error::ManifestInvalid(e.to_string()),
            S::InvalidUploadId { .. } => Error::BlobUploadUnknown,
            other => Error::Storage(other),
        }
    }
}
