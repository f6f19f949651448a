//! Push replication: the leader follows the committed log from each rule's
//! cursor (replicated, so a restart of every node resumes where it was)
//! and copies what changed in matching repositories to the rule's target
//! through the OCI API: blobs HEAD-first from this cluster's own chunks in
//! resumable pieces, manifests (an index after its children), tags, and
//! deletes when the rule says so. A target that fails only delays its own
//! rule: pushes to this cluster never wait for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use stowage_storage::meta::replication::ReplicationRule;
use stowage_storage::meta::{ChunkRef, Command};
use stowage_storage::types::{Digest, NodeId, RepoName, Tag};
use stowage_storage::Store;

use super::client::{BlobSource, Pushed, Remote};
use crate::chunks::ChunkIo;
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::raft::codec::decode;
use crate::raft::Entry;
use crate::registry::now_ms;
use crate::workers::{Step, Worker};

/// Log entries one step reads per rule.
const ENTRIES_PER_STEP: u64 = 200;
const BLOBS_IN_FLIGHT: usize = 4;
/// Failures per rule the status keeps.
const FAILURES_KEPT: usize = 20;

/// What `stowage replication status` shows of one rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleStatus {
    pub rule: Option<ReplicationRule>,
    /// The last log index whose changes reached the target.
    pub cursor: u64,
    /// Log entries behind this node's applied index, and for how long the
    /// rule has been behind (0 when caught up).
    pub lag_entries: u64,
    pub lag_secs: u64,
    pub bytes_copied: u64,
    pub manifests_copied: u64,
    pub last_error: Option<String>,
    /// The latest failures, `repo:tag` → error.
    pub failures: BTreeMap<String, String>,
    /// The node that replicates (the leader).
    pub worker_node: Option<u64>,
}

#[derive(Default)]
struct Progress {
    bytes_copied: u64,
    manifests_copied: u64,
    last_error: Option<String>,
    failures: BTreeMap<String, String>,
    behind_since_ms: Option<u64>,
}

pub struct Replicator {
    store: Arc<Store>,
    chunks: Arc<ChunkIo>,
    consensus: Arc<Consensus>,
    client: crate::cli::HttpClient,
    progress: Mutex<HashMap<String, Progress>>,
    /// Per rule, the target repository each blob was last pushed to, so a
    /// blob shared by repositories is mounted there instead of sent again.
    placed: Mutex<HashMap<(String, Digest), String>>,
}

/// Blobs `placed` remembers before it starts over.
const PLACED_KEPT: usize = 100_000;

struct LocalBlob<'a> {
    chunks: &'a Arc<ChunkIo>,
    record: &'a [ChunkRef],
    holders: &'a [NodeId],
}

impl BlobSource for LocalBlob<'_> {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        super::client::read_chunks(self.record, offset, len, |id| {
            self.chunks.get(id, self.holders)
        })
        .await
    }
}

/// A rule compiled: its repository glob and tag pattern.
struct Matcher {
    repos: globset::GlobMatcher,
    tags: Option<regex::Regex>,
}

