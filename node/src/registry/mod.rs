//! The registry service: what the HTTP handlers call. It turns API
//! operations into state-machine reads and `Command`s through `Consensus`,
//! and moves blob bytes through `ChunkIo`. It knows nothing of HTTP framing
//! and never touches sled itself.
//!
//! Layout: `uploads.rs` (upload sessions and finishing a blob, and the job
//! that expires abandoned ones), `ingest.rs` (the streaming upload
//! pipeline), this file (blobs, manifests, listings). Chunk bytes go
//! through the chunk subsystem (`crate::chunks`).

mod ingest;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stowage_storage::meta::policy::ImmutableTags;
use stowage_storage::meta::quota::{Quota, QuotaKind, QuotaUsage};
use stowage_storage::meta::replication::ReplicationRule;
use stowage_storage::meta::retention::RetentionRule;
use stowage_storage::meta::{
    BlobRecord, Command, Descriptor, ManifestRecord, Outcome, Rejection, TagExpect,
};
use stowage_storage::types::{Digest, NodeId, Reference, RepoName, Tag, Zone};
use stowage_storage::Store;
use tokio::sync::Semaphore;

use self::ingest::Ingest;
pub use self::uploads::{ChunkBounds, UploadExpiry};
pub use crate::chunks::Replication;
use crate::chunks::{ChunkIo, Lifecycle};
use crate::cluster::peers::Peers;
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::manifest::{self, media};

/// Registry settings that shape behaviour, with their units.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    pub zone: Zone,
    /// Where this node's HTTP API is reachable by its peers.
    pub http_addr: String,
    pub chunk_size_bytes: usize,
    pub max_manifest_bytes: usize,
    /// Upload sessions idle for longer than this are cancelled.
    pub upload_expiry: Duration,
    pub max_inflight_chunk_writes: usize,
    pub replication: Replication,
    /// A request body idle this long fails (`body_idle_timeout_secs`).
    pub body_idle_timeout: Duration,
}

pub struct Registry {
    pub settings: Settings,
    store: Arc<Store>,
    consensus: Arc<Consensus>,
    chunks: Arc<ChunkIo>,
    lifecycle: Arc<Lifecycle>,
    backups: Arc<crate::backup::Backups>,
    replicator: Arc<crate::replication::push::Replicator>,
    ingest: Ingest,
    /// Upload sessions in use on this node (see `uploads::Active`).
    active_sessions: Mutex<HashMap<String, Arc<uploads::Active>>>,
    peers: Arc<Peers>,
}

/// Where a manifest lookup landed.
pub struct FoundManifest {
    pub digest: Digest,
    pub record: ManifestRecord,
}

/// The 403 for a push past a namespace's quota, with the numbers.
pub fn quota_denied(r: &Rejection) -> Error {
    match r {
        Rejection::QuotaExceeded {
            namespace,
            kind: QuotaKind::Bytes,
            limit,
            used,
            adding,
        } => Error::Denied(format!(
            "namespace {namespace} is over its quota: {} of {} used, and this blob needs {} more",
            human_bytes(*used),
            human_bytes(*limit),
            human_bytes(*adding)
        )),
        Rejection::QuotaExceeded {
            namespace,
            limit,
            used,
            ..
        } => Error::Denied(format!(
            "namespace {namespace} may hold {limit} repositories and holds {used}: no new repository"
        )),
        other => Error::Denied(format!("{other:?}")),
    }
}

/// Bytes for people: `1.5 GiB (1610612736 bytes)`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "bytes" {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {unit} ({n} bytes)")
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the referrers API answers.
pub struct Referrers {
    pub descriptors: Vec<Descriptor>,
    pub filtered_by_artifact_type: bool,
}

impl Registry {
    pub fn new(
        settings: Settings,
        store: Arc<Store>,
        consensus: Arc<Consensus>,
        peers: Arc<Peers>,
        chunks: Arc<ChunkIo>,
        lifecycle: Arc<Lifecycle>,
        backups: Arc<crate::backup::Backups>,
        replicator: Arc<crate::replication::push::Replicator>,
    ) -> Arc<Self> {
        let ingest = Ingest {
            chunks: chunks.clone(),
            write_permits: Arc::new(Semaphore::new(settings.max_inflight_chunk_writes.max(1))),
            body_idle: settings.body_idle_timeout,
        };
        Arc::new(Registry {
            settings,
            store,
            consensus,
            chunks,
            lifecycle,
            backups,
            replicator,
            ingest,
            active_sessions: Mutex::new(HashMap::new()),
            peers,
        })
    }

