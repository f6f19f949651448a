//! State changes as data: every change to replicated metadata is a `Command`
//! value, applied by `StateMachine::apply` on a single node and on every
//! replica through the Raft log alike. Commands carry their own timestamps
//! so that applying one is deterministic.

use serde::{Deserialize, Serialize};

use super::records::{ChunkRef, Descriptor, ManifestRecord};
use crate::types::{Digest, NodeId, RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records a finished upload (if the digest is new) and links it into
    /// `repo`.
    PutBlob {
        repo: RepoName,
        digest: Digest,
        size: u64,
        chunks: Vec<ChunkRef>,
        /// Nodes known to hold every chunk when the upload finished.
        holders: Vec<NodeId>,
        now_ms: u64,
    },
    /// Links a blob that already exists into `repo` (a mount).
    LinkBlob {
        repo: RepoName,
        digest: Digest,
        now_ms: u64,
    },
    /// Removes a blob from `repo`; its bytes stay until garbage collection.
    UnlinkBlob {
        repo: RepoName,
        digest: Digest,
    },
    /// Stores a manifest in `repo`, points `tags` at it, and indexes it as a
    /// referrer of its subject.
    PutManifest {
        repo: RepoName,
        digest: Digest,
        record: Box<ManifestRecord>,
        tags: Vec<Tag>,
        referrer: Option<Descriptor>,
    },
    /// Removes a manifest from `repo` together with the tags that point at it.
    DeleteManifest {
        repo: RepoName,
        digest: Digest,
    },
    DeleteTag {
        repo: RepoName,
        tag: Tag,
    },
    /// Names the cluster once, when it first forms; later values are
    /// ignored, so every replica keeps the first.
    SetClusterId {
        id: String,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::PutBlob { repo, digest, .. } => write!(f, "put blob {repo}@{digest}"),
            Command::LinkBlob { repo, digest, .. } => write!(f, "link blob {repo}@{digest}"),
            Command::UnlinkBlob { repo, digest } => write!(f, "unlink blob {repo}@{digest}"),
            Command::PutManifest {
                repo, digest, tags, ..
            } => write!(f, "put manifest {repo}@{digest} tags {tags:?}"),
            Command::DeleteManifest { repo, digest } => {
                write!(f, "delete manifest {repo}@{digest}")
            }
            Command::DeleteTag { repo, tag } => write!(f, "delete tag {repo}:{tag}"),
            Command::SetClusterId { id } => write!(f, "set cluster id {id}"),
        }
    }
}

/// What applying a command did. A rejection is a deterministic outcome, the
/// same on every replica, not a storage failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The blob is not in the store (or not in the repository).
    BlobUnknown(Digest),
    /// A manifest references a blob or child manifest the repository lacks.
    ManifestBlobUnknown(Digest),
    ManifestUnknown,
}
