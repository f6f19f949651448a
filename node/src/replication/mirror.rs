//! Pull mode: repositories under a mirror rule's prefix are a pull-through
//! cache of an upstream registry. A manifest or blob a client asks for and
//! this cluster lacks is fetched from the upstream (blobs streamed through
//! the ordinary upload pipeline, in pieces) and stored as ordinary
//! replicated content, so the next pull is served here even with the
//! upstream gone; the leader refreshes mirrored tags every rule interval.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::StreamBody;
use hyper::body::Frame;
use stowage_storage::meta::replication::MirrorRule;
use stowage_storage::types::{Digest, Reference, RepoName};

use super::client::{descriptors, Remote, PIECE_BYTES};
use crate::error::{Error, Result};
use crate::registry::{now_ms, Registry};
use crate::workers::{Step, Worker};

fn remote(reg: &Registry, rule: &MirrorRule) -> Remote {
    Remote::for_account(
        &rule.upstream,
        &rule.username,
        &rule.password,
        reg.replication_client(),
    )
}

/// The rule `repo` is mirrored under, with the upstream repository.
pub fn rule_for(reg: &Registry, repo: &RepoName) -> Result<Option<(MirrorRule, String)>> {
    Ok(reg
        .mirrors()?
        .into_iter()
        .find_map(|r| r.upstream_repo(repo.as_str()).map(|u| (r, u))))
}

type Frames = Pin<Box<dyn Stream<Item = std::result::Result<Frame<Bytes>, Error>> + Send>>;

/// An upstream blob as a request body, read in pieces.
fn upstream_body(
    remote: Arc<Remote>,
    repo: String,
    digest: String,
    size: u64,
) -> StreamBody<Frames> {
    let s = futures_util::stream::unfold(0u64, move |offset| {
        let (remote, repo, digest) = (remote.clone(), repo.clone(), digest.clone());
        async move {
            if offset >= size {
                return None;
            }
            let len = PIECE_BYTES.min(size - offset);
            match remote.blob_range(&repo, &digest, offset, len).await {
                Ok(b) if !b.is_empty() => {
                    let next = offset + b.len() as u64;
                    Some((Ok(Frame::data(b)), next))
                }
                Ok(_) => Some((
                    Err(Error::Remote(format!(
                        "{digest}: the upstream sent no bytes at {offset}"
                    ))),
                    size,
                )),
                Err(e) => Some((Err(e), size)),
            }
        }
    });
    StreamBody::new(Box::pin(s) as Frames)
}

/// Stores one upstream blob here unless the repository has it.
async fn pull_blob(
    reg: &Registry,
    remote: &Arc<Remote>,
    up_repo: &str,
    repo: &RepoName,
    digest: &str,
    size: Option<u64>,
) -> Result<()> {
    let d = Digest::parse(digest).map_err(Error::from_parse)?;
    if reg.has_blob_here(repo, &d)? {
        return Ok(());
    }
    let size = match size {
        Some(s) => s,
        None => remote
            .blob_size(up_repo, digest)
            .await?
            .ok_or_else(|| Error::BlobUnknown(d.clone()))?,
    };
    let body = upstream_body(remote.clone(), up_repo.to_owned(), digest.to_owned(), size);
    reg.upload_monolithic(repo, &d, Some(size), body).await
}

/// Fetches `reference` of the mirrored `repo` from the upstream: children
/// and blobs first, then the manifest under the same reference. Returns
/// whether the upstream had it.
pub async fn pull_manifest(
    reg: &Registry,
    rule: &MirrorRule,
    up_repo: &str,
    repo: &RepoName,
    reference: &Reference,
) -> Result<bool> {
    let remote = Arc::new(remote(reg, rule));
    let Some((media_type, bytes)) = remote.manifest(up_repo, &reference.to_string()).await? else {
        return Ok(false);
    };
    for (digest, size, is_manifest) in descriptors(&bytes) {
        if is_manifest {
            let d = Digest::parse(&digest).map_err(Error::from_parse)?;
            Box::pin(pull_manifest(
                reg,
                rule,
                up_repo,
                repo,
                &Reference::Digest(d),
            ))
            .await?;
        } else {
            pull_blob(reg, &remote, up_repo, repo, &digest, Some(size)).await?;
        }
    }
    reg.put_manifest(
        repo,
        reference,
        Vec::new(),
        Some(&media_type),
        bytes.to_vec(),
        None,
    )
    .await?;
    tracing::info!(mirror = %rule.name, %repo, %reference, "pulled through from the upstream");
    Ok(true)
}

/// Fetches one blob a client asked for by digest.
pub async fn pull_one_blob(
    reg: &Registry,
    rule: &MirrorRule,
    up_repo: &str,
    repo: &RepoName,
    digest: &Digest,
) -> Result<()> {
    let remote = Arc::new(remote(reg, rule));
    pull_blob(reg, &remote, up_repo, repo, digest.as_str(), None).await
}

/// Refreshes mirrored tags on the leader, every rule's interval: a tag
/// that moved upstream is pulled again.
pub struct MirrorWorker {
    pub registry: Arc<Registry>,
    last_run: Mutex<HashMap<String, u64>>,
}

impl MirrorWorker {
    pub fn new(registry: Arc<Registry>) -> MirrorWorker {
        MirrorWorker {
            registry,
            last_run: Mutex::new(HashMap::new()),
        }
    }

    async fn refresh(&self, rule: &MirrorRule) -> Result<u64> {
        let reg = &self.registry;
        let remote = remote(reg, rule);
        let mut moved = 0;
        for repo in reg.repositories_under(&rule.prefix)? {
            let Some(up_repo) = rule.upstream_repo(repo.as_str()) else {
                continue;
            };
            for tag in reg.local_tags(&repo)? {
                let Some((_, bytes)) = remote.manifest(&up_repo, tag.as_str()).await? else {
                    continue;
                };
                let upstream = Digest::of(stowage_storage::types::DigestAlgorithm::Sha256, &bytes);
                if reg.local_tag(&repo, &tag)?.as_ref() != Some(&upstream) {
                    pull_manifest(reg, rule, &up_repo, &repo, &Reference::Tag(tag.clone())).await?;
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }
}

impl Worker for MirrorWorker {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn step(&self) -> Result<Step> {
        if !self.registry.is_leader() {
            return Ok(Step::Idle(
                "not the leader; the leader refreshes mirrors".into(),
            ));
        }
        let now = now_ms();
        let mut refreshed = 0;
        let mut failed = Vec::new();
        for rule in self
            .registry
            .mirrors()?
            .into_iter()
            .filter(|r| r.interval_secs > 0)
        {
            let due = {
                let last = self.last_run.lock().unwrap_or_else(|e| e.into_inner());
                last.get(&rule.name)
                    .is_none_or(|t| t + rule.interval_secs * 1000 <= now)
            };
            if !due {
                continue;
            }
            self.last_run
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rule.name.clone(), now);
            // An upstream that is down must not hold back the others.
            match self.refresh(&rule).await {
                Ok(n) => refreshed += n,
                Err(e) => failed.push(format!("{}: {e}", rule.name)),
            }
        }
        if !failed.is_empty() {
            return Err(Error::Remote(failed.join("; ")));
        }
        Ok(Step::Idle(format!("{refreshed} mirrored tags refreshed")))
    }
}