    /// Ready when a leader is known and this node has caught up with it.
    pub async fn readiness(&self) -> Result<()> {
        self.consensus.readiness().await
    }

    pub fn cluster_id(&self) -> Result<Option<String>> {
        Ok(self.store.meta.cluster_id()?)
    }

    /// This node's data directory incarnation.
    pub fn store_incarnation(&self) -> &str {
        self.store.incarnation()
    }

    /// The HTTP address of `node`, learned by greeting it if need be.
    pub async fn http_addr_of(&self, node: NodeId) -> Option<String> {
        if let Some(a) = self.peers.state(node).http_addr {
            return Some(a);
        }
        let info = self.consensus.members().remove(&node)?;
        let spec = crate::cluster::PeerSpec { id: node, info };
        crate::cluster::bootstrap::hello(&self.peers, self.settings.node_id, &spec)
            .await
            .map(|h| h.http_addr)
    }

    /// This node's free space, reserve and ballast.
    pub fn disk_status(&self) -> crate::disk::DiskStatus {
        crate::disk::status(&self.store)
    }

    pub fn consensus(&self) -> &Arc<Consensus> {
        &self.consensus
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    pub fn backups(&self) -> &Arc<crate::backup::Backups> {
        &self.backups
    }

    /// Proposes a change to a replicated setting; a rule that is not there
    /// is `unknown()`, any other refusal says what apply said.
    async fn propose_setting(&self, cmd: Command, unknown: impl FnOnce() -> String) -> Result<()> {
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(Rejection::RuleUnknown) => Err(Error::AdminRequest(unknown())),
            Outcome::Rejected(other) => Err(Error::AdminRequest(format!("refused: {other:?}"))),
        }
    }

    /// Every replication rule with its progress.
    pub async fn replication(&self) -> Result<Vec<crate::replication::push::RuleStatus>> {
        self.consensus.read_barrier().await?;
        self.replicator.status()
    }

    /// Adds (or replaces) a rule, removes one, or (resync) makes one copy
    /// everything again.
    pub async fn change_replication(&self, op: &str, rule: ReplicationRule) -> Result<()> {
        let cmd = match op {
            "add" => {
                crate::replication::push::check(&rule)?;
                Command::PutReplication { rule, cursor: 0 }
            }
            "remove" => Command::RemoveReplication { name: rule.name },
            "resync" => Command::AdvanceReplication {
                name: rule.name,
                index: 0,
                reset: true,
                from: None,
            },
            other => {
                return Err(Error::AdminRequest(format!(
                    "op {other:?}: add, remove or resync"
                )))
            }
        };
        self.propose_setting(cmd, || "no such replication rule".into())
            .await
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.chunks.metrics()
    }

    /// Bytes in the files directly under `sub` of the data directory
    /// (`log`, `snapshots`), for metrics.
    pub fn dir_bytes(&self, sub: &str) -> u64 {
        std::fs::read_dir(self.store.data_dir().join(sub)).map_or(0, |d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
    }

    /// Upload sessions open on this node.
    pub fn upload_sessions(&self) -> u64 {
        self.store.uploads.len() as u64
    }

    /// Refuses a push (a new upload, its bodies, a mount, a manifest) while
    /// this node's disk is below its reserve, before it writes anything or
    /// proposes to the Raft log: the reserve is the log's room, and openraft
    /// treats a failed log write as fatal. Deletes and admin changes are
    /// not pushes: they are small, and deletes are how space is freed.
    fn admit_push(&self) -> Result<()> {
        Ok(self.store.space.check()?)
    }

    /// `admit_push` for a request whose body is still unread: a refused
    /// body is read and dropped first (up to a bound), since hyper closes a
    /// connection whose request body was left unread, and an HTTP/1.1
    /// client still sending would see a reset instead of the 507.
    async fn admit_push_draining<B>(&self, body: &mut B) -> Result<()>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        if let Err(e) = self.admit_push() {
            ingest::drain(body, self.settings.body_idle_timeout).await;
            return Err(e);
        }
        Ok(())
    }

    async fn propose(&self, cmd: Command) -> Result<Outcome> {
        self.consensus.propose(cmd).await
    }

    /// Runs `read`; if it finds nothing, waits for the read barrier (so a
    /// write acknowledged by another node is visible) and runs it again.
    async fn read_through<T>(&self, read: impl Fn() -> Result<Option<T>>) -> Result<Option<T>> {
        if let Some(v) = read()? {
            return Ok(Some(v));
        }
        self.consensus.read_barrier().await?;
        read()
    }

