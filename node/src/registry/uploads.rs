//! Upload sessions: open, append (PATCH), report progress, finish (PUT with
//! the digest) and cancel, plus monolithic single-request uploads. A session
//! persists its chunk list and hash state after every request, so it
//! survives a restart of its node.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use stowage_storage::chunker::Chunker;
use stowage_storage::meta::{ChunkRef, Command, Outcome};
use stowage_storage::types::{Digest, DigestAlgorithm, DigestHasher, NodeId, RepoName, UploadId};
use stowage_storage::uploads::UploadSession;

use super::ingest::{Ingested, Received};
use super::{now_ms, Registry};
use crate::error::{Error, Result};

/// Where a chunk of a PATCH or PUT body claims to start, and how long it is,
/// from `Content-Range` and `Content-Length`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkBounds {
    pub start: Option<u64>,
    pub len: Option<u64>,
}

impl Registry {
    fn session_lock(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.session_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.as_str().to_owned()).or_default().clone()
    }

    fn forget_session_lock(&self, id: &UploadId) {
        let mut locks = self.session_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id.as_str());
    }

    fn load_session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadSession> {
        if let Some(why) = self
            .failed_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str())
        {
            // The bytes a client was told were taken did not reach the disk:
            // the session cannot go on.
            self.end_session(id)?;
            tracing::warn!(upload = %id, %why, "ending an upload whose chunks could not be stored");
            return Err(Error::BlobUploadInvalid(
                "an earlier chunk of this upload could not be stored; start the upload again",
            ));
        }
        match self.store.uploads.get(id)? {
            Some(s) if &s.repo == repo => Ok(s),
            _ => Err(Error::BlobUploadUnknown),
        }
    }

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadId> {
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
        self.store.uploads.put(&id, &session)?;
        Ok(id)
    }

    /// Bytes received so far by a session (after its pending writes).
    pub async fn upload_offset(&self, repo: &RepoName, id: &UploadId) -> Result<u64> {
        let lock = self.session_lock(id);
        let _held = lock.lock().await;
        Ok(self.load_session(repo, id)?.size)
    }

    /// Appends a body to a session and returns the new size. The answer
    /// goes out once the body is received and hashed; its last chunk writes
    /// finish in the background while holding the session, so the client's
    /// next request (which waits for them) can already be on its way. A
    /// write that fails there fails the session's next request.
    pub async fn upload_append<B>(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &UploadId,
        bounds: ChunkBounds,
        body: B,
    ) -> Result<u64>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let held = self.session_lock(id).lock_owned().await;
        let session = self.load_session(repo, id)?;
        let received = self.receive_into(&session, bounds, body).await?;
        let size = received.size_bytes;
        let this = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let result = match received.finish().await {
                Ok(got) => this.record_progress(&id, session, got),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                this.failed_sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.as_str().to_owned(), e.to_string());
            }
            drop(held);
        });
        Ok(size)
    }

    /// Starts taking a body into a session, checking it continues where the
    /// session stands.
    async fn receive_into<B>(
        &self,
        session: &UploadSession,
        bounds: ChunkBounds,
        body: B,
    ) -> Result<Received>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        if let Some(start) = bounds.start {
            if start != session.size {
                return Err(Error::UploadOutOfOrder {
                    offset: session.size,
                    start,
                });
            }
        }
        let hasher = DigestHasher::from_state(&session.hasher)?;
        let chunker = Chunker::resume(hasher, session.size, self.settings.chunk_size_bytes);
        self.ingest.receive(chunker, body, bounds.len).await
    }

    async fn append_to<B>(
        &self,
        id: &UploadId,
        session: UploadSession,
        bounds: ChunkBounds,
        body: B,
    ) -> Result<UploadSession>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let got = self
            .receive_into(&session, bounds, body)
            .await?
            .finish()
            .await?;
        self.record_progress(id, session, got)
    }

    /// Adds stored chunks to a session and persists it.
    fn record_progress(
        &self,
        id: &UploadId,
        mut session: UploadSession,
        got: Ingested,
    ) -> Result<UploadSession> {
        session.size = got.chunker.size_bytes();
        let wrote_chunks = !got.chunks.is_empty();
        session.chunks.extend(got.chunks);
        session.hasher = got.chunker.into_hasher().to_state();
        session.updated_ms = now_ms();
        if wrote_chunks {
            session.holders = Some(match session.holders.take() {
                None => got.holders.iter().copied().collect(),
                Some(h) => h.into_iter().filter(|n| got.holders.contains(n)).collect(),
            });
        }
        // Once the session names the chunks, the sweeper sees them there.
        self.store.uploads.put(id, &session)?;
        drop(got.pins);
        Ok(session)
    }

    /// Appends the final body (if any), checks the digest and records the
    /// blob. Only a committed blob record makes the upload acknowledged.
    pub async fn upload_finish<B>(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        bounds: ChunkBounds,
        body: B,
    ) -> Result<()>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let lock = self.session_lock(id);
        let _held = lock.lock().await;
        let session = self.load_session(repo, id)?;
        let session = self.append_to(id, session, bounds, body).await?;
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
        // The session keeps its chunks from the sweeper until the blob
        // record references them.
        let holders = session
            .holders
            .unwrap_or_else(|| vec![self.settings.node_id]);
        self.record_blob(repo, digest, session.size, session.chunks, holders)
            .await?;
        self.end_session(id)
    }

    fn end_session(&self, id: &UploadId) -> Result<()> {
        self.store.uploads.remove(id)?;
        self.forget_session_lock(id);
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

    pub async fn upload_cancel(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        // Waits for pending writes, so a cancel is final.
        let lock = self.session_lock(id);
        let _held = lock.lock().await;
        self.load_session(repo, id)?;
        self.end_session(id)
    }

    /// A whole blob in one request (`POST ?digest=`).
    pub async fn upload_monolithic<B>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: Option<u64>,
        body: B,
    ) -> Result<()>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: std::fmt::Display,
    {
        let chunker = Chunker::new(digest.algorithm(), self.settings.chunk_size_bytes);
        let got = self.ingest.body(chunker, body, len).await?;
        let actual = got.chunker.digest();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let holders = got.holders.iter().copied().collect();
        self.record_blob(repo, digest, got.chunker.size_bytes(), got.chunks, holders)
            .await?;
        drop(got.pins);
        Ok(())
    }

    async fn record_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        chunks: Vec<ChunkRef>,
        holders: Vec<NodeId>,
    ) -> Result<()> {
        let cmd = Command::PutBlob {
            repo: repo.clone(),
            digest: digest.clone(),
            size,
            chunks,
            holders,
            now_ms: now_ms(),
        };
        match self.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(_) => Err(Error::BlobUnknown(digest.clone())),
        }
    }

    /// Cancels sessions idle for longer than the expiry and removes chunk
    /// files nothing references any more. Runs at start-up and periodically.
    pub fn sweep(&self) -> Result<()> {
        let expiry_ms = u64::try_from(self.settings.upload_expiry.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(expiry_ms);
        for id in self.store.uploads.idle_since(cutoff)? {
            tracing::info!(upload = %id, "expiring an abandoned upload");
            self.store.uploads.remove(&id)?;
        }
        let mut live = std::collections::HashSet::new();
        self.store.uploads.for_each_chunk(|c| {
            live.insert(c.id);
        })?;
        let meta = &self.store.meta;
        let report = self.store.chunks.sweep(self.settings.gc_grace, |id| {
            Ok(live.contains(id) || self.chunks.is_pinned(id) || meta.chunk_referenced(id)?)
        })?;
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                bytes = report.removed_bytes,
                "removed unreferenced chunk files"
            );
        }
        Ok(())
    }
}
