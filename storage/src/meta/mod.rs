//! The replicated metadata state machine: repositories, tags, manifests, blob
//! records, repository links and the referrers index, in one sled tree.
//!
//! Layout: `command.rs` (the `Command` values that change it), `records.rs`
//! (the stored values), this file (apply, reads, snapshot export/import).
//! Everything lives in one tree, keyed by a one-letter prefix, because sled
//! applies a batch atomically only within a tree: one command is one batch,
//! together with the applied-log mark, so a crash never splits a command.

pub mod access;
mod command;
mod gc;
pub mod policy;
pub mod quota;
mod records;
pub mod replication;
pub mod retention;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::sync::{Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::IVec;

pub use self::command::{Command, GcPolicy, Outcome, Rejection, TagExpect};
pub use self::gc::{Dependents, GcCandidates};
pub use self::records::{BlobRecord, ChunkRef, Descriptor, Link, ManifestRecord, RepoManifest};
use crate::error::{Error, Result};
use crate::types::{ChunkId, Digest, RepoName, Tag};

// Key prefixes of the one state-machine tree.
pub(super) const BLOB: u8 = b'B'; // B<digest> -> BlobRecord
const CHUNK_REFS: u8 = b'C'; // C<chunk id> -> u64 blobs using it
const BLOB_LINKS: u8 = b'K'; // K<digest> -> u64 repositories linking it
pub(super) const LINK: u8 = b'L'; // L<repo>\0<digest> -> Link
const MANIFEST: u8 = b'M'; // M<digest> -> ManifestRecord
const MANIFEST_REFS: u8 = b'N'; // N<digest> -> u64 repositories holding it
const REPO_MANIFEST: u8 = b'P'; // P<repo>\0<digest> -> RepoManifest
const TOMBSTONE: u8 = b'Z'; // Z<chunk id> -> u64 ms it became unreferenced
const TAG: u8 = b'T'; // T<repo>\0<tag> -> digest
const REFERRER: u8 = b'F'; // F<repo>\0<subject>\0<referrer> -> Descriptor
pub(super) const REPO: u8 = b'R'; // R<repo> -> u64 blob links + manifests
const APPLIED: &[u8] = b"_applied"; // opaque mark of the last applied log entry
const CLUSTER_ID: &[u8] = b"_cluster"; // the cluster's name, set once

/// How far apart the nodes' clocks may be for the tombstone check of a new
/// blob's chunks: chunk file times (local clocks) are compared with
/// tombstone times (the proposer's clock).
pub const CLOCK_SKEW_MS: u64 = 2_000;

/// sled meta-key naming the generation of the active state-machine tree.
const ACTIVE_TREE: &[u8] = b"stowage/active-sm-tree";
const SNAPSHOT_MAGIC: &[u8; 8] = b"STWSNAP1";
const SNAPSHOT_END: u32 = u32::MAX;

fn key(prefix: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// The key prefix under which all of `repo`'s entries of one kind sort.
fn repo_prefix(prefix: u8, repo: &RepoName) -> Vec<u8> {
    let mut k = key(prefix, &[repo.as_str()]);
    k.push(0);
    k
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these plain data types.
    postcard::to_stdvec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Decode { tree, source })
}

fn count(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// One command's writes, staged over the tree so that the command reads its
/// own writes, then committed as one atomic batch.
struct Txn<'a> {
    tree: &'a sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Txn {
            tree,
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(k)?.map(|v| v.to_vec())),
        }
    }

    fn has(&self, k: &[u8]) -> Result<bool> {
        match self.writes.get(k) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.tree.contains_key(k)?),
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// Changes a stored record in place, if it exists.
    fn update<T: Serialize + DeserializeOwned>(
        &mut self,
        tree: &'static str,
        k: Vec<u8>,
        f: impl FnOnce(&mut T),
    ) -> Result<()> {
        if let Some(b) = self.get(&k)? {
            let mut v: T = decode(tree, &b)?;
            f(&mut v);
            self.put(k, encode(&v));
        }
        Ok(())
    }

    /// Adds `delta` to a counter, removing it when it reaches zero.
    fn bump(&mut self, k: Vec<u8>, delta: i64) -> Result<u64> {
        let now = count(self.get(&k)?.as_deref());
        let next = now.saturating_add_signed(delta);
        if next == 0 {
            self.del(k);
        } else {
            self.put(k, next.to_be_bytes().to_vec());
        }
        Ok(next)
    }

    fn commit(self, mark: &[u8]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(APPLIED, mark);
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

pub struct StateMachine {
    db: sled::Db,
    tree: RwLock<sled::Tree>,
    /// Serialises apply with snapshot export, so an export is the state at
    /// exactly one applied mark.
    apply_lock: Mutex<()>,
}

impl StateMachine {
    pub fn open(db: &sled::Db) -> Result<Self> {
        let generation = count(db.get(ACTIVE_TREE)?.as_deref());
        let tree = db.open_tree(format!("sm.{generation}"))?;
        Ok(StateMachine {
            db: db.clone(),
            tree: RwLock::new(tree),
            apply_lock: Mutex::new(()),
        })
    }

    fn tree(&self) -> sled::Tree {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The opaque mark stored with the last applied command (the consensus
    /// layer decides what it means: a log index, a Raft log id).
    pub fn applied_mark(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.tree().get(APPLIED)?.map(|v| v.to_vec()))
    }

    /// Records `mark` as applied for a log entry that changes no data.
    pub fn set_mark(&self, mark: &[u8]) -> Result<()> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.tree().insert(APPLIED, mark)?;
        Ok(())
    }

    /// Applies one command and stores `mark` in the same atomic batch.
    pub fn apply(&self, cmd: &Command, mark: &[u8]) -> Result<Outcome> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree();
        let mut txn = Txn::new(&tree);
        let outcome = Self::stage(&mut txn, cmd)?;
        if let Outcome::Rejected(_) = outcome {
            // A rejected command changes nothing but is still applied.
            txn.writes.clear();
        }
        txn.commit(mark)?;
        Ok(outcome)
    }

    fn stage(txn: &mut Txn<'_>, cmd: &Command) -> Result<Outcome> {
        use Rejection::*;
        match cmd {
            Command::PutBlob {
                repo,
                digest,
                size,
                chunks,
                holders,
                now_ms,
                written_since_ms,
            } => {
                let bk = key(BLOB, &[digest.as_str()]);
                if !txn.has(&bk)? {
                    for c in chunks {
                        if let Some(at) = txn.get(&tombstone_key(&c.id))? {
                            // Copies written before the tombstone (plus the
                            // clock allowance) may be deleted by now.
                            if count(Some(&at)) + CLOCK_SKEW_MS >= *written_since_ms {
                                return Ok(Outcome::Rejected(ChunksCollected(c.id)));
                            }
                        }
                    }
                    for c in chunks {
                        txn.bump(chunk_key(&c.id), 1)?;
                        txn.del(tombstone_key(&c.id));
                    }
                    let rec = BlobRecord {
                        size: *size,
                        chunks: chunks.clone(),
                        created_ms: *now_ms,
                        holders: holders.clone(),
                    };
                    txn.put(bk, encode(&rec));
                }
                if let Some(refused) = Self::link(txn, repo, digest, *now_ms)? {
                    return Ok(refused);
                }
            }
            Command::LinkBlob {
                repo,
                digest,
                now_ms,
            } => {
                if !txn.has(&key(BLOB, &[digest.as_str()]))? {
                    return Ok(Outcome::Rejected(BlobUnknown(digest.clone())));
                }
                if let Some(refused) = Self::link(txn, repo, digest, *now_ms)? {
                    return Ok(refused);
                }
            }
            Command::UnlinkBlob {
                repo,
                digest,
                now_ms,
            } => {
                if !Self::unlink(txn, repo, digest, *now_ms)? {
                    return Ok(Outcome::Rejected(BlobUnknown(digest.clone())));
                }
            }
            Command::PutManifest {
                repo,
                digest,
                record,
                tags,
                referrer,
            } => {
                for b in &record.blobs {
                    if !txn.has(&key(LINK, &[repo.as_str(), b.as_str()]))? {
                        return Ok(Outcome::Rejected(ManifestBlobUnknown(b.clone())));
                    }
                }
                for m in &record.children {
                    if m != digest && !txn.has(&key(REPO_MANIFEST, &[repo.as_str(), m.as_str()]))? {
                        return Ok(Outcome::Rejected(ManifestBlobUnknown(m.clone())));
                    }
                }
                let now = record.created_ms;
                let mk = key(MANIFEST, &[digest.as_str()]);
                if !txn.has(&mk)? {
                    txn.put(mk, encode(record));
                }
                let pk = key(REPO_MANIFEST, &[repo.as_str(), digest.as_str()]);
                if !txn.has(&pk)? {
                    txn.put(
                        pk,
                        encode(&RepoManifest {
                            untagged_ms: now,
                            ..RepoManifest::default()
                        }),
                    );
                    txn.bump(key(MANIFEST_REFS, &[digest.as_str()]), 1)?;
                    txn.bump(key(REPO, &[repo.as_str()]), 1)?;
                    // The manifest now holds its blobs: their upload leases
                    // have done their job.
                    for b in &record.blobs {
                        Self::update_link(txn, repo, b, |l| {
                            l.refs += 1;
                            l.leased = false;
                        })?;
                    }
                    for m in record.children.iter().filter(|m| *m != digest) {
                        Self::update_repo_manifest(txn, repo, m, |p| p.parents += 1)?;
                    }
                }
                for t in tags {
                    let tk = key(TAG, &[repo.as_str(), t.as_str()]);
                    let old = txn.get(&tk)?;
                    if old.as_deref() == Some(digest.as_str().as_bytes()) {
                        continue;
                    }
                    if let Some(old) = old {
                        if let Some(refused) = policy::guard(txn, repo, t)? {
                            return Ok(refused);
                        }
                        Self::untag(txn, repo, &old, now)?;
                    }
                    txn.put(tk, digest.as_str().as_bytes().to_vec());
                    txn.put(
                        key(retention::TAG_TIME, &[repo.as_str(), t.as_str()]),
                        now.to_be_bytes().to_vec(),
                    );
                    Self::update_repo_manifest(txn, repo, digest, |p| p.tags += 1)?;
                }
                if let (Some(subject), Some(desc)) = (&record.subject, referrer) {
                    txn.put(
                        key(
                            REFERRER,
                            &[repo.as_str(), subject.as_str(), digest.as_str()],
                        ),
                        encode(desc),
                    );
                }
            }
            Command::AddImmutableTags { rule } => return policy::add(txn, rule),
            Command::SetQuota { quota } => return quota::set(txn, quota),
            Command::SetRetention { rule } => return retention::set(txn, rule),
            Command::PutReplication { rule, cursor } => {
                return replication::put(txn, rule, *cursor)
            }
            Command::RemoveReplication { name } => return replication::remove(txn, name),
            Command::PutMirror { rule } => return replication::put_mirror(txn, rule),
            Command::RemoveMirror { name } => return replication::remove_mirror(txn, name),
            Command::AdvanceReplication {
                name,
                index,
                reset,
                from,
            } => return replication::advance(txn, name, *index, *reset, *from),
            Command::RemoveRetention { repositories } => {
                return retention::remove(txn, repositories)
            }
            Command::ExpireTags { repo, tags, now_ms } => {
                return retention::expire(txn, repo, tags, *now_ms)
            }
            Command::RemoveQuota { namespace } => return quota::remove(txn, namespace),
            Command::RemoveImmutableTags { rule } => return policy::remove(txn, rule),
            Command::PutManifestIf { tag, expect, put } => {
                let Command::PutManifest { repo, .. } = put.as_ref() else {
                    return Ok(Outcome::Rejected(Malformed));
                };
                let current = txn.get(&key(TAG, &[repo.as_str(), tag.as_str()]))?;
                let holds = match (expect, &current) {
                    (TagExpect::Absent, None) => true,
                    (TagExpect::At(d), Some(c)) => c.as_slice() == d.as_str().as_bytes(),
                    _ => false,
                };
                if !holds {
                    let current = current
                        .and_then(|c| String::from_utf8(c).ok())
                        .and_then(|c| Digest::parse(&c).ok());
                    return Ok(Outcome::Rejected(TagPrecondition { current }));
                }
                return Self::stage(txn, put);
            }
            Command::DeleteManifest {
                repo,
                digest,
                now_ms,
            } => {
                // Its tags go with it: not if one of them is immutable.
                for kv in txn.tree.scan_prefix(repo_prefix(TAG, repo)) {
                    let (k, v) = kv?;
                    if v.as_ref() != digest.as_str().as_bytes() {
                        continue;
                    }
                    let name =
                        String::from_utf8_lossy(&k[repo_prefix(TAG, repo).len()..]).into_owned();
                    if let Ok(tag) = Tag::parse(&name) {
                        if let Some(refused) = policy::guard(txn, repo, &tag)? {
                            return Ok(refused);
                        }
                    }
                }
                if !Self::delete_manifest(txn, repo, digest, *now_ms)? {
                    return Ok(Outcome::Rejected(ManifestUnknown));
                }
            }
            Command::DeleteTag { repo, tag, now_ms } => {
                let tk = key(TAG, &[repo.as_str(), tag.as_str()]);
                let Some(old) = txn.get(&tk)? else {
                    return Ok(Outcome::Rejected(ManifestUnknown));
                };
                if let Some(refused) = policy::guard(txn, repo, tag)? {
                    return Ok(refused);
                }
                txn.del(tk);
                txn.del(key(retention::TAG_TIME, &[repo.as_str(), tag.as_str()]));
                Self::untag(txn, repo, &old, *now_ms)?;
            }
            Command::PutAccount { account, replace } => {
                return access::put_account(txn, account, *replace)
            }
            Command::RemoveAccount { name } => return access::remove_account(txn, name),
            Command::Grant { rule } => return access::grant(txn, rule),
            Command::Revoke { rule } => return access::revoke(txn, rule),
            Command::SetRules { rules } => return access::set_rules(txn, rules),
            Command::AddSigningKey {
                key,
                drop_retired_before_ms,
            } => return access::add_signing_key(txn, key, *drop_retired_before_ms),
            Command::SetClusterId { id } => {
                if !txn.has(CLUSTER_ID)? {
                    txn.put(CLUSTER_ID.to_vec(), id.as_bytes().to_vec());
                }
            }
            Command::CollectBlobs { links, policy } => {
                for (repo, digest) in links {
                    let lk = key(LINK, &[repo.as_str(), digest.as_str()]);
                    let Some(link) = txn.get(&lk)? else {
                        continue;
                    };
                    if gc::link_collectable(&decode("links", &link)?, policy) {
                        Self::unlink(txn, repo, digest, policy.now_ms)?;
                    }
                }
            }
            Command::CollectManifests {
                repo,
                digests,
                policy,
            } => {
                for digest in digests {
                    if Self::untagged_collectable(txn, repo, digest, policy)? {
                        Self::delete_manifest(txn, repo, digest, policy.now_ms)?;
                    }
                }
            }
            Command::ForgetTombstones { chunks, policy } => {
                for c in chunks {
                    let zk = tombstone_key(c);
                    if let Some(at) = txn.get(&zk)? {
                        if gc::tombstone_forgettable(count(Some(&at)), policy) {
                            txn.del(zk);
                        }
                    }
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// Links a blob into `repo`, or renews the link's upload lease: an
    /// upload or mount that is acknowledged protects the blob until a
    /// manifest references it or the lease runs out.
    /// Links a blob into `repo` (or renews its lease); a new link counts
    /// toward the quotas covering `repo`, and is refused past one of them.
    fn link(
        txn: &mut Txn<'_>,
        repo: &RepoName,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<Option<Outcome>> {
        let lk = key(LINK, &[repo.as_str(), digest.as_str()]);
        let link = match txn.get(&lk)? {
            Some(b) => Link {
                linked_ms: now_ms,
                leased: true,
                ..decode("links", &b)?
            },
            None => {
                let new_repo = !txn.has(&key(REPO, &[repo.as_str()]))?;
                if let Some(refused) = quota::admit_link(txn, repo, digest, new_repo)? {
                    return Ok(Some(refused));
                }
                txn.bump(key(REPO, &[repo.as_str()]), 1)?;
                txn.bump(key(BLOB_LINKS, &[digest.as_str()]), 1)?;
                Link {
                    linked_ms: now_ms,
                    leased: true,
                    refs: 0,
                    unref_ms: None,
                }
            }
        };
        txn.put(lk, encode(&link));
        Ok(None)
    }

    /// Removes a blob's link from `repo`; the last link takes the blob
    /// record with it. Returns whether the link existed.
    fn unlink(txn: &mut Txn<'_>, repo: &RepoName, digest: &Digest, now_ms: u64) -> Result<bool> {
        let lk = key(LINK, &[repo.as_str(), digest.as_str()]);
        if !txn.has(&lk)? {
            return Ok(false);
        }
        txn.del(lk);
        txn.bump(key(REPO, &[repo.as_str()]), -1)?;
        quota::release_link(txn, repo, digest)?;
        if txn.bump(key(BLOB_LINKS, &[digest.as_str()]), -1)? == 0 {
            let bk = key(BLOB, &[digest.as_str()]);
            if let Some(b) = txn.get(&bk)? {
                let record: BlobRecord = decode("blobs", &b)?;
                for c in &record.chunks {
                    // Chunk files go on every node once the tombstone is
                    // older than the grace period.
                    if txn.bump(chunk_key(&c.id), -1)? == 0 {
                        txn.put(tombstone_key(&c.id), now_ms.to_be_bytes().to_vec());
                    }
                }
                txn.del(bk);
            }
        }
        Ok(true)
    }

    fn update_link(
        txn: &mut Txn<'_>,
        repo: &RepoName,
        digest: &Digest,
        f: impl FnOnce(&mut Link),
    ) -> Result<()> {
        txn.update("links", key(LINK, &[repo.as_str(), digest.as_str()]), f)
    }

    fn update_repo_manifest(
        txn: &mut Txn<'_>,
        repo: &RepoName,
        digest: &Digest,
        f: impl FnOnce(&mut RepoManifest),
    ) -> Result<()> {
        let k = key(REPO_MANIFEST, &[repo.as_str(), digest.as_str()]);
        txn.update("repository manifests", k, f)
    }

    /// A tag stopped pointing at the manifest named by `old` (digest text).
    fn untag(txn: &mut Txn<'_>, repo: &RepoName, old: &[u8], now_ms: u64) -> Result<()> {
        let Ok(old) = Digest::parse(&String::from_utf8_lossy(old)) else {
            return Ok(());
        };
        Self::update_repo_manifest(txn, repo, &old, |p| {
            p.tags = p.tags.saturating_sub(1);
            if p.tags == 0 {
                p.untagged_ms = now_ms;
            }
        })
    }

    /// Removes a manifest from `repo` with its tags and referrer entry, and
    /// releases what it held. Returns whether it was there.
    fn delete_manifest(
        txn: &mut Txn<'_>,
        repo: &RepoName,
        digest: &Digest,
        now_ms: u64,
    ) -> Result<bool> {
        let pk = key(REPO_MANIFEST, &[repo.as_str(), digest.as_str()]);
        if !txn.has(&pk)? {
            return Ok(false);
        }
        txn.del(pk);
        txn.bump(key(REPO, &[repo.as_str()]), -1)?;
        let mk = key(MANIFEST, &[digest.as_str()]);
        let record: Option<ManifestRecord> = match txn.get(&mk)? {
            Some(b) => Some(decode("manifests", &b)?),
            None => None,
        };
        if let Some(record) = &record {
            if let Some(subject) = &record.subject {
                txn.del(key(
                    REFERRER,
                    &[repo.as_str(), subject.as_str(), digest.as_str()],
                ));
            }
            for b in &record.blobs {
                Self::update_link(txn, repo, b, |l| {
                    l.refs = l.refs.saturating_sub(1);
                    if l.refs == 0 {
                        l.unref_ms = Some(now_ms);
                    }
                })?;
            }
            for m in record.children.iter().filter(|m| *m != digest) {
                Self::update_repo_manifest(txn, repo, m, |p| {
                    p.parents = p.parents.saturating_sub(1);
                    if p.parents == 0 && p.tags == 0 {
                        p.untagged_ms = now_ms;
                    }
                })?;
            }
        }
        if txn.bump(key(MANIFEST_REFS, &[digest.as_str()]), -1)? == 0 {
            txn.del(mk);
        }
        let prefix = repo_prefix(TAG, repo);
        for kv in txn.tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if v.as_ref() == digest.as_str().as_bytes() {
                // The tag's push time has the same key under its own prefix.
                let mut tk = k.to_vec();
                tk[0] = retention::TAG_TIME;
                txn.del(tk);
                txn.del(k.to_vec());
            }
        }
        Ok(true)
    }

    /// Whether an untagged manifest may go: no tag, no parent index, no
    /// subject still in the repository, and untagged for the grace period.
    fn untagged_collectable(
        txn: &Txn<'_>,
        repo: &RepoName,
        digest: &Digest,
        policy: &GcPolicy,
    ) -> Result<bool> {
        let Some(p) = txn.get(&key(REPO_MANIFEST, &[repo.as_str(), digest.as_str()]))? else {
            return Ok(false);
        };
        let p: RepoManifest = decode("repository manifests", &p)?;
        if !gc::untagged_expired(&p, policy) {
            return Ok(false);
        }
        let subject = match txn.get(&key(MANIFEST, &[digest.as_str()]))? {
            Some(b) => decode::<ManifestRecord>("manifests", &b)?.subject,
            None => None,
        };
        match subject {
            Some(s) => Ok(!txn.has(&key(REPO_MANIFEST, &[repo.as_str(), s.as_str()]))?),
            None => Ok(true),
        }
    }

    // ---- reads ----

    /// The blob record, whichever repositories hold it.
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        match self.tree().get(key(BLOB, &[digest.as_str()]))? {
            Some(b) => Ok(Some(decode("blobs", &b)?)),
            None => Ok(None),
        }
    }

    /// The blob record if the blob is linked into `repo`: digests never leak
    /// across repositories.
    pub fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>> {
        if !self
            .tree()
            .contains_key(key(LINK, &[repo.as_str(), digest.as_str()]))?
        {
            return Ok(None);
        }
        self.blob(digest)
    }

    pub fn manifest_in_repo(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let tree = self.tree();
        if !tree.contains_key(key(REPO_MANIFEST, &[repo.as_str(), digest.as_str()]))? {
            return Ok(None);
        }
        match tree.get(key(MANIFEST, &[digest.as_str()]))? {
            Some(b) => Ok(Some(decode("manifests", &b)?)),
            None => Ok(None),
        }
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.tree().get(key(TAG, &[repo.as_str(), tag.as_str()]))? {
            Some(v) => Ok(Some(Digest::parse(&String::from_utf8_lossy(&v))?)),
            None => Ok(None),
        }
    }

    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(self.tree().contains_key(key(REPO, &[repo.as_str()]))?)
    }

    /// Up to `limit` tags of `repo` in lexical order, starting after `after`,
    /// and whether more follow.
    pub fn tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Tag>, bool)> {
        let prefix = repo_prefix(TAG, repo);
        self.page(&prefix, after, limit, |k, _| Tag::parse(k))
    }

    /// Up to `limit` repository names in lexical order, starting after
    /// `after`, and whether more follow.
    pub fn repositories(&self, after: Option<&str>, limit: usize) -> Result<(Vec<RepoName>, bool)> {
        self.page(&[REPO], after, limit, |k, _| RepoName::parse(k))
    }

    fn page<T>(
        &self,
        prefix: &[u8],
        after: Option<&str>,
        limit: usize,
        parse: impl Fn(&str, &IVec) -> Result<T>,
    ) -> Result<(Vec<T>, bool)> {
        let tree = self.tree();
        let start = match after {
            Some(a) => {
                let mut s = prefix.to_vec();
                s.extend_from_slice(a.as_bytes());
                Bound::Excluded(s)
            }
            None => Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::new();
        for kv in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(parse(&String::from_utf8_lossy(&k[prefix.len()..]), &v)?);
        }
        Ok((out, false))
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        let mut prefix = key(REFERRER, &[repo.as_str(), subject.as_str()]);
        prefix.push(0);
        self.tree()
            .scan_prefix(&prefix)
            .map(|kv| decode("referrers", &kv?.1))
            .collect()
    }

    /// The cluster's name, once the first leader has set it.
    pub fn cluster_id(&self) -> Result<Option<String>> {
        Ok(self
            .tree()
            .get(CLUSTER_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    // ---- access ----

    pub fn account(&self, name: &crate::types::AccountName) -> Result<Option<access::Account>> {
        access::account(&self.tree(), name)
    }

    pub fn accounts(&self) -> Result<Vec<access::Account>> {
        access::accounts(&self.tree())
    }

    /// The immutable-tag rules.
    pub fn immutable_tags(&self) -> Result<Vec<policy::ImmutableTags>> {
        policy::list(&self.tree())
    }

    /// Every replication rule with its cursor.
    pub fn replication_rules(&self) -> Result<Vec<(replication::ReplicationRule, u64)>> {
        replication::all(&self.tree())
    }

    /// Every pull-through mirror rule.
    pub fn mirrors(&self) -> Result<Vec<replication::MirrorRule>> {
        replication::mirrors(&self.tree())
    }

    /// Every quota with its namespace's usage now.
    pub fn quotas(&self) -> Result<Vec<quota::QuotaUsage>> {
        quota::usage(&self.tree())
    }

    /// Whether access control is on: it is as soon as one account exists.
    pub fn has_accounts(&self) -> Result<bool> {
        Ok(self
            .tree()
            .scan_prefix([access::ACCOUNT])
            .next()
            .transpose()?
            .is_some())
    }

    pub fn access_rules(&self) -> Result<Vec<access::AccessRule>> {
        access::rules(&self.tree())
    }

    /// Newest first.
    pub fn signing_keys(&self) -> Result<Vec<access::SigningKey>> {
        access::signing_keys(&self.tree())
    }

    /// Changes with every access command (a cache key for compiled rules).
    pub fn access_version(&self) -> Result<u64> {
        Ok(count(self.tree().get(access::ACCESS_VERSION)?.as_deref()))
    }

    /// Whether any blob record uses the chunk.
    pub fn chunk_referenced(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.tree().contains_key(chunk_key(id))?)
    }

    /// Every manifest stored in `repo`, tagged or not, in digest order.
    pub fn repo_manifests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        let prefix = repo_prefix(REPO_MANIFEST, repo);
        let mut out = Vec::new();
        for kv in self.tree().scan_prefix(&prefix) {
            let (k, _) = kv?;
            let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push(Digest::parse(&text).map_err(|_| Error::SnapshotFormat("bad manifest key"))?);
        }
        Ok(out)
    }

    /// Drops the cluster's name, so that the first leader of the cluster a
    /// restored state starts names a new one (the backup's cluster goes on
    /// existing under its own).
    pub fn forget_cluster_id(&self, mark: &[u8]) -> Result<()> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        batch.remove(CLUSTER_ID);
        batch.insert(APPLIED, mark);
        self.tree().apply_batch(batch)?;
        Ok(())
    }

    // ---- snapshots ----

    /// Writes the whole state (including the applied mark) to `out` and
    /// returns the mark it corresponds to. Applies wait meanwhile, so the
    /// export is exactly one point of the log.
    pub fn export(&self, out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree();
        let mut w = Checksummed::new(out);
        w.write(SNAPSHOT_MAGIC)?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            for part in [&k[..], &v[..]] {
                let len = u32::try_from(part.len())
                    .map_err(|_| Error::SnapshotFormat("record larger than 4 GiB"))?;
                w.write(&len.to_le_bytes())?;
                w.write(part)?;
            }
        }
        w.write(&SNAPSHOT_END.to_le_bytes())?;
        let sum = w.crc.finalize();
        w.inner.write_all(&sum.to_le_bytes()).map_err(snapshot_io)?;
        Ok(tree.get(APPLIED)?.map(|v| v.to_vec()))
    }

    /// Replaces the whole state with a snapshot written by `export`. The new
    /// state is built in a fresh tree and switched to in one step, so a crash
    /// during import leaves the old state intact.
    pub fn import(&self, input: &mut dyn Read) -> Result<Option<Vec<u8>>> {
        let _g = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = count(self.db.get(ACTIVE_TREE)?.as_deref());
        let next = current + 1;
        let name = format!("sm.{next}");
        self.db.drop_tree(name.as_bytes())?;
        let fresh = self.db.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut pending_bytes = 0usize;
        let read = read_snapshot(input, |k, v| {
            pending_bytes += k.len() + v.len();
            batch.insert(k, v);
            if pending_bytes > IMPORT_BATCH_BYTES {
                fresh.apply_batch(std::mem::take(&mut batch))?;
                pending_bytes = 0;
            }
            Ok(())
        })
        .and_then(|()| Ok(fresh.apply_batch(batch)?));
        if let Err(e) = read {
            self.db.drop_tree(name.as_bytes())?;
            return Err(e);
        }
        fresh.flush()?;
        self.db.insert(ACTIVE_TREE, &next.to_be_bytes())?;
        self.db.flush()?;
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        self.db.drop_tree(format!("sm.{current}").as_bytes())?;
        Ok(fresh.get(APPLIED)?.map(|v| v.to_vec()))
    }
}

