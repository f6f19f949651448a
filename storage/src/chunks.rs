//! The chunk store: blake3-addressed files under `chunks/ab/cd/<hex>`, each
//! written through the durable path and verified against its name on every
//! read, so a corrupted chunk is an error and never served.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::durable::{self, TempFile};
use crate::error::{Error, Result};
use crate::space::Space;
use crate::types::ChunkId;

/// What a sweep of unreferenced chunk files did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub examined: u64,
    pub removed: u64,
    pub removed_bytes: u64,
}

pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Writers hold it shared while they create or refresh a chunk file; the
    /// sweeper holds it exclusively while it checks a file's age and removes
    /// it. This closes the race in which a sweep deletes a chunk an upload
    /// has just found present and is about to reference.
    sweep_lock: RwLock<()>,
    /// Whether chunk files are written with O_DIRECT; turned off for good
    /// the first time the filesystem refuses it (tmpfs, some FUSE mounts).
    direct_io: AtomicBool,
    /// The free-space reserve new chunk files are checked against; none
    /// for a bare store (tests, tools).
    space: Option<Arc<Space>>,
}

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's
/// logical block; 4 KiB covers every common device.
pub const DIRECT_IO_ALIGN: usize = 4096;
/// Below this, the page cache's copy costs less than O_DIRECT's setup.
const DIRECT_IO_MIN_BYTES: usize = 256 * 1024;

