//! Garbage collection, online and decided through the log. The metadata
//! pass (on the leader, or on any node asked to) finds blob links no
//! manifest needs and whose lease and grace are over, untagged manifests of
//! repositories that opted in, and old chunk tombstones, and proposes
//! `Collect…` commands; apply checks each again, so a push that lands
//! between the decision and the apply wins. Each node then removes chunk
//! files nothing references once their tombstone is older than the grace
//! (Garage's `RcEntry::Deletable`), and orphans of uploads that never
//! finished once their lease is over.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use globset::GlobSet;
use serde::{Deserialize, Serialize};
use stowage_storage::meta::{Command, GcPolicy, CLOCK_SKEW_MS};
use stowage_storage::types::{ChunkId, Digest, RepoName};

use super::ChunkIo;
use crate::consensus::Consensus;
use crate::error::Result;
use crate::registry::now_ms;
use crate::workers::{Step, Worker};

/// Entries per `Collect…` command, so one log entry stays small.
const LINKS_PER_COMMAND: usize = 512;
const TOMBSTONES_PER_COMMAND: usize = 4096;
/// A pass repeats while it frees something (an untagged index frees its
/// children, which free their blobs), at most this often.
const MAX_ROUNDS: usize = 8;
/// Expired tags a report names.
const MAX_LISTED: usize = 1000;

/// What the collection delays are, from the configuration.
#[derive(Debug, Clone)]
pub struct GcConfig {
    pub grace: Duration,
    /// How long an acknowledged upload holds its blob before a manifest
    /// references it (the upload expiry).
    pub lease: Duration,
    pub interval: Duration,
    /// Repositories whose untagged manifests are collected.
    pub untagged: GlobSet,
}

impl GcConfig {
    fn policy(&self) -> GcPolicy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        GcPolicy {
            now_ms: now_ms(),
            grace_ms: ms(self.grace),
            lease_ms: ms(self.lease),
        }
    }
}

/// What a metadata pass did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub at_unix_ms: u64,
    pub took_ms: u64,
    pub blob_links: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub manifests: u64,
    pub tombstones: u64,
    /// Tags retention rules removed (or, dry, would remove), and untagged
    /// manifests they collected.
    #[serde(default)]
    pub expired_tags: u64,
    #[serde(default)]
    pub retention_manifests: u64,
    /// `repo:tag` of the first expired tags (all of them up to 1000).
    #[serde(default)]
    pub expired: Vec<String>,
}

/// What a sweep of this node's chunk files did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkSweep {
    pub at_unix_ms: u64,
    pub examined: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub removed_total: u64,
    pub removed_bytes_total: u64,
}

pub struct GcWorker {
    pub(super) consensus: Arc<Consensus>,
    pub(super) io: Arc<ChunkIo>,
    pub(super) config: GcConfig,
    pub(super) last: Mutex<Option<GcReport>>,
}

impl GcWorker {
    /// One metadata pass on this node: after the read barrier (so it sees
    /// every acknowledged write), propose what can go.
    pub async fn run_pass(&self, dry_run: bool) -> Result<GcReport> {
        self.consensus.read_barrier().await?;
        let started = std::time::Instant::now();
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        for _ in 0..MAX_ROUNDS {
            let policy = self.config.policy();
            let store = self.io.store().clone();
            let untagged = self.config.untagged.clone();
            let found = tokio::task::spawn_blocking(move || {
                store
                    .meta
                    .gc_candidates(&policy, |r| untagged.is_match(r.as_str()))
            })
            .await??;
            let store = self.io.store().clone();
            let now = policy.now_ms;
            let retained =
                tokio::task::spawn_blocking(move || store.meta.retention_candidates(now)).await??;
            for (repo, tags) in &retained.tags {
                report.expired_tags += tags.len() as u64;
                for (tag, _) in tags {
                    if report.expired.len() < MAX_LISTED {
                        report.expired.push(format!("{repo}:{tag}"));
                    }
                }
            }
            report.retention_manifests += retained.manifests.len() as u64;
            let retention_nothing = retained.tags.is_empty() && retained.manifests.is_empty();
            if !dry_run {
                for (repo, tags) in retained.tags {
                    for batch in tags.chunks(LINKS_PER_COMMAND) {
                        self.consensus
                            .propose(Command::ExpireTags {
                                repo: repo.clone(),
                                tags: batch.to_vec(),
                                now_ms: now,
                            })
                            .await?;
                    }
                }
                let mut by_rule: BTreeMap<(RepoName, u64), Vec<Digest>> = BTreeMap::new();
                for (repo, digest, delay_ms) in retained.manifests {
                    by_rule.entry((repo, delay_ms)).or_default().push(digest);
                }
                for ((repo, delay_ms), digests) in by_rule {
                    for batch in digests.chunks(LINKS_PER_COMMAND) {
                        self.consensus
                            .propose(Command::CollectManifests {
                                repo: repo.clone(),
                                digests: batch.to_vec(),
                                // Never sooner than GC's own grace: a child
                                // pushed by digest just before its index is
                                // untagged for a moment.
                                policy: GcPolicy {
                                    grace_ms: delay_ms.max(policy.grace_ms),
                                    ..policy
                                },
                            })
                            .await?;
                    }
                }
            }
            report.blobs += found.blobs;
            report.bytes += found.bytes;
            report.blob_links += found.links.len() as u64;
            report.manifests += found.manifests.len() as u64;
            report.tombstones += found.tombstones.len() as u64;
            let nothing = retention_nothing
                && found.links.is_empty()
                && found.manifests.is_empty()
                && found.tombstones.is_empty();
            if dry_run || nothing {
                break;
            }
            let mut by_repo: BTreeMap<RepoName, Vec<Digest>> = BTreeMap::new();
            for (repo, digest) in found.manifests {
                by_repo.entry(repo).or_default().push(digest);
            }
            for (repo, digests) in by_repo {
                for batch in digests.chunks(LINKS_PER_COMMAND) {
                    self.consensus
                        .propose(Command::CollectManifests {
                            repo: repo.clone(),
                            digests: batch.to_vec(),
                            policy,
                        })
                        .await?;
                }
            }
            for batch in found.links.chunks(LINKS_PER_COMMAND) {
                self.consensus
                    .propose(Command::CollectBlobs {
                        links: batch.to_vec(),
                        policy,
                    })
                    .await?;
            }
            for batch in found.tombstones.chunks(TOMBSTONES_PER_COMMAND) {
                self.consensus
                    .propose(Command::ForgetTombstones {
                        chunks: batch.to_vec(),
                        policy,
                    })
                    .await?;
            }
        }
        report.at_unix_ms = now_ms();
        report.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !dry_run {
            if report.blob_links + report.manifests + report.expired_tags > 0 {
                tracing::info!(
                    expired_tags = report.expired_tags,
                    blob_links = report.blob_links,
                    blobs = report.blobs,
                    bytes = report.bytes,
                    manifests = report.manifests,
                    "garbage collection pass"
                );
            }
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        }
        Ok(report)
    }

