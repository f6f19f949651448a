//! Upload sessions: open, append (PATCH), report progress, finish (PUT with
//! the digest) and cancel, plus monolithic single-request uploads. A session
//! record names its stored chunks and hash state, so it survives a restart
//! of its node; while a session is in use, a committer task adds each
//! request's chunks to the record as their writes complete.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use stowage_storage::chunker::Chunker;
use stowage_storage::meta::{ChunkRef, Command, Outcome, Rejection};
use stowage_storage::types::{Digest, DigestAlgorithm, DigestHasher, NodeId, RepoName, UploadId};
use stowage_storage::uploads::UploadSession;
use tokio::sync::{mpsc, oneshot};

use super::ingest::{Received, Stored, StoredFuture};
use super::{now_ms, Registry};
use crate::error::{Error, Result};
use crate::workers::{Step, Worker};

/// Where a chunk of a PATCH or PUT body claims to start, and how long it is,
/// from `Content-Range` and `Content-Length`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkBounds {
    pub start: Option<u64>,
    pub len: Option<u64>,
}

/// A session in use on this node: requests on it take `gate` in turn; the
/// chunks of each request are committed to the session record, in order, by
/// the session's committer task while the next request is already taken.
pub(crate) struct Active {
    /// The repository the session was opened in: the only name under which
    /// it may be used.
    repo: RepoName,
    gate: tokio::sync::Mutex<View>,
    commits: mpsc::UnboundedSender<Commit>,
}

/// Where a session stands, counting bytes whose chunks are still being
/// written: what the next request continues from.
struct View {
    size: u64,
    hasher: Vec<u8>,
}

enum Commit {
    /// One request's chunks, with the session's size and hash state after
    /// them.
    Batch {
        size: u64,
        hasher: Vec<u8>,
        stored: StoredFuture,
    },
    /// Answers once everything sent before is committed (or failed).
    Barrier(oneshot::Sender<Result<(), Failure>>),
}

/// A session's first failed batch, kept as text (errors are not `Clone`)
/// and whether it was a full disk, so the client hears 507 for that and not
/// a client error.
#[derive(Clone)]
struct Failure {
    why: String,
    disk_full: bool,
}