impl ChunkStore {
    /// Opens (creating if needed) the store rooted at `root` and removes temp
    /// files a crash left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        durable::create_dir_durable(&tmp)?;
        let removed = durable::remove_temp_files(&tmp)?;
        if removed > 0 {
            tracing::info!(removed, "removed partial chunk files left by a crash");
        }
        Ok(ChunkStore {
            root,
            tmp,
            sweep_lock: RwLock::new(()),
            direct_io: AtomicBool::new(true),
            space: None,
        })
    }

    /// Refuses new chunk files (`Error::DiskFull`) while `space` is below
    /// its reserve. Every chunk write goes through here (uploads, copies
    /// from peers, repair), so no path can fill the disk past the reserve.
    pub fn with_space(mut self, space: Arc<Space>) -> Self {
        self.space = Some(space);
        self
    }

    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Hashes `data`, stores it durably under its blake3 name and returns the
    /// name. Storing a chunk that is already present only refreshes its age.
    pub fn put(&self, data: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        self.put_as(id, data)?;
        Ok(id)
    }

    /// Stores `data` under `id` after checking that it hashes to `id`; used for
    /// chunks that arrive from elsewhere with their name.
    pub fn put_verified(&self, id: ChunkId, data: &[u8]) -> Result<()> {
        if ChunkId::of(data) != id {
            return Err(Error::ChunkCorrupt(id));
        }
        self.put_as(id, data)
    }

    /// Stores `data` under `id`, which the caller has just computed from
    /// `data` with `ChunkId::of` (so it is not hashed twice).
    pub fn put_as(&self, id: ChunkId, data: &[u8]) -> Result<()> {
        let dest = self.path_of(&id);
        {
            let _shared = self.sweep_lock.read().unwrap_or_else(|e| e.into_inner());
            if refresh(&dest)? {
                return Ok(());
            }
        }
        // A chunk already here costs no space, so only a new one is checked.
        if let Some(space) = &self.space {
            space.check()?;
        }
        let tmp = match self.write_direct(data) {
            Some(tmp) => tmp,
            None => {
                let mut tmp = TempFile::create_in(&self.tmp)?;
                tmp.write_all(data)?;
                tmp
            }
        };
        if let Some(dir) = dest.parent() {
            durable::create_dir_durable(dir)?;
        }
        let _shared = self.sweep_lock.read().unwrap_or_else(|e| e.into_inner());
        tmp.persist(&dest)
    }

    /// Writes `data` into a temp file with O_DIRECT, bypassing the page
    /// cache: durable writes of large chunks are then limited by the device,
    /// not by the kernel copying every byte and writing it back later. The
    /// length is padded to the alignment and trimmed after. `None` means
    /// "write it the ordinary way" (small chunk, or O_DIRECT unsupported).
    fn write_direct(&self, data: &[u8]) -> Option<TempFile> {
        if data.len() < DIRECT_IO_MIN_BYTES || !self.direct_io.load(Ordering::Relaxed) {
            return None;
        }
        let mut tmp = match TempFile::create_in_with_flags(&self.tmp, libc::O_DIRECT) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(error = %e, "O_DIRECT unavailable here; writing chunks through the page cache");
                self.direct_io.store(false, Ordering::Relaxed);
                return None;
            }
        };
        let padded = data.len().next_multiple_of(DIRECT_IO_ALIGN);
        let aligned = data.as_ptr().align_offset(DIRECT_IO_ALIGN) == 0;
        let result = if aligned && padded == data.len() {
            tmp.write_all(data)
        } else {
            // Chunks from the chunker are aligned; others (short final
            // chunks, chunks from peers) take one copy into an aligned
            // buffer.
            let mut buf = vec![0u8; padded + DIRECT_IO_ALIGN];
            let off = buf.as_ptr().align_offset(DIRECT_IO_ALIGN);
            buf[off..off + data.len()].copy_from_slice(data);
            tmp.write_all(&buf[off..off + padded])
                .and_then(|()| tmp.set_len(data.len() as u64))
        };
        match result {
            Ok(()) => Some(tmp),
            // A full disk passes: O_DIRECT stays on for when space is back
            // (the ordinary write that follows reports the full disk).
            Err(e) if e.is_disk_full() => None,
            Err(e) => {
                tracing::info!(error = %e, "O_DIRECT write refused; writing chunks through the page cache");
                self.direct_io.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.path_of(id).is_file()
    }

    /// Reads a whole chunk and verifies it against its name.
    pub fn get(&self, id: &ChunkId) -> Result<Bytes> {
        let path = self.path_of(id);
        // Reads go through the page cache, unlike writes: a layer pulled
        // once is usually pulled again soon, and measured here an O_DIRECT
        // read of a cold chunk was no faster than the kernel's readahead
        // while a warm one was half as fast (benches/README.md).
        let data = match fs::read(&path) {
            Ok(d) => Bytes::from(d),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::ChunkMissing(*id)),
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        if ChunkId::of(&data) != *id {
            return Err(Error::ChunkCorrupt(*id));
        }
        Ok(data)
    }

    /// Every chunk id stored on this node, in no particular order.
    pub fn list(&self) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        for_each_file(&self.root, &mut |name| {
            if let Ok(id) = ChunkId::parse(name) {
                out.push(id);
            }
        })?;
        Ok(out)
    }

    /// Removes the chunk files `deletable` chooses, given each file's
    /// modification time (when it was last written or re-written by an
    /// upload). The choice is made again under the exclusive lock, so a
    /// writer that refreshes a chunk at the same moment keeps it.
    pub fn sweep(
        &self,
        deletable: impl Fn(&ChunkId, SystemTime) -> Result<bool>,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for id in self.list()? {
            report.examined += 1;
            let path = self.path_of(&id);
            let Some(modified) = modified(&path) else {
                continue;
            };
            if !deletable(&id, modified)? {
                continue;
            }
            let _exclusive = self.sweep_lock.write().unwrap_or_else(|e| e.into_inner());
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            if !deletable(&id, modified)? {
                continue;
            }
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            report.removed += 1;
            report.removed_bytes += meta.len();
        }
        Ok(report)
    }

    /// Removes a chunk file, under the exclusive lock, only if it has not
    /// been written since `seen`: a copy dropped after rebalancing must not
    /// take a write that arrived meanwhile with it.
    pub fn remove_unless_rewritten(&self, id: &ChunkId, seen: SystemTime) -> Result<bool> {
        let path = self.path_of(id);
        let _exclusive = self.sweep_lock.write().unwrap_or_else(|e| e.into_inner());
        match modified(&path) {
            Some(m) if m <= seen => {
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// When the chunk file was last written, if it exists.
    pub fn modified(&self, id: &ChunkId) -> Option<SystemTime> {
        modified(&self.path_of(id))
    }

    /// Moves a chunk file that failed verification out of the store, into
    /// `quarantine/`, where it is never served and an operator can look at
    /// it. Returns where it went.
    pub fn quarantine(&self, id: &ChunkId) -> Result<PathBuf> {
        let dir = self.root.join("quarantine");
        durable::create_dir_durable(&dir)?;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dest = dir.join(format!("{}.{stamp}", id.to_hex()));
        let path = self.path_of(id);
        let _exclusive = self.sweep_lock.write().unwrap_or_else(|e| e.into_inner());
        fs::rename(&path, &dest).map_err(Error::io("quarantine", &path))?;
        durable::sync_dir(&dir)?;
        Ok(dest)
    }

    /// Chunk files held and their total size.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for id in self.list()? {
            if let Ok(m) = fs::metadata(self.path_of(&id)) {
                n += 1;
                bytes += m.len();
            }
        }
        Ok((n, bytes))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).ok()?.modified().ok()
}

