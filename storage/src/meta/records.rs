//! The values the replicated state machine stores. They are encoded with
//! postcard, so a field added later goes at the end behind `#[serde(default)]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{ChunkId, Digest, NodeId};

/// One piece of a blob, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A blob: its size and where its bytes are (an ordered chunk list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    pub created_ms: u64,
    /// Nodes that held every chunk when the blob was recorded: where a node
    /// missing a chunk looks first.
    pub holders: Vec<NodeId>,
}

/// A manifest kept whole in the state machine (manifests are small: the API
/// caps them at 4 MiB), with what it references, pre-extracted so that
/// apply never parses JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Blobs (config and layers) that must be linked to the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index that must be in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub created_ms: u64,
}

/// An OCI content descriptor, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A blob's link into one repository, with what protects it from
/// collection: the manifests of the repository that reference it, or the
/// lease of the upload or mount that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// When the blob was last uploaded or mounted into the repository.
    pub linked_ms: u64,
    /// Until a manifest references the blob, its upload's lease holds it
    /// (until `linked_ms` plus the lease).
    pub leased: bool,
    /// Manifests of the repository that reference the blob.
    pub refs: u64,
    /// When `refs` last fell to zero.
    pub unref_ms: Option<u64>,
}

/// A manifest's presence in one repository, with the counts that decide
/// whether it is untagged garbage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoManifest {
    /// Tags of the repository pointing at it.
    pub tags: u64,
    /// Manifests (indexes) of the repository that list it as a child.
    pub parents: u64,
    /// When it was stored or last lost its last tag.
    pub untagged_ms: u64,
}
