//! What garbage collection reads from the state machine: the conditions a
//! blob link, an untagged manifest or a chunk tombstone must meet to go (the
//! same predicates the apply of `Collect…` commands checks again), the scan
//! a GC pass makes, and the reverse lookup from a chunk to what needs it.

use std::collections::{BTreeMap, BTreeSet};

use super::records::{BlobRecord, Link, ManifestRecord, RepoManifest};
use super::{count, decode, key, GcPolicy, StateMachine, BLOB, BLOB_LINKS, LINK, MANIFEST};
use super::{REPO_MANIFEST, TAG, TOMBSTONE};
use crate::error::Result;
use crate::types::{ChunkId, Digest, RepoName, Tag};

/// A link may go once no manifest of its repository references the blob,
/// its upload lease has run out (or a manifest took it over), and it has
/// been unreferenced for the grace period.
pub(super) fn link_collectable(link: &Link, policy: &GcPolicy) -> bool {
    let lease_over =
        !link.leased || link.linked_ms.saturating_add(policy.lease_ms) <= policy.now_ms;
    let grace_over = link
        .unref_ms
        .is_none_or(|at| at.saturating_add(policy.grace_ms) <= policy.now_ms);
    link.refs == 0 && lease_over && grace_over
}

/// Every node deletes its copy once a tombstone is older than the grace;
/// keeping it a lease longer covers nodes that were down meanwhile (a copy
/// they still hold is then an orphan older than the lease, removed anyway).
pub(super) fn tombstone_forgettable(at_ms: u64, policy: &GcPolicy) -> bool {
    at_ms
        .saturating_add(policy.grace_ms)
        .saturating_add(policy.lease_ms)
        <= policy.now_ms
}

pub(super) fn untagged_expired(p: &RepoManifest, policy: &GcPolicy) -> bool {
    p.tags == 0 && p.parents == 0 && p.untagged_ms.saturating_add(policy.grace_ms) <= policy.now_ms
}

/// What a GC pass would collect now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcCandidates {
    pub links: Vec<(RepoName, Digest)>,
    /// Blobs whose every link is collectable, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Untagged manifests in repositories that opted in.
    pub manifests: Vec<(RepoName, Digest)>,
    pub tombstones: Vec<ChunkId>,
}

/// What depends on a chunk: the blobs made of it, the manifests that
/// reference those blobs, and the tags pointing at those manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependents {
    pub blobs: Vec<Digest>,
    pub manifests: Vec<(RepoName, Digest)>,
    pub tags: Vec<(RepoName, Tag)>,
    pub repositories: Vec<RepoName>,
}

/// Splits a `prefix|repo\0digest` key into its repository and digest.
fn repo_and_digest(k: &[u8]) -> Option<(RepoName, Digest)> {
    let rest = std::str::from_utf8(k.get(1..)?).ok()?;
    let (repo, digest) = rest.rsplit_once('\0')?;
    Some((RepoName::parse(repo).ok()?, Digest::parse(digest).ok()?))
}

