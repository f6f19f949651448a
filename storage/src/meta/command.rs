//! State changes as data: every change to replicated metadata is a `Command`
//! value, applied by `StateMachine::apply` on a single node and on every
//! replica through the Raft log alike. Commands carry their own timestamps
//! so that applying one is deterministic.

use serde::{Deserialize, Serialize};

use super::access::{AccessRule, Account, SigningKey};
use super::policy::ImmutableTags;
use super::quota::{Quota, QuotaKind};
use super::records::{ChunkRef, Descriptor, ManifestRecord};
use super::replication::{MirrorRule, ReplicationRule};
use super::retention::RetentionRule;
use crate::types::{AccountName, ChunkId, Digest, NodeId, RepoName, Tag};

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
        /// When the upload began writing its chunks (the proposer's clock).
        /// A new record is refused if one of its chunks was tombstoned after
        /// that: some node may have deleted its copy meanwhile.
        written_since_ms: u64,
    },
    /// Links a blob that already exists into `repo` (a mount).
    LinkBlob {
        repo: RepoName,
        digest: Digest,
        now_ms: u64,
    },
    /// Removes a blob from `repo`. The last link's removal drops the blob
    /// record; its chunk files go after the tombstone delay.
    UnlinkBlob {
        repo: RepoName,
        digest: Digest,
        now_ms: u64,
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
        now_ms: u64,
    },
    DeleteTag {
        repo: RepoName,
        tag: Tag,
        now_ms: u64,
    },
    /// Garbage collection: drops the blob links a GC pass found unused.
    /// Apply checks each again under `policy`, so a link that a manifest
    /// or an upload took meanwhile stays.
    CollectBlobs {
        links: Vec<(RepoName, Digest)>,
        policy: GcPolicy,
    },
    /// Garbage collection of untagged manifests (for repositories that opt
    /// in); each is checked again under `policy`.
    CollectManifests {
        repo: RepoName,
        digests: Vec<Digest>,
        policy: GcPolicy,
    },
    /// Forgets chunk tombstones old enough that every node has acted on
    /// them; a copy left behind is then an orphan, removed by its age.
    ForgetTombstones {
        chunks: Vec<ChunkId>,
        policy: GcPolicy,
    },
    /// Names the cluster once, when it first forms; later values are
    /// ignored, so every replica keeps the first.
    SetClusterId {
        id: String,
    },
    /// Creates an account (`replace`: changes an existing one's secret or
    /// expiry). The first user also gets `admin` on `**`.
    PutAccount {
        account: Account,
        replace: bool,
    },
    /// Removes an account and the rules that name it.
    RemoveAccount {
        name: AccountName,
    },
    /// Adds the rule's actions for its pattern and subject.
    Grant {
        rule: AccessRule,
    },
    /// Takes the rule's actions away; a rule left with none goes.
    Revoke {
        rule: AccessRule,
    },
    /// Makes the rules exactly these (`stowage access apply`).
    SetRules {
        rules: Vec<AccessRule>,
    },
    /// A new token signing key; the current one retires (still verifying)
    /// and keys retired before `drop_retired_before_ms` go.
    AddSigningKey {
        key: SigningKey,
        drop_retired_before_ms: u64,
    },
    /// `put` (a `PutManifest`) only if `tag` in its repository is as
    /// `expect`ed when the command is applied: a compare-and-swap on a tag,
    /// decided in apply so two writers racing through different nodes
    /// cannot both win. (A variant of its own, at the end, so entries
    /// already in logs keep their encoding.)
    PutManifestIf {
        tag: Tag,
        expect: TagExpect,
        put: Box<Command>,
    },
    /// Tags the rule covers can no longer move or be deleted.
    AddImmutableTags {
        rule: ImmutableTags,
    },
    RemoveImmutableTags {
        rule: ImmutableTags,
    },
    /// Sets (or replaces) a namespace's quota.
    SetQuota {
        quota: Quota,
    },
    RemoveQuota {
        namespace: String,
    },
    /// Sets (or replaces) the retention rule of a repository glob.
    SetRetention {
        rule: RetentionRule,
    },
    RemoveRetention {
        repositories: String,
    },
    /// Retention: removes tags a GC pass found expired, each only if it
    /// still names the manifest given and is not immutable.
    ExpireTags {
        repo: RepoName,
        tags: Vec<(Tag, Digest)>,
        now_ms: u64,
    },
    /// Adds or replaces a replication rule, its cursor at `cursor`.
    PutReplication {
        rule: ReplicationRule,
        cursor: u64,
    },
    RemoveReplication {
        name: String,
    },
    /// A rule's changes up to `index` reached its target (or, `reset`,
    /// start again from `index`).
    AdvanceReplication {
        name: String,
        index: u64,
        reset: bool,
        /// The cursor the step that copied started from: a step that
        /// began before a resync (or a re-added rule) does not move the
        /// new cursor.
        from: Option<u64>,
    },
    /// Adds or replaces a pull-through mirror rule.
    PutMirror {
        rule: MirrorRule,
    },
    RemoveMirror {
        name: String,
    },
}