/// Marks an existing chunk as freshly used. Returns whether it exists.
fn refresh(path: &Path) -> Result<bool> {
    match File::options().write(true).open(path) {
        Ok(f) => {
            f.set_modified(SystemTime::now())
                .map_err(Error::io("touch", path))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("open", path)(e)),
    }
}

fn for_each_file(dir: &Path, f: &mut dyn FnMut(&str)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        let ty = entry.file_type().map_err(Error::io("stat", entry.path()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ty.is_dir() {
            // Only the two fan-out levels hold chunks; "tmp" and
            // "quarantine" hold none that may be served.
            if name.len() == 2 {
                for_each_file(&entry.path(), f)?;
            }
        } else {
            f(&name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = store.put(b"hello").unwrap();
        assert_eq!(id, ChunkId::of(b"hello"));
        assert_eq!(store.put(b"hello").unwrap(), id);
        assert_eq!(&store.get(&id).unwrap()[..], b"hello");
        assert_eq!(store.list().unwrap(), vec![id]);
    }

    #[test]
    fn below_the_reserve_new_chunks_are_refused_and_present_ones_refreshed() {
        use std::sync::atomic::{AtomicU64, Ordering};

        use crate::space::SpaceConfig;
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(1 << 30));
        let f = free.clone();
        let space = Arc::new(Space::with_probe(
            dir.path(),
            SpaceConfig {
                min_free_bytes: 1 << 20,
                ballast_bytes: 0,
            },
            Box::new(move |_| Ok((f.load(Ordering::SeqCst), 1 << 40))),
        ));
        let store = ChunkStore::open(dir.path()).unwrap().with_space(space);
        let old = store.put(b"before").unwrap();
        free.store(1000, Ordering::SeqCst);
        let e = store.put(b"after").unwrap_err();
        assert!(e.is_disk_full(), "{e}");
        assert!(!store.contains(&ChunkId::of(b"after")));
        // Deduplicated content needs no space.
        assert_eq!(store.put(b"before").unwrap(), old);
        assert_eq!(&store.get(&old).unwrap()[..], b"before");
        assert!(durable::remove_temp_files(&store.tmp).unwrap() == 0);
    }

    #[test]
    fn large_chunks_of_any_length_round_trip_through_direct_io() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        for len in [DIRECT_IO_MIN_BYTES, DIRECT_IO_MIN_BYTES + 17, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
            let id = store.put(&data).unwrap();
            assert_eq!(store.get(&id).unwrap().len(), len);
            assert_eq!(&store.get(&id).unwrap()[..], &data[..]);
        }
        assert!(store.list().unwrap().len() == 3);
        assert!(durable::remove_temp_files(&store.tmp).unwrap() == 0);
    }

    #[test]
    fn corrupted_chunk_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = store.put(b"hello").unwrap();
        fs::write(store.path_of(&id), b"jello").unwrap();
        assert!(matches!(store.get(&id), Err(Error::ChunkCorrupt(_))));
        let missing = ChunkId::of(b"nope");
        assert!(matches!(store.get(&missing), Err(Error::ChunkMissing(_))));
    }

    #[test]
    fn put_verified_rejects_wrong_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = ChunkId::of(b"a");
        assert!(store.put_verified(id, b"b").is_err());
        store.put_verified(id, b"a").unwrap();
        assert!(store.contains(&id));
    }

    #[test]
    fn sweep_removes_what_it_is_told_and_quarantine_hides_a_chunk() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let keep = store.put(b"referenced").unwrap();
        let young = store.put(b"young").unwrap();
        let old = store.put(b"old").unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        for id in [keep, old] {
            File::options()
                .write(true)
                .open(store.path_of(&id))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let report = store
            .sweep(|id, modified| Ok(*id != keep && modified < cutoff))
            .unwrap();
        assert_eq!(report.removed, 1);
        assert!(store.contains(&keep) && store.contains(&young) && !store.contains(&old));
        assert!(!store.remove_unless_rewritten(&young, past).unwrap());
        let moved = store.quarantine(&young).unwrap();
        assert!(moved.is_file() && !store.contains(&young));
        assert_eq!(store.list().unwrap(), vec![keep]);
        assert_eq!(store.usage().unwrap(), (1, 10));
    }
}