    // ---- blobs ----

    pub async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobRecord> {
        let found = self
            .read_through(|| Ok(self.store.meta.blob_in_repo(repo, digest)?))
            .await?;
        if let Some(b) = found {
            return Ok(b);
        }
        // A pull-through mirror fetches what it lacks.
        if let Some((rule, up)) = crate::replication::mirror::rule_for(self, repo)? {
            crate::replication::mirror::pull_one_blob(self, &rule, &up, repo, digest).await?;
            if let Some(b) = self.store.meta.blob_in_repo(repo, digest)? {
                return Ok(b);
            }
        }
        Err(Error::BlobUnknown(digest.clone()))
    }

    /// Whether `repo` holds the blob on this node's view (no barrier).
    pub fn has_blob_here(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.store.meta.blob_in_repo(repo, digest)?.is_some())
    }

    pub fn is_leader(&self) -> bool {
        self.consensus.raft().is_leader()
    }

    pub fn replication_client(&self) -> crate::cli::HttpClient {
        self.replicator.client()
    }

    /// The pull-through mirror rules.
    pub fn mirrors(&self) -> Result<Vec<stowage_storage::meta::replication::MirrorRule>> {
        Ok(self.store.meta.mirrors()?)
    }

    /// Adds (or replaces) a mirror rule, or (`None`) removes one.
    pub async fn change_mirror(
        &self,
        name: &str,
        rule: Option<stowage_storage::meta::replication::MirrorRule>,
    ) -> Result<()> {
        let cmd = match rule {
            Some(rule) => {
                rule.check()
                    .map_err(|e| Error::AdminRequest(e.to_string()))?;
                Command::PutMirror { rule }
            }
            None => Command::RemoveMirror {
                name: name.to_owned(),
            },
        };
        self.propose_setting(cmd, || format!("no mirror {name}"))
            .await
    }

    /// Repositories whose names start with `prefix`.
    pub fn repositories_under(&self, prefix: &str) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (repos, more) = self.store.meta.repositories(after.as_deref(), 1000)?;
            out.extend(
                repos
                    .iter()
                    .filter(|r| r.as_str().starts_with(prefix))
                    .cloned(),
            );
            if !more {
                return Ok(out);
            }
            after = repos.last().map(|r| r.to_string());
        }
    }

    pub fn local_tags(&self, repo: &RepoName) -> Result<Vec<Tag>> {
        Ok(self.store.meta.tags(repo, None, usize::MAX)?.0)
    }

    pub fn local_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        Ok(self.store.meta.tag(repo, tag)?)
    }

    /// Streams bytes `start..end` of a blob, after checking every chunk
    /// they need is here or on a reachable peer, so the answer is an error
    /// rather than a truncated body when it cannot be served.
    pub async fn blob_stream(
        &self,
        record: &BlobRecord,
        start: u64,
        end: u64,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        let needed: Vec<_> = crate::chunks::pieces_in_range(&record.chunks, start, end)
            .into_iter()
            .map(|p| p.0)
            .collect();
        self.chunks.ensure_available(&needed).await?;
        Ok(self
            .chunks
            .stream(record.chunks.clone(), record.holders.clone(), start, end))
    }

    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let cmd = Command::UnlinkBlob {
            repo: repo.clone(),
            digest: digest.clone(),
            now_ms: now_ms(),
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(_) => Err(Error::BlobUnknown(digest.clone())),
        }
    }

    /// Links an existing blob into `repo`. With `from`, the blob must be in
    /// that repository; without, anywhere in the registry. Returns whether
    /// it was mounted (otherwise the client uploads it).
    pub async fn mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        self.admit_push()?;
        let found = match from {
            Some(from) => self
                .read_through(|| Ok(self.store.meta.blob_in_repo(from, digest)?))
                .await?
                .is_some(),
            None => self
                .read_through(|| Ok(self.store.meta.blob(digest)?))
                .await?
                .is_some(),
        };
        if !found {
            return Ok(false);
        }
        let cmd = Command::LinkBlob {
            repo: repo.clone(),
            digest: digest.clone(),
            now_ms: now_ms(),
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(true),
            // An upload in its place would be refused too: say so now.
            Outcome::Rejected(r @ Rejection::QuotaExceeded { .. }) => Err(quota_denied(&r)),
            Outcome::Rejected(_) => Ok(false),
        }
    }

    // ---- manifests ----

    /// Stores a manifest under `reference` (and the extra `tags`), after
    /// checking it parses and its digest matches a digest reference.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        extra_tags: Vec<Tag>,
        content_type: Option<&str>,
        bytes: Vec<u8>,
        expect: Option<TagExpect>,
    ) -> Result<(Digest, Option<Digest>)> {
        self.admit_push()?;
        let cas_tag = match (reference, &expect) {
            (_, None) => None,
            (Reference::Tag(t), Some(_)) => Some(t.clone()),
            (Reference::Digest(_), Some(_)) => {
                return Err(Error::BadHeader {
                    name: "If-Match",
                    reason: "a conditional update names a tag, not a digest".into(),
                })
            }
        };
        let parsed = manifest::parse(content_type, &bytes)?;
        let (digest, mut tags) = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(Error::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                (actual, vec![])
            }
            Reference::Tag(t) => (
                Digest::of(stowage_storage::types::DigestAlgorithm::Sha256, &bytes),
                vec![t.clone()],
            ),
        };
        tags.extend(extra_tags);
        // Check references here for a clear early answer; apply checks again
        // so a concurrent delete cannot slip between.
        for b in &parsed.blobs {
            if self
                .read_through(|| Ok(self.store.meta.blob_in_repo(repo, b)?))
                .await?
                .is_none()
            {
                return Err(Error::ManifestBlobUnknown(b.clone()));
            }
        }
        let size = bytes.len() as u64;
        let referrer = parsed
            .subject
            .as_ref()
            .map(|_| parsed.descriptor(&digest, size));
        let subject = parsed.subject.clone();
        let record = ManifestRecord {
            media_type: parsed.media_type,
            bytes,
            blobs: parsed.blobs,
            children: parsed.children,
            subject: parsed.subject,
            created_ms: now_ms(),
        };
        let mut cmd = Command::PutManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            record: Box::new(record),
            tags,
            referrer,
        };
        if let (Some(tag), Some(expect)) = (cas_tag, expect) {
            cmd = Command::PutManifestIf {
                tag,
                expect,
                put: Box::new(cmd),
            };
        }
        match self.propose(cmd).await? {
            Outcome::Done => Ok((digest, subject)),
            Outcome::Rejected(Rejection::TagImmutable { tag, rule }) => {
                Err(Error::TagImmutable { tag, rule })
            }
            Outcome::Rejected(Rejection::TagPrecondition { current }) => {
                Err(Error::TagPrecondition {
                    repo: repo.clone(),
                    reference: reference.to_string(),
                    current,
                })
            }
            Outcome::Rejected(Rejection::ManifestBlobUnknown(d) | Rejection::BlobUnknown(d)) => {
                Err(Error::ManifestBlobUnknown(d))
            }
            // A chunk collected meanwhile, or a rejection only access
            // commands give: the manifest's content is not all there.
            Outcome::Rejected(_) => Err(Error::ManifestUnknown),
        }
    }

    /// Finds a manifest by tag or digest. Tags always go through the read
    /// barrier, since a tag can move; digests only on a miss.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<FoundManifest> {
        match self.manifest_here(repo, reference).await {
            Err(Error::ManifestUnknown) => {
                // A pull-through mirror fetches what it lacks.
                let Some((rule, up)) = crate::replication::mirror::rule_for(self, repo)? else {
                    return Err(Error::ManifestUnknown);
                };
                if !crate::replication::mirror::pull_manifest(self, &rule, &up, repo, reference)
                    .await?
                {
                    return Err(Error::ManifestUnknown);
                }
                self.manifest_here(repo, reference).await
            }
            other => other,
        }
    }

    async fn manifest_here(&self, repo: &RepoName, reference: &Reference) -> Result<FoundManifest> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                self.consensus.read_barrier().await?;
                self.store
                    .meta
                    .tag(repo, t)?
                    .ok_or(Error::ManifestUnknown)?
            }
        };
        let record = self
            .read_through(|| Ok(self.store.meta.manifest_in_repo(repo, &digest)?))
            .await?
            .ok_or(Error::ManifestUnknown)?;
        Ok(FoundManifest { digest, record })
    }

    /// Picks the manifest to serve to a client that sent `accept`: the one
    /// found, or, for a client that takes no index, the linux/amd64 image of
    /// an index (what older Docker clients expect).
    pub async fn negotiate(
        &self,
        repo: &RepoName,
        found: FoundManifest,
        accept: &[String],
    ) -> Result<FoundManifest> {
        if manifest::accepts(accept, &found.record.media_type) {
            return Ok(found);
        }
        if media::is_index(&found.record.media_type) {
            if let Some(child) = default_platform_child(&found.record.bytes) {
                let child = self.manifest(repo, &Reference::Digest(child)).await?;
                if manifest::accepts(accept, &child.record.media_type) {
                    return Ok(child);
                }
            }
        }
        Err(Error::ManifestNotAcceptable {
            media_type: found.record.media_type,
            accept: accept.join(", "),
        })
    }

    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let cmd = match reference {
            Reference::Digest(d) => Command::DeleteManifest {
                repo: repo.clone(),
                digest: d.clone(),
                now_ms: now_ms(),
            },
            Reference::Tag(t) => Command::DeleteTag {
                repo: repo.clone(),
                tag: t.clone(),
                now_ms: now_ms(),
            },
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(Rejection::TagImmutable { tag, rule }) => {
                Err(Error::TagImmutable { tag, rule })
            }
            Outcome::Rejected(_) => Err(Error::ManifestUnknown),
        }
    }

    // ---- tag policies ----

    pub async fn immutable_tags(&self) -> Result<Vec<ImmutableTags>> {
        self.consensus.read_barrier().await?;
        Ok(self.store.meta.immutable_tags()?)
    }

    /// Every quota with its namespace's usage.
    pub async fn quotas(&self) -> Result<Vec<QuotaUsage>> {
        self.consensus.read_barrier().await?;
        Ok(self.store.meta.quotas()?)
    }

    /// Sets a namespace's quota, or (`None`) removes it.
    pub async fn change_quota(&self, namespace: &str, quota: Option<Quota>) -> Result<()> {
        let cmd = match quota {
            Some(quota) => Command::SetQuota { quota },
            None => Command::RemoveQuota {
                namespace: namespace.to_owned(),
            },
        };
        self.propose_setting(cmd, || format!("namespace {namespace} has no quota"))
            .await
    }

    pub async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        self.consensus.read_barrier().await?;
        Ok(self.store.meta.retention_rules()?)
    }

    /// Sets the retention rule of a repository glob, or (`None`) removes it.
    pub async fn change_retention(
        &self,
        repositories: &str,
        rule: Option<RetentionRule>,
    ) -> Result<()> {
        let cmd = match rule {
            Some(rule) => Command::SetRetention { rule },
            None => Command::RemoveRetention {
                repositories: repositories.to_owned(),
            },
        };
        self.propose_setting(cmd, || format!("no retention rule for {repositories}"))
            .await
    }

    /// Adds (`add`) or removes an immutable-tag rule.
    pub async fn change_immutable_tags(&self, rule: ImmutableTags, add: bool) -> Result<()> {
        let cmd = if add {
            Command::AddImmutableTags { rule }
        } else {
            Command::RemoveImmutableTags { rule }
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(r) => Err(Error::AdminRequest(match r {
                Rejection::RuleUnknown => "no such immutable-tag rule".into(),
                other => format!("refused: {other:?}"),
            })),
        }
    }

    // ---- listings ----

    pub async fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Tag>, bool)> {
        self.consensus.read_barrier().await?;
        if !self.store.meta.repo_exists(repo)? {
            return Err(Error::NameUnknown(repo.clone()));
        }
        Ok(self.store.meta.tags(repo, last, limit)?)
    }

    pub async fn catalog(&self, last: Option<&str>, limit: usize) -> Result<(Vec<RepoName>, bool)> {
        self.consensus.read_barrier().await?;
        Ok(self.store.meta.repositories(last, limit)?)
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        self.consensus.read_barrier().await?;
        let mut descriptors = self.store.meta.referrers(repo, subject)?;
        if let Some(at) = artifact_type {
            descriptors.retain(|d| d.artifact_type.as_deref() == Some(at));
        }
        Ok(Referrers {
            descriptors,
            filtered_by_artifact_type: artifact_type.is_some(),
        })
    }
}

/// The linux/amd64 entry of an index, if it has one.
fn default_platform_child(index: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(index).ok()?;
    v.get("manifests")?.as_array()?.iter().find_map(|m| {
        let p = m.get("platform")?;
        let ok = p.get("os")?.as_str()? == "linux" && p.get("architecture")?.as_str()? == "amd64";
        ok.then(|| Digest::parse(m.get("digest")?.as_str()?).ok())
            .flatten()
    })
}
