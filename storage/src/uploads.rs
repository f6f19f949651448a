//! This node's upload sessions: where each in-progress blob upload stands
//! (bytes received, chunks written, hash state). They are local, not
//! replicated: a session is owned by the node that opened it, and persisting
//! it here makes it resumable after a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::meta::ChunkRef;
use crate::types::{NodeId, RepoName, UploadId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub repo: RepoName,
    /// Bytes received so far.
    pub size: u64,
    /// Chunks written so far, in order; they cover exactly `size` bytes.
    pub chunks: Vec<ChunkRef>,
    /// Serialized `DigestHasher` state over the `size` bytes.
    #[serde(with = "serde_bytes")]
    pub hasher: Vec<u8>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Nodes holding every chunk so far; `None` before the first chunk.
    pub holders: Option<Vec<NodeId>>,
}

pub struct UploadStore {
    tree: sled::Tree,
    db: sled::Db,
    /// sled's directory, whose files `create` fsyncs.
    db_dir: PathBuf,
}

impl UploadStore {
    /// The sessions in `db`, which sled keeps in `db_dir`.
    pub fn open(db: &sled::Db, db_dir: &Path) -> Result<Self> {
        Ok(UploadStore {
            tree: db.open_tree("uploads")?,
            db: db.clone(),
            db_dir: db_dir.to_owned(),
        })
    }

    /// Stores a new session durably: when this returns, the session
    /// survives a crash of the process or of the machine, so the `202` that
    /// hands its id to the client is a promise. Later updates (`put`) may
    /// lag, since a session that restarts at an earlier size is still
    /// correct: the client resumes from the `Range` it is told.
    pub fn create(&self, id: &UploadId, session: &UploadSession) -> Result<()> {
        self.put(id, session)?;
        // sled keeps writes in memory until its next periodic flush (a
        // session opened just before a `kill -9` was lost), and its flush
        // ends with `sync_file_range`, which neither writes the file's
        // metadata nor flushes the disk's cache: hence the fsyncs.
        self.db.flush()?;
        crate::sync_tree(&self.db_dir)
    }

    pub fn get(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        match self.tree.get(id.as_str())? {
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|source| Error::Decode {
                    tree: "uploads",
                    source,
                }),
            None => Ok(None),
        }
    }

    pub fn put(&self, id: &UploadId, session: &UploadSession) -> Result<()> {
        let bytes = postcard::to_stdvec(session).map_err(|source| Error::Decode {
            tree: "uploads",
            source,
        })?;
        self.tree.insert(id.as_str(), bytes)?;
        Ok(())
    }

    pub fn remove(&self, id: &UploadId) -> Result<bool> {
        Ok(self.tree.remove(id.as_str())?.is_some())
    }

    /// Sessions not updated since `before_ms`: abandoned uploads to expire.
    pub fn idle_since(&self, before_ms: u64) -> Result<Vec<UploadId>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let idle = postcard::from_bytes::<UploadSession>(&v)
                .map(|s| s.updated_ms < before_ms)
                // A record that no longer decodes is abandoned by definition.
                .unwrap_or(true);
            if idle {
                if let Ok(id) = UploadId::parse(&String::from_utf8_lossy(&k)) {
                    out.push(id);
                } else {
                    self.tree.remove(&k)?;
                }
            }
        }
        Ok(out)
    }

    /// Every chunk that live sessions have written: garbage collection must
    /// leave them alone although no blob references them yet.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&ChunkRef)) -> Result<()> {
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            if let Ok(s) = postcard::from_bytes::<UploadSession>(&v) {
                s.chunks.iter().for_each(&mut f);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkId, DigestAlgorithm};

    #[test]
    fn sessions_persist_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = UploadStore::open(&db, dir.path()).unwrap();
        let id = UploadId::new(NodeId(1));
        let s = session();
        store.put(&id, &s).unwrap();
        assert_eq!(store.get(&id).unwrap(), Some(s));
        assert!(store.idle_since(20).unwrap().is_empty());
        assert_eq!(store.idle_since(21).unwrap(), vec![id.clone()]);
        let mut n = 0;
        store.for_each_chunk(|_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(store.remove(&id).unwrap());
        assert!(store.get(&id).unwrap().is_none());
    }

    /// What a `kill -9` leaves is what the files hold at that moment: a
    /// copy of sled's directory taken right after `create` must hold the
    /// session. (sled never flushes here on its own, so a plain `put` would
    /// be missing from the copy.)
    #[test]
    fn a_created_session_is_in_the_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let db = sled::Config::new()
            .path(&live)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let store = UploadStore::open(&db, &live).unwrap();
        let id = UploadId::new(NodeId(1));
        store.create(&id, &session()).unwrap();

        let copy = dir.path().join("copy");
        copy_dir(&live, &copy);
        let db = sled::Config::new().path(&copy).open().unwrap();
        let store = UploadStore::open(&db, &copy).unwrap();
        assert_eq!(store.get(&id).unwrap(), Some(session()));
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &dest);
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }

    fn session() -> UploadSession {
        UploadSession {
            repo: RepoName::parse("a/b").unwrap(),
            size: 3,
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"abc"),
                len: 3,
            }],
            hasher: DigestAlgorithm::Sha256.hasher().to_state(),
            started_ms: 10,
            updated_ms: 20,
            holders: None,
        }
    }
}