/// The chunks a snapshot written by `export` references (every chunk of
/// every blob record, each once, with its length), after checking the
/// snapshot's checksum: what a backup must hold for it to be restorable.
pub fn snapshot_chunks(mut input: &[u8]) -> Result<Vec<ChunkRef>> {
    let mut out = BTreeMap::new();
    read_snapshot(&mut input, |k, v| {
        if k.first() == Some(&BLOB) {
            let blob: BlobRecord = decode("blobs", &v)?;
            for c in blob.chunks {
                out.insert(c.id, c);
            }
        }
        Ok(())
    })?;
    Ok(out.into_values().collect())
}

/// Reads a snapshot written by `export`, record by record, and checks its
/// checksum at the end: the callers act on the records only once this
/// returns `Ok`.
fn read_snapshot(
    input: &mut dyn Read,
    mut record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut r = Checksummed::new(input);
    if r.read(8)? != SNAPSHOT_MAGIC {
        return Err(Error::SnapshotFormat("not a Stowage state snapshot"));
    }
    loop {
        let klen = r.read_u32()?;
        if klen == SNAPSHOT_END {
            break;
        }
        let k = r.read(usize::try_from(klen).unwrap_or(usize::MAX))?;
        let vlen = r.read_u32()?;
        let v = r.read(usize::try_from(vlen).unwrap_or(usize::MAX))?;
        record(k, v)?;
    }
    let expect = r.crc.clone().finalize();
    let mut sum = [0u8; 4];
    r.inner.read_exact(&mut sum).map_err(snapshot_io)?;
    if u32::from_le_bytes(sum) != expect {
        return Err(Error::SnapshotFormat("checksum mismatch"));
    }
    Ok(())
}

/// Keeps sled batches of an import bounded in memory.
const IMPORT_BATCH_BYTES: usize = 8 << 20;

fn snapshot_io(source: std::io::Error) -> Error {
    Error::Io {
        op: "stream snapshot",
        path: "<snapshot>".into(),
        source,
    }
}

/// A reader or writer that keeps a CRC of what passed through it.
struct Checksummed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Checksummed<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes).map_err(snapshot_io)
    }
}

impl<R: Read> Checksummed<R> {
    fn read(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let got = (&mut self.inner)
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(snapshot_io)?;
        if got != n {
            return Err(Error::SnapshotFormat("truncated"));
        }
        self.crc.update(&buf);
        Ok(buf)
    }

    fn read_u32(&mut self) -> Result<u32> {
        let b = self.read(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn chunk_key(id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(CHUNK_REFS);
    k.extend_from_slice(id.as_bytes());
    k
}

fn tombstone_key(id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(TOMBSTONE);
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(test)]
mod tests;