    pub fn last(&self) -> Option<GcReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Worker for GcWorker {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn step(&self) -> Result<Step> {
        // One node decides; the others would only propose the same again.
        if !self.consensus.raft().is_leader() {
            return Ok(Step::Idle("not the leader: the leader collects".into()));
        }
        let r = self.run_pass(false).await?;
        Ok(Step::Idle(format!(
            "collected {} blob links ({} blobs, {} bytes), {} manifests, forgot {} tombstones",
            r.blob_links, r.blobs, r.bytes, r.manifests, r.tombstones
        )))
    }
}

/// Removes this node's chunk files that nothing needs.
pub struct ChunkGcWorker {
    pub(super) io: Arc<ChunkIo>,
    pub(super) config: GcConfig,
    pub(super) last: Mutex<ChunkSweep>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether a chunk file nothing references may go. A copy older than its
/// tombstone goes once the tombstone is older than the grace; a copy
/// written since (an upload that is still to be recorded), or one never
/// referenced at all (an upload that never finished), goes only once it
/// is older than the upload lease.
pub fn unreferenced_deletable(
    modified_ms: u64,
    tombstone_ms: Option<u64>,
    policy: &GcPolicy,
) -> bool {
    if let Some(t) = tombstone_ms {
        if modified_ms.saturating_add(CLOCK_SKEW_MS) < t
            && t.saturating_add(policy.grace_ms) <= policy.now_ms
        {
            return true;
        }
    }
    modified_ms.saturating_add(policy.lease_ms) <= policy.now_ms
}

impl ChunkGcWorker {
    pub fn sweep(&self) -> Result<ChunkSweep> {
        let store = self.io.store();
        let mut live = HashSet::<ChunkId>::new();
        store.uploads.for_each_chunk(|c| {
            live.insert(c.id);
        })?;
        let policy = self.config.policy();
        let report = store.chunks.sweep(|id, modified| {
            if live.contains(id) || self.io.is_pinned(id) || store.meta.chunk_referenced(id)? {
                return Ok(false);
            }
            Ok(unreferenced_deletable(
                unix_ms(modified),
                store.meta.tombstone(id)?,
                &policy,
            ))
        })?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = ChunkSweep {
            at_unix_ms: now_ms(),
            examined: report.examined,
            removed: report.removed,
            removed_bytes: report.removed_bytes,
            removed_total: last.removed_total + report.removed,
            removed_bytes_total: last.removed_bytes_total + report.removed_bytes,
        };
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                bytes = report.removed_bytes,
                "removed chunk files nothing references"
            );
        }
        Ok(last.clone())
    }

    pub fn last(&self) -> ChunkSweep {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct ChunkGcTask(pub(super) Arc<ChunkGcWorker>);

impl Worker for ChunkGcTask {
    fn name(&self) -> &'static str {
        "chunk-gc"
    }

    fn interval(&self) -> Duration {
        self.0.config.interval
    }

    async fn step(&self) -> Result<Step> {
        let w = self.0.clone();
        let s = tokio::task::spawn_blocking(move || w.sweep()).await??;
        Ok(Step::Idle(format!(
            "examined {} chunk files, removed {} ({} bytes)",
            s.examined, s.removed, s.removed_bytes
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(now_ms: u64, grace_ms: u64, lease_ms: u64) -> GcPolicy {
        GcPolicy {
            now_ms,
            grace_ms,
            lease_ms,
        }
    }

    #[test]
    fn copies_older_than_their_tombstone_go_after_the_grace() {
        let t = 100_000;
        // Written long before the tombstone: goes once the grace is over.
        assert!(!unreferenced_deletable(
            50_000,
            Some(t),
            &p(t + 5, 10, 1 << 40)
        ));
        assert!(unreferenced_deletable(
            50_000,
            Some(t),
            &p(t + 10, 10, 1 << 40)
        ));
        // Written (or rewritten by an upload) around or after the
        // tombstone: only the lease lets it go.
        assert!(!unreferenced_deletable(
            t - 1_000,
            Some(t),
            &p(t + 10_000, 0, 60_000)
        ));
        assert!(unreferenced_deletable(
            t - 1_000,
            Some(t),
            &p(t + 60_000, 0, 60_000)
        ));
        // Never referenced: an orphan of an upload, held by the lease.
        assert!(!unreferenced_deletable(t, None, &p(t + 59_999, 0, 60_000)));
        assert!(unreferenced_deletable(t, None, &p(t + 60_000, 0, 60_000)));
    }
}
