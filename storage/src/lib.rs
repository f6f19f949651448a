//! Everything on one node's disk, and nothing about networking.
//!
//! - `types`: validated identifiers (`Digest`, `RepoName`, `Tag`, `ChunkId`,
//!   `NodeId`, `Zone`).
//! - `durable`: the one temp → fsync → rename → fsync-dir write path.
//! - `identity`: the data directory's incarnation id, made once at creation.
//! - `chunks`: blake3-addressed chunk files, verified on every read (by the
//!   CRC32C recorded with each file; scrub by the blake3 name).
//! - `buffers`: chunk-sized read buffers kept for reuse.
//! - `chunker`: splits a blob stream into chunks while computing its digest.
//! - `log`: the fsynced, segmented, group-committed log of commands.
//! - `meta`: the replicated state machine (sled), its `Command`s and reads.
//! - `uploads`: this node's upload sessions (not replicated).
//! - `resync`: this node's persistent queue of chunks to fetch or check.
//! - `space`: free space on the data directory, the reserve below which no
//!   new data is taken, and the ballast file.
//!
//! `Store` opens all of them under one data directory.

pub mod buffers;
pub mod chunker;
pub mod chunks;
pub mod durable;
pub mod error;
pub mod identity;
pub mod log;
pub mod meta;
pub mod resync;
pub mod space;
pub mod types;
pub mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::chunks::ChunkStore;
pub use crate::error::{Error, Result};
pub use crate::log::LogStore;
pub use crate::meta::StateMachine;
pub use crate::resync::ResyncQueue;
pub use crate::space::{Space, SpaceConfig};
pub use crate::uploads::UploadStore;

/// sled keeps up to this much of the metadata cached; its default (1 GiB)
/// would dwarf the rest of the node's memory.
pub const DEFAULT_META_CACHE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub meta_cache_bytes: u64,
    pub space: SpaceConfig,
}

impl StoreConfig {
    /// Defaults with no free-space reserve and no ballast (the node sets
    /// both from its configuration).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            meta_cache_bytes: DEFAULT_META_CACHE_BYTES,
            space: SpaceConfig {
                min_free_bytes: 0,
                ballast_bytes: 0,
            },
        }
    }
}

/// One node's storage, opened from its data directory:
/// `chunks/`, `meta/` (sled), `log/`, the `incarnation` file and the
/// `ballast`.
pub struct Store {
    pub chunks: ChunkStore,
    pub space: Arc<Space>,
    pub meta: StateMachine,
    pub uploads: UploadStore,
    pub resync: ResyncQueue,
    pub log: Arc<LogStore>,
    db: sled::Db,
    data_dir: PathBuf,
    incarnation: String,
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Self> {
        let dir = &config.data_dir;
        durable::create_dir_durable(dir)?;
        let space = Arc::new(Space::new(dir, config.space));
        // Before sled: on a full disk sled cannot open (it writes as it
        // recovers), and the ballast is what makes room for it.
        match space.tend_ballast() {
            Ok(space::BallastChange::Released { bytes }) => tracing::warn!(
                bytes,
                "the disk is nearly full: released the ballast file so the node can start; \
                 it takes no new data until space is freed"
            ),
            Ok(space::BallastChange::Created { bytes }) => {
                tracing::info!(bytes, "made the ballast file")
            }
            Ok(space::BallastChange::Unchanged) => {}
            // A ballast that cannot be made now is made later.
            Err(e) => tracing::warn!(error = %e, "could not tend the ballast file"),
        }
        let incarnation = identity::load_or_create(dir)?;
        let chunks = ChunkStore::open(dir.join("chunks"))?.with_space(space.clone());
        let db = sled::Config::new()
            .path(dir.join("meta"))
            .cache_capacity(config.meta_cache_bytes)
            // The log is the durable record; sled is flushed on our schedule.
            .flush_every_ms(Some(1000))
            .open()?;
        let meta = StateMachine::open(&db)?;
        let uploads = UploadStore::open(&db, &dir.join("meta"))?;
        let resync = ResyncQueue::open(&db)?;
        let log = LogStore::open(dir.join("log"))?;
        Ok(Store {
            chunks,
            space,
            meta,
            uploads,
            resync,
            log,
            db,
            data_dir: dir.clone(),
            incarnation,
        })
    }

    /// This data directory's incarnation id: random, made when the
    /// directory was created, and gone with it.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Makes everything sled holds durable: its own flush, then an fsync of
    /// every file and directory in its folder, since sled's flush alone does
    /// not reach the disk. Call before purging log entries the state machine
    /// has applied.
    pub fn sync_meta(&self) -> Result<()> {
        self.db.flush()?;
        sync_tree(&self.data_dir.join("meta"))
    }
}

/// fsyncs every file under `dir`, and the directories themselves.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(Error::io("stat", &path))?
            .is_dir()
        {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("fsync", &path))?;
        }
    }
    durable::sync_dir(dir)
}