/// What a conditional tag update expects to find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagExpect {
    /// The tag does not exist (`If-None-Match: *`).
    Absent,
    /// The tag points at this manifest (`If-Match: "<digest>"`).
    At(Digest),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::PutBlob { repo, digest, .. } => write!(f, "put blob {repo}@{digest}"),
            Command::LinkBlob { repo, digest, .. } => write!(f, "link blob {repo}@{digest}"),
            Command::UnlinkBlob { repo, digest, .. } => write!(f, "unlink blob {repo}@{digest}"),
            Command::PutManifest {
                repo, digest, tags, ..
            } => write!(f, "put manifest {repo}@{digest} tags {tags:?}"),
            Command::DeleteManifest { repo, digest, .. } => {
                write!(f, "delete manifest {repo}@{digest}")
            }
            Command::DeleteTag { repo, tag, .. } => write!(f, "delete tag {repo}:{tag}"),
            Command::CollectBlobs { links, .. } => write!(f, "collect {} blob links", links.len()),
            Command::CollectManifests { repo, digests, .. } => {
                write!(f, "collect {} untagged manifests in {repo}", digests.len())
            }
            Command::ForgetTombstones { chunks, .. } => {
                write!(f, "forget {} chunk tombstones", chunks.len())
            }
            Command::SetClusterId { id } => write!(f, "set cluster id {id}"),
            Command::PutAccount { account, replace } => write!(
                f,
                "{} {} {}",
                if *replace { "update" } else { "add" },
                account.kind,
                account.name
            ),
            Command::RemoveAccount { name } => write!(f, "remove account {name}"),
            Command::Grant { rule } => {
                write!(
                    f,
                    "grant {} on {} to {}",
                    rule.actions, rule.pattern, rule.subject
                )
            }
            Command::Revoke { rule } => {
                write!(
                    f,
                    "revoke {} on {} from {}",
                    rule.actions, rule.pattern, rule.subject
                )
            }
            Command::SetRules { rules } => write!(f, "set {} access rules", rules.len()),
            Command::AddSigningKey { key, .. } => write!(f, "add signing key {}", key.kid),
            Command::PutManifestIf { tag, expect, put } => {
                write!(f, "if {tag} is {expect:?}: {put}")
            }
            Command::AddImmutableTags { rule } => {
                write!(
                    f,
                    "make tags {} in {} immutable",
                    rule.tags, rule.repositories
                )
            }
            Command::RemoveImmutableTags { rule } => {
                write!(
                    f,
                    "let tags {} in {} move again",
                    rule.tags, rule.repositories
                )
            }
            Command::SetQuota { quota } => write!(
                f,
                "quota of {}: {:?} bytes, {:?} repositories",
                quota.namespace, quota.max_bytes, quota.max_repositories
            ),
            Command::RemoveQuota { namespace } => write!(f, "remove the quota of {namespace}"),
            Command::SetRetention { rule } => {
                write!(f, "retention in {}: {rule:?}", rule.repositories)
            }
            Command::RemoveRetention { repositories } => {
                write!(f, "remove the retention rule of {repositories}")
            }
            Command::PutReplication { rule, .. } => {
                write!(f, "replicate {} to {}", rule.repositories, rule.target)
            }
            Command::RemoveReplication { name } => write!(f, "remove replication rule {name}"),
            Command::PutMirror { rule } => write!(f, "mirror {} as {}", rule.upstream, rule.prefix),
            Command::RemoveMirror { name } => write!(f, "remove mirror {name}"),
            Command::AdvanceReplication { name, index, .. } => {
                write!(f, "replication {name} reached {index}")
            }
            Command::ExpireTags { repo, tags, .. } => {
                write!(f, "expire {} tags of {repo}", tags.len())
            }
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
    /// A chunk of a new blob was tombstoned while the upload wrote it; the
    /// client uploads again.
    ChunksCollected(ChunkId),
    AccountExists,
    AccountUnknown,
    RuleUnknown,
    /// The change would leave a cluster with accounts and no administrator.
    LastAdmin,
    /// A conditional tag update found the tag elsewhere (`current`: where
    /// it points, `None`: absent).
    TagPrecondition {
        current: Option<Digest>,
    },
    /// A command that only wraps another was given the wrong kind.
    Malformed,
    /// `tag` would move or go, and `rule` makes it immutable.
    TagImmutable {
        tag: Tag,
        rule: ImmutableTags,
    },
    /// A new link would pass `namespace`'s quota: `used` of `limit`, and
    /// this would add `adding`.
    QuotaExceeded {
        namespace: String,
        kind: QuotaKind,
        limit: u64,
        used: u64,
        adding: u64,
    },
}

/// The clock and the delays a garbage-collection decision is made under;
/// carried in the command so that every replica decides the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPolicy {
    pub now_ms: u64,
    /// Unreferenced data younger than this stays (`gc_grace_secs`).
    pub grace_ms: u64,
    /// How long an upload's blob link protects the blob before a manifest
    /// references it (`upload_expiry_secs`).
    pub lease_ms: u64,
}