impl Registry {
    /// The active state of a session, loaded from its record on first use.
    /// A session is unknown under any name but its own repository's, so an
    /// id seen in one repository cannot read, write or finish into another.
    fn active(self: &Arc<Self>, repo: &RepoName, id: &UploadId) -> Result<Arc<Active>> {
        let mut sessions = self
            .active_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(a) = sessions.get(id.as_str()) {
            if &a.repo != repo {
                return Err(Error::BlobUploadUnknown);
            }
            return Ok(a.clone());
        }
        let record = match self.store.uploads.get(id)? {
            Some(s) if &s.repo == repo => s,
            _ => return Err(Error::BlobUploadUnknown),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let active = Arc::new(Active {
            repo: record.repo.clone(),
            gate: tokio::sync::Mutex::new(View {
                size: record.size,
                hasher: record.hasher.clone(),
            }),
            commits: tx,
        });
        sessions.insert(id.as_str().to_owned(), active.clone());
        tokio::spawn(self.clone().commit_loop(id.clone(), record, rx));
        Ok(active)
    }

    /// Commits a session's batches in order: waits for each batch's chunk
    /// writes, then stores the session record naming them. The first
    /// failure sticks: later batches are dropped and barriers report it.
    async fn commit_loop(
        self: Arc<Self>,
        id: UploadId,
        mut record: UploadSession,
        mut rx: mpsc::UnboundedReceiver<Commit>,
    ) {
        let mut failed: Option<Failure> = None;
        while let Some(msg) = rx.recv().await {
            match msg {
                Commit::Batch {
                    size,
                    hasher,
                    stored,
                } => {
                    let result = match stored.await {
                        Ok(stored) if failed.is_none() => {
                            self.commit(&id, &mut record, size, hasher, stored)
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        if e.is_disk_full() {
                            // The disk watch says so once for all uploads.
                            tracing::debug!(upload = %id, error = %e, "chunks of an upload could not be stored");
                        } else {
                            tracing::warn!(upload = %id, error = %e, "chunks of an upload could not be stored");
                        }
                        failed.get_or_insert_with(|| Failure {
                            why: e.to_string(),
                            disk_full: e.is_disk_full(),
                        });
                    }
                }
                Commit::Barrier(tx) => {
                    let _ = tx.send(failed.clone().map_or(Ok(()), Err));
                }
            }
        }
    }

    /// Adds one batch of stored chunks to the session record and persists
    /// it, unless the session ended meanwhile.
    fn commit(
        &self,
        id: &UploadId,
        record: &mut UploadSession,
        size: u64,
        hasher: Vec<u8>,
        stored: Stored,
    ) -> Result<()> {
        if self.store.uploads.get(id)?.is_none() {
            return Ok(());
        }
        record.size = size;
        record.hasher = hasher;
        record.updated_ms = now_ms();
        if !stored.chunks.is_empty() {
            record.holders = Some(match record.holders.take() {
                None => stored.holders.iter().copied().collect(),
                Some(h) => h
                    .into_iter()
                    .filter(|n| stored.holders.contains(n))
                    .collect(),
            });
        }
        record.chunks.extend(stored.chunks);
        // Once the record names the chunks, the sweeper sees them there.
        self.store.uploads.put(id, record)?;
        drop(stored.pins);
        Ok(())
    }

    /// Waits until every batch sent so far is committed.
    async fn settle(&self, active: &Active) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        active
            .commits
            .send(Commit::Barrier(tx))
            .map_err(|_| Error::Unavailable("the upload's committer stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) if f.disk_full => Err(Error::DiskFull(format!(
                "a chunk of this upload could not be stored: {}; start the upload again once space is freed",
                f.why
            ))),
            Ok(Err(f)) => {
                tracing::warn!(why = %f.why, "ending an upload whose chunks could not be stored");
                Err(Error::BlobUploadInvalid(
                    "a chunk of this upload could not be stored; start the upload again",
                ))
            }
            Err(_) => Err(Error::Unavailable("the upload's committer stopped".into())),
        }
    }

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadId> {
        self.admit_push()?;
        let id = UploadId::new(self.settings.node_id);
        let now = now_ms();
        let session = UploadSession {
            repo: repo.clone(),
            size: 0,
            chunks: vec![],
            hasher: DigestAlgorithm::Sha256.hasher().to_state(),
            started_ms: now,
            updated_ms: now,
            holders: None,
        };
        // The 202 hands out the id, so the session must outlive a crash
        // from then on; the fsyncs block, so they run off the async threads.
        let store = self.store.clone();
        let created = id.clone();
        tokio::task::spawn_blocking(move || store.uploads.create(&created, &session)).await??;
        Ok(id)
    }

    /// Bytes a session has taken.
    pub async fn upload_offset(self: &Arc<Self>, repo: &RepoName, id: &UploadId) -> Result<u64> {
        let active = self.active(repo, id)?;
        let view = active.gate.lock().await;
        Ok(view.size)
    }

    /// Takes a body into a session (under its gate) and hands its chunk
    /// writes to the committer: the answer goes out once the body is
    /// received and hashed, and the client's next request is taken while
    /// the writes complete. Returns the session's new size.
    async fn take_body<B>(
        &self,
        active: &Active,
        view: &mut View,
        bounds: ChunkBounds,
        body: B,
    ) -> Result<u64>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        if let Some(start) = bounds.start {
            if start != view.size {
                return Err(Error::UploadOutOfOrder {
                    offset: view.size,
                    start,
                });
            }
        }
        let hasher = DigestHasher::from_state(&view.hasher)?;
        let chunker = Chunker::resume(hasher, view.size, self.settings.chunk_size_bytes);
        let Received { chunker, stored } = self.ingest.receive(chunker, body, bounds.len).await?;
        view.size = chunker.size_bytes();
        view.hasher = chunker.into_hasher().to_state();
        active
            .commits
            .send(Commit::Batch {
                size: view.size,
                hasher: view.hasher.clone(),
                stored,
            })
            .map_err(|_| Error::Unavailable("the upload's committer stopped".into()))?;
        Ok(view.size)
    }

    /// Appends a body to a session and returns the new size.
    pub async fn upload_append<B>(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
        bounds: ChunkBounds,
        mut body: B,
    ) -> Result<u64>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        self.admit_push_draining(&mut body).await?;
        let active = self.active(repo, id)?;
        let mut view = active.gate.lock().await;
        self.take_body(&active, &mut view, bounds, body).await
    }

    /// Appends the final body (if any), waits for every chunk, checks the
    /// digest and records the blob. Only a committed blob record makes the
    /// upload acknowledged.
    pub async fn upload_finish<B>(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        bounds: ChunkBounds,
        mut body: B,
    ) -> Result<()>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        self.admit_push_draining(&mut body).await?;
        let active = self.active(repo, id)?;
        let mut view = active.gate.lock().await;
        self.take_body(&active, &mut view, bounds, body).await?;
        if let Err(e) = self.settle(&active).await {
            self.end_session(id)?;
            return Err(e);
        }
        let session = self
            .store
            .uploads
            .get(id)?
            .ok_or(Error::BlobUploadUnknown)?;
        let hasher = DigestHasher::from_state(&session.hasher)?;
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            self.rehash(&session.chunks, digest.algorithm()).await?
        };
        if &actual != digest {
            // The session is over: a client retries a failed digest check
            // with a new upload.
            self.end_session(id)?;
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        // The session record keeps its chunks from the sweeper until the
        // blob record references them.
        let holders = session
            .holders
            .unwrap_or_else(|| vec![self.settings.node_id]);
        self.record_blob(
            repo,
            digest,
            session.size,
            session.chunks,
            holders,
            session.started_ms,
        )
        .await?;
        self.end_session(id)
    }

    fn end_session(&self, id: &UploadId) -> Result<()> {
        self.store.uploads.remove(id)?;
        // Dropping the sender ends the committer once it is idle.
        self.active_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str());
        Ok(())
    }

    /// Hashes stored chunks again under another algorithm: sessions hash
    /// sha256 as they go, since the digest is only known at the end.
    async fn rehash(&self, chunks: &[ChunkRef], algorithm: DigestAlgorithm) -> Result<Digest> {
        let mut h = algorithm.hasher();
        for c in chunks {
            let data = self.chunks.get(c.id, &[]).await?;
            h.update(&data);
        }
        Ok(h.finish())
    }

    pub async fn upload_cancel(self: &Arc<Self>, repo: &RepoName, id: &UploadId) -> Result<()> {
        let active = self.active(repo, id)?;
        let _view = active.gate.lock().await;
        // Whatever its writes did, the session ends here.
        let _ = self.settle(&active).await;
        self.end_session(id)
    }

    /// A whole blob in one request (`POST ?digest=`).
    pub async fn upload_monolithic<B>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: Option<u64>,
        mut body: B,
    ) -> Result<()>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        self.admit_push_draining(&mut body).await?;
        let started_ms = now_ms();
        let chunker = Chunker::new(digest.algorithm(), self.settings.chunk_size_bytes);
        let (chunker, stored) = self.ingest.body(chunker, body, len).await?;
        let actual = chunker.digest();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let holders = stored.holders.iter().copied().collect();
        self.record_blob(
            repo,
            digest,
            chunker.size_bytes(),
            stored.chunks,
            holders,
            started_ms,
        )
        .await?;
        drop(stored.pins);
        Ok(())
    }

    /// Records a finished upload whose chunks were written from
    /// `written_since_ms` on.
    async fn record_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        chunks: Vec<ChunkRef>,
        holders: Vec<NodeId>,
        written_since_ms: u64,
    ) -> Result<()> {
        let cmd = Command::PutBlob {
            repo: repo.clone(),
            digest: digest.clone(),
            size,
            chunks,
            holders,
            now_ms: now_ms(),
            written_since_ms,
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(Rejection::ChunksCollected(c)) => {
                tracing::info!(%digest, chunk = %c, "an upload raced garbage collection of its chunks; the client retries");
                Err(Error::BlobUploadInvalid(
                    "garbage collection removed data this upload reused while it ran; upload again",
                ))
            }
            Outcome::Rejected(r @ Rejection::QuotaExceeded { .. }) => Err(super::quota_denied(&r)),
            Outcome::Rejected(_) => Err(Error::BlobUnknown(digest.clone())),
        }
    }

    /// Cancels sessions idle for longer than the expiry; their chunks are
    /// then orphans, which chunk GC removes once the upload lease is over.
    pub fn expire_uploads(&self) -> Result<u64> {
        let expiry_ms = u64::try_from(self.settings.upload_expiry.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(expiry_ms);
        let mut n = 0;
        for id in self.store.uploads.idle_since(cutoff)? {
            tracing::info!(upload = %id, "expiring an abandoned upload");
            self.end_session(&id)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The background job that expires abandoned upload sessions.
pub struct UploadExpiry {
    pub registry: Arc<Registry>,
    pub interval: std::time::Duration,
}

impl Worker for UploadExpiry {
    fn name(&self) -> &'static str {
        "uploads"
    }

    fn interval(&self) -> std::time::Duration {
        self.interval
    }

    async fn step(&self) -> Result<Step> {
        let r = self.registry.clone();
        let expired = tokio::task::spawn_blocking(move || r.expire_uploads()).await??;
        Ok(Step::Idle(format!(
            "{} sessions open, {expired} expired",
            self.registry.store.uploads.len()
        )))
    }
}