impl Matcher {
    fn new(rule: &ReplicationRule) -> Result<Matcher> {
        let repos = globset::GlobBuilder::new(&rule.repositories)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::AdminRequest(format!("repositories {:?}: {e}", rule.repositories)))?
            .compile_matcher();
        let tags = match &rule.tags {
            Some(t) => Some(
                regex::Regex::new(&format!("^(?:{t})$"))
                    .map_err(|e| Error::AdminRequest(format!("tags {t:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Matcher { repos, tags })
    }

    fn repo(&self, r: &RepoName) -> bool {
        self.repos.is_match(r.as_str())
    }

    fn tag(&self, t: &Tag) -> bool {
        self.tags.as_ref().is_none_or(|re| re.is_match(t.as_str()))
    }
}

/// Checks a rule before it is stored.
pub fn check(rule: &ReplicationRule) -> Result<()> {
    rule.check()
        .map_err(|e| Error::AdminRequest(e.to_string()))?;
    Matcher::new(rule).map(|_| ())
}

impl Replicator {
    pub fn new(
        store: Arc<Store>,
        chunks: Arc<ChunkIo>,
        consensus: Arc<Consensus>,
        client: crate::cli::HttpClient,
    ) -> Replicator {
        Replicator {
            store,
            chunks,
            consensus,
            client,
            progress: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP client replication and mirrors share.
    pub fn client(&self) -> crate::cli::HttpClient {
        self.client.clone()
    }

    /// Every rule with its cursor, lag and this node's record of its work.
    pub fn status(&self) -> Result<Vec<RuleStatus>> {
        let applied = self.consensus.metrics().last_applied.map_or(0, |l| l.index);
        let leader = self.consensus.metrics().current_leader.map(|n| n.0);
        let now = now_ms();
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self
            .store
            .meta
            .replication_rules()?
            .into_iter()
            .map(|(rule, cursor)| {
                let p = progress.get(&rule.name);
                RuleStatus {
                    cursor,
                    lag_entries: applied.saturating_sub(cursor),
                    lag_secs: p
                        .and_then(|p| p.behind_since_ms)
                        .filter(|_| applied > cursor)
                        .map_or(0, |t| now.saturating_sub(t) / 1000),
                    bytes_copied: p.map_or(0, |p| p.bytes_copied),
                    manifests_copied: p.map_or(0, |p| p.manifests_copied),
                    last_error: p.and_then(|p| p.last_error.clone()),
                    failures: p.map(|p| p.failures.clone()).unwrap_or_default(),
                    worker_node: leader,
                    rule: Some(rule.masked()),
                }
            })
            .collect())
    }

    fn note(&self, name: &str, f: impl FnOnce(&mut Progress)) {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(p.entry(name.to_owned()).or_default());
    }

    fn remote(&self, rule: &ReplicationRule) -> Remote {
        Remote::for_account(
            &rule.target,
            &rule.username,
            &rule.password,
            self.client.clone(),
        )
    }

    /// Pushes one manifest (children first, then its blobs) to the target
    /// under `reference`.
    async fn push_manifest(
        &self,
        rule: &ReplicationRule,
        remote: &Remote,
        repo: &RepoName,
        digest: &Digest,
        reference: &str,
    ) -> Result<bool> {
        let Some(record) = self.store.meta.manifest_in_repo(repo, digest)? else {
            // Deleted since: a later entry says so.
            return Ok(false);
        };
        let target = format!("{}{repo}", rule.prefix);
        for child in &record.children {
            Box::pin(self.push_manifest(rule, remote, repo, child, child.as_str())).await?;
        }
        let mut blobs = Vec::new();
        for b in &record.blobs {
            if let Some(rec) = self.store.meta.blob(b)? {
                blobs.push((b.clone(), rec));
            }
        }
        let target_ref = &target;
        let chunks = &self.chunks;
        let placed = &self.placed;
        let name = &rule.name;
        let copied: Vec<u64> = stream::iter(blobs)
            .map(move |(d, rec)| async move {
                let source = LocalBlob {
                    chunks,
                    record: &rec.chunks,
                    holders: &rec.holders,
                };
                let noop = |_: u64| {};
                let key = (name.clone(), d.clone());
                let from = placed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .cloned();
                let pushed = remote
                    .push_blob(
                        target_ref,
                        d.as_str(),
                        rec.size,
                        from.as_deref(),
                        &source,
                        &noop,
                    )
                    .await?;
                let mut map = placed.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() >= PLACED_KEPT {
                    map.clear();
                }
                map.insert(key, target_ref.clone());
                drop(map);
                match pushed {
                    Pushed::Uploaded { bytes, .. } => Ok::<_, Error>(bytes),
                    _ => Ok(0),
                }
            })
            .buffer_unordered(BLOBS_IN_FLIGHT)
            .try_collect()
            .await?;
        remote
            .put_manifest(
                &target,
                reference,
                &record.media_type,
                Bytes::from(record.bytes.clone()),
            )
            .await?;
        let bytes: u64 = copied.iter().sum();
        self.note(&rule.name, |p| {
            p.bytes_copied += bytes;
            p.manifests_copied += 1;
        });
        Ok(true)
    }

    /// What one committed command means for the target.
    async fn replay(
        &self,
        rule: &ReplicationRule,
        m: &Matcher,
        remote: &Remote,
        cmd: &Command,
    ) -> std::result::Result<(), (String, Error)> {
        match cmd {
            Command::PutManifestIf { put, .. } => Box::pin(self.replay(rule, m, remote, put)).await,
            Command::PutManifest {
                repo, digest, tags, ..
            } if m.repo(repo) => {
                let tags: Vec<&Tag> = tags.iter().filter(|t| m.tag(t)).collect();
                let what = |r: &str| format!("{repo}:{r}");
                if tags.is_empty() {
                    if rule.tags.is_none() {
                        self.push_manifest(rule, remote, repo, digest, digest.as_str())
                            .await
                            .map_err(|e| (what(digest.as_str()), e))?;
                    }
                    return Ok(());
                }
                for t in tags {
                    // Only while the tag still names this manifest: a later
                    // entry moves it otherwise.
                    if self.store.meta.tag(repo, t).ok().flatten().as_ref() != Some(digest) {
                        continue;
                    }
                    self.push_manifest(rule, remote, repo, digest, t.as_str())
                        .await
                        .map_err(|e| (what(t.as_str()), e))?;
                }
                Ok(())
            }
            // A delete apply refused (an immutable tag) left the tag here:
            // only what is gone here now goes there.
            Command::DeleteTag { repo, tag, .. }
                if rule.deletes
                    && m.repo(repo)
                    && m.tag(tag)
                    && self.store.meta.tag(repo, tag).ok().flatten().is_none() =>
            {
                let target = format!("{}{repo}", rule.prefix);
                remote
                    .delete_manifest(&target, tag.as_str())
                    .await
                    .map(|_| ())
                    .map_err(|e| (format!("{repo}:{tag}"), e))
            }
            Command::DeleteManifest { repo, digest, .. }
                if rule.deletes
                    && m.repo(repo)
                    && self
                        .store
                        .meta
                        .manifest_in_repo(repo, digest)
                        .ok()
                        .flatten()
                        .is_none() =>
            {
                let target = format!("{}{repo}", rule.prefix);
                remote
                    .delete_manifest(&target, digest.as_str())
                    .await
                    .map(|_| ())
                    .map_err(|e| (format!("{repo}@{digest}"), e))
            }
            // Retention's expiries are deletes too.
            Command::ExpireTags { repo, tags, .. } if rule.deletes && m.repo(repo) => {
                let target = format!("{}{repo}", rule.prefix);
                for (tag, _) in tags.iter().filter(|(t, _)| m.tag(t)) {
                    if self.store.meta.tag(repo, tag).ok().flatten().is_some() {
                        continue;
                    }
                    remote
                        .delete_manifest(&target, tag.as_str())
                        .await
                        .map_err(|e| (format!("{repo}:{tag}"), e))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every matching tag as it is now (a new rule whose log is compacted,
    /// or a resync).
    async fn full_sync(
        &self,
        rule: &ReplicationRule,
        m: &Matcher,
        remote: &Remote,
    ) -> std::result::Result<(), (String, Error)> {
        let mut after: Option<String> = None;
        loop {
            let (repos, more) = self
                .store
                .meta
                .repositories(after.as_deref(), 1000)
                .map_err(|e| (String::new(), e.into()))?;
            for repo in repos.iter().filter(|r| m.repo(r)) {
                let (tags, _) = self
                    .store
                    .meta
                    .tags(repo, None, usize::MAX)
                    .map_err(|e| (String::new(), e.into()))?;
                for t in tags.iter().filter(|t| m.tag(t)) {
                    if let Ok(Some(d)) = self.store.meta.tag(repo, t) {
                        self.push_manifest(rule, remote, repo, &d, t.as_str())
                            .await
                            .map_err(|e| (format!("{repo}:{t}"), e))?;
                    }
                }
            }
            if !more {
                return Ok(());
            }
            after = repos.last().map(|r| r.to_string());
        }
    }

    /// Moves one rule forward; returns whether it has more to do now.
    async fn run_rule(&self, rule: &ReplicationRule, cursor: u64, applied: u64) -> Result<bool> {
        if cursor >= applied {
            self.note(&rule.name, |p| p.behind_since_ms = None);
            return Ok(false);
        }
        self.note(&rule.name, |p| {
            p.behind_since_ms.get_or_insert_with(now_ms);
        });
        let m = Matcher::new(rule)?;
        let remote = self.remote(rule);
        let first_kept = self.store.log.bounds().map_or(applied + 1, |(a, _)| a);
        let start = cursor + 1;
        // Whether anything but cursor bookkeeping went by: the rules' own
        // AdvanceReplication entries must not make another one each step.
        let mut moved = cursor == 0 || start < first_kept;
        let (done, result) = if cursor == 0 || start < first_kept {
            // A new rule (or a resync), or entries compacted away: copy
            // the state as it is, then follow the log from there; a copy
            // that fails halfway leaves the cursor where it was.
            let r = self.full_sync(rule, &m, &remote).await;
            (if r.is_ok() { applied } else { cursor }, r)
        } else {
            let end = applied.min(start + ENTRIES_PER_STEP - 1);
            let store = self.store.clone();
            let raw =
                tokio::task::spawn_blocking(move || store.log.read_range(start, end + 1)).await??;
            if raw.first().map(|(i, _)| *i) != Some(start) {
                // Compacted between the bounds and the read: next step
                // copies the state instead (never skip entries).
                return Ok(true);
            }
            let mut done = cursor;
            let mut result = Ok(());
            for (index, bytes) in raw {
                let entry: Entry =
                    decode(&bytes).map_err(|e| Error::Remote(format!("log entry {index}: {e}")))?;
                if let EntryPayload::Normal(cmd) = &entry.payload {
                    if !matches!(cmd, Command::AdvanceReplication { .. }) {
                        moved = true;
                    }
                    match self.replay(rule, &m, &remote, cmd).await {
                        Ok(()) => {}
                        // The target will never take this one (it deletes
                        // no tags, or its own policy refuses): recorded,
                        // and the rule moves on instead of stalling.
                        Err((what, e @ Error::RemoteRefused(_))) => {
                            tracing::warn!(rule = %rule.name, %what, error = %e, "the target refused a change for good; skipped");
                            self.note(&rule.name, |p| {
                                p.failures.insert(what.clone(), e.to_string());
                                while p.failures.len() > FAILURES_KEPT {
                                    p.failures.pop_first();
                                }
                            });
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                done = index;
            }
            (done, result)
        };
        if let Err((what, e)) = &result {
            tracing::warn!(rule = %rule.name, %what, error = %e, "replication failed; retrying");
            self.note(&rule.name, |p| {
                p.last_error = Some(format!("{what}: {e}"));
                p.failures.insert(what.clone(), e.to_string());
                while p.failures.len() > FAILURES_KEPT {
                    p.failures.pop_first();
                }
            });
        } else {
            self.note(&rule.name, |p| p.last_error = None);
        }
        if !moved && result.is_ok() && done >= applied {
            // Only bookkeeping behind, all of it read: caught up.
            self.note(&rule.name, |p| p.behind_since_ms = None);
            return Ok(false);
        }
        if done > cursor {
            self.consensus
                .propose(Command::AdvanceReplication {
                    name: rule.name.clone(),
                    index: done,
                    reset: false,
                    from: Some(cursor),
                })
                .await?;
        }
        match result {
            Ok(()) => Ok(done < applied),
            Err((what, e)) => Err(Error::Remote(format!("{}: {what}: {e}", rule.name))),
        }
    }
}

/// The worker: on the leader (it has every committed entry and the state
/// they lead to), every rule each step.
pub struct ReplicationWorker(pub Arc<Replicator>);

impl Worker for ReplicationWorker {
    fn name(&self) -> &'static str {
        "replication"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn step(&self) -> Result<Step> {
        let r = &self.0;
        if !r.consensus.raft().is_leader() {
            return Ok(Step::Idle("not the leader; the leader replicates".into()));
        }
        let applied = r.consensus.metrics().last_applied.map_or(0, |l| l.index);
        let rules = r.store.meta.replication_rules()?;
        let mut more = false;
        let mut failed = Vec::new();
        for (rule, cursor) in &rules {
            match r.run_rule(rule, *cursor, applied).await {
                Ok(m) => more |= m,
                // One target failing must not hold back the others.
                Err(e) => failed.push(e.to_string()),
            }
        }
        let what = format!("{} rules at log index {applied}", rules.len());
        if !failed.is_empty() {
            return Err(Error::Remote(failed.join("; ")));
        }
        Ok(if more {
            Step::More(what)
        } else {
            Step::Idle(what)
        })
    }
}