impl StateMachine {
    /// Scans links, untagged manifests (of repositories `untagged_gc`
    /// accepts) and tombstones for what `policy` lets go.
    pub fn gc_candidates(
        &self,
        policy: &GcPolicy,
        untagged_gc: impl Fn(&RepoName) -> bool,
    ) -> Result<GcCandidates> {
        let tree = self.tree();
        let mut out = GcCandidates::default();
        let mut per_blob: BTreeMap<Digest, u64> = BTreeMap::new();
        for kv in tree.scan_prefix([LINK]) {
            let (k, v) = kv?;
            let link: Link = decode("links", &v)?;
            if !link_collectable(&link, policy) {
                continue;
            }
            if let Some((repo, digest)) = repo_and_digest(&k) {
                *per_blob.entry(digest.clone()).or_default() += 1;
                out.links.push((repo, digest));
            }
        }
        for (digest, n) in per_blob {
            let links = count(tree.get(key(BLOB_LINKS, &[digest.as_str()]))?.as_deref());
            if n < links {
                continue;
            }
            if let Some(b) = tree.get(key(BLOB, &[digest.as_str()]))? {
                let record: BlobRecord = decode("blobs", &b)?;
                out.blobs += 1;
                out.bytes += record.size;
            }
        }
        for kv in tree.scan_prefix([REPO_MANIFEST]) {
            let (k, v) = kv?;
            let p: RepoManifest = decode("repository manifests", &v)?;
            if !untagged_expired(&p, policy) {
                continue;
            }
            if let Some((repo, digest)) = repo_and_digest(&k) {
                if untagged_gc(&repo) {
                    out.manifests.push((repo, digest));
                }
            }
        }
        for kv in tree.scan_prefix([TOMBSTONE]) {
            let (k, v) = kv?;
            if !tombstone_forgettable(count(Some(&v)), policy) {
                continue;
            }
            if let Some(id) = k.get(1..).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                out.tombstones.push(ChunkId::from_bytes(id));
            }
        }
        Ok(out)
    }

    /// When the chunk stopped being referenced, if it was and still is not.
    pub fn tombstone(&self, id: &ChunkId) -> Result<Option<u64>> {
        Ok(self
            .tree()
            .get(super::tombstone_key(id))?
            .map(|v| count(Some(&v))))
    }

    /// Calls `f` with every blob record.
    pub fn for_each_blob(&self, mut f: impl FnMut(&Digest, &BlobRecord)) -> Result<()> {
        for kv in self.tree().scan_prefix([BLOB]) {
            let (k, v) = kv?;
            let Ok(digest) = Digest::parse(&String::from_utf8_lossy(&k[1..])) else {
                continue;
            };
            f(&digest, &decode("blobs", &v)?);
        }
        Ok(())
    }

    /// Everything that needs `chunk`: a full scan, for the rare report of a
    /// chunk with no good copy left.
    pub fn dependents(&self, chunk: &ChunkId) -> Result<Dependents> {
        let tree = self.tree();
        let mut blobs = BTreeSet::new();
        self.for_each_blob(|d, r| {
            if r.chunks.iter().any(|c| c.id == *chunk) {
                blobs.insert(d.clone());
            }
        })?;
        let mut manifests = BTreeSet::new();
        let mut repositories = BTreeSet::new();
        for kv in tree.scan_prefix([LINK]) {
            let (k, _) = kv?;
            if let Some((repo, digest)) = repo_and_digest(&k) {
                if blobs.contains(&digest) {
                    repositories.insert(repo);
                }
            }
        }
        for kv in tree.scan_prefix([REPO_MANIFEST]) {
            let (k, _) = kv?;
            let Some((repo, digest)) = repo_and_digest(&k) else {
                continue;
            };
            let Some(m) = tree.get(key(MANIFEST, &[digest.as_str()]))? else {
                continue;
            };
            let m: ManifestRecord = decode("manifests", &m)?;
            if m.blobs.iter().any(|b| blobs.contains(b)) {
                repositories.insert(repo.clone());
                manifests.insert((repo, digest));
            }
        }
        let mut tags = Vec::new();
        for kv in tree.scan_prefix([TAG]) {
            let (k, v) = kv?;
            let Ok(target) = Digest::parse(&String::from_utf8_lossy(&v)) else {
                continue;
            };
            let Some(rest) = std::str::from_utf8(&k[1..]).ok() else {
                continue;
            };
            let Some((repo, tag)) = rest.rsplit_once('\0') else {
                continue;
            };
            let (Ok(repo), Ok(tag)) = (RepoName::parse(repo), Tag::parse(tag)) else {
                continue;
            };
            if manifests.contains(&(repo.clone(), target)) {
                tags.push((repo, tag));
            }
        }
        Ok(Dependents {
            blobs: blobs.into_iter().collect(),
            manifests: manifests.into_iter().collect(),
            tags,
            repositories: repositories.into_iter().collect(),
        })
    }
}
