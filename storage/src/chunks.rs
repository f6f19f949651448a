//! The chunk store: blake3-addressed files under `chunks/ab/cd/<hex>`, each
//! written through the durable path with the CRC32C of its bytes beside it
//! (an extended attribute) and checked on every read, so a corrupted chunk
//! is an error and never served. Scrub checks the blake3 name itself.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::buffers::BufferPool;
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
    /// Whether this filesystem keeps the CRC attribute; turned off for good
    /// the first time it refuses one (then every read checks blake3).
    crc_attr: AtomicBool,
    buffers: Arc<BufferPool>,
}

/// The extended attribute that holds a chunk file's CRC32C (4 bytes, little
/// endian), set on the temp file before it is synced and renamed, so the
/// name never appears without it.
const CRC_ATTR: &str = "user.stowage.crc32c";

/// How a read proves that a chunk file holds its chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Against the CRC32C recorded when the file was written; against the
    /// blake3 name where none is recorded or the two disagree (then the
    /// name decides, and a wrong record is rewritten). The pull path.
    Recorded,
    /// Against the blake3 name, always: scrub.
    Name,
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
            crc_attr: AtomicBool::new(true),
            buffers: Arc::new(BufferPool::default()),
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
        let mut tmp = match self.write_direct(data) {
            Some(tmp) => tmp,
            None => {
                let mut tmp = TempFile::create_in(&self.tmp)?;
                tmp.write_all(data)?;
                tmp
            }
        };
        self.record_crc(tmp.as_file_mut(), crc32c::crc32c(data));
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
            // The buffer is a pooled one: chunks from peers come this way
            // at the rate of every other node's pushes.
            let mut buf = self.buffers.take(padded + DIRECT_IO_ALIGN);
            let off = buf.as_ptr().align_offset(DIRECT_IO_ALIGN);
            buf[off..off + data.len()].copy_from_slice(data);
            // The padding goes to disk and is cut off by set_len below;
            // zeroed so a pooled buffer's old bytes never reach the device.
            buf[off + data.len()..off + padded].fill(0);
            let written = tmp
                .write_all(&buf[off..off + padded])
                .and_then(|()| tmp.set_len(data.len() as u64));
            self.buffers.give_back(buf);
            written
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

    /// Reads a whole chunk, checked against its recorded CRC32C (see
    /// [`Check::Recorded`]).
    pub fn get(&self, id: &ChunkId) -> Result<Bytes> {
        self.read(id, Check::Recorded)
    }

    /// Reads a whole chunk and proves it is `id`'s bytes as `check` says.
    /// A chunk whose blake3 name is checked has its CRC recorded if it had
    /// none (files written before there was one) or a wrong one.
    pub fn read(&self, id: &ChunkId, check: Check) -> Result<Bytes> {
        let path = self.path_of(id);
        // Reads go through the page cache, unlike writes: a layer pulled
        // once is usually pulled again soon, and measured here an O_DIRECT
        // read of a cold chunk was no faster than the kernel's readahead
        // while a warm one was half as fast (benches/README.md).
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::ChunkMissing(*id)),
            Err(e) => return Err(Error::io("open", &path)(e)),
        };
        let recorded = self.recorded_crc(&file);
        let len = file.metadata().map_or(0, |m| m.len());
        // One byte more than the file, so its end is seen without growing.
        let mut buf = self
            .buffers
            .take(usize::try_from(len).unwrap_or(0).saturating_add(1));
        let (used, crc) = read_with_crc(&mut file, &mut buf).map_err(Error::io("read", &path))?;
        let data = self.buffers.share(buf, used);
        if check == Check::Recorded && recorded == Some(crc) {
            return Ok(data);
        }
        if ChunkId::of(&data) != *id {
            return Err(Error::ChunkCorrupt(*id));
        }
        if recorded != Some(crc) {
            if recorded.is_some() {
                tracing::warn!(chunk = %id, "a chunk's recorded CRC was wrong but its bytes are good; recording it again");
            }
            self.record_crc(&file, crc);
        }
        Ok(data)
    }

    /// The CRC32C recorded for an open chunk file, if any.
    fn recorded_crc(&self, file: &File) -> Option<u32> {
        if !self.crc_attr.load(Ordering::Relaxed) {
            return None;
        }
        let mut buf = [0u8; 4];
        match rustix::fs::fgetxattr(file, CRC_ATTR, &mut buf) {
            Ok(4) => Some(u32::from_le_bytes(buf)),
            _ => None,
        }
    }

    /// Records `crc` on an open chunk file. A filesystem without extended
    /// attributes turns the record off (reads then check blake3); any other
    /// failure only costs that file its fast check.
    fn record_crc(&self, file: &File, crc: u32) {
        if !self.crc_attr.load(Ordering::Relaxed) {
            return;
        }
        match rustix::fs::fsetxattr(
            file,
            CRC_ATTR,
            &crc.to_le_bytes(),
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP) => {
                tracing::info!(
                    "this filesystem keeps no extended attributes; every chunk read is checked with blake3"
                );
                self.crc_attr.store(false, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "could not record a chunk's CRC"),
        }
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

/// Bytes read per step: the CRC of each step then runs over bytes the copy
/// out of the page cache has just left in the CPU's cache, instead of
/// over a whole chunk fetched again from memory.
const READ_STEP_BYTES: usize = 256 * 1024;

/// Reads `file` to its end into `buf` (growing it if the file is longer),
/// returning the bytes read and their CRC32C.
fn read_with_crc(file: &mut File, buf: &mut Vec<u8>) -> std::io::Result<(usize, u32)> {
    let (mut used, mut crc) = (0usize, 0u32);
    loop {
        if used == buf.len() {
            buf.resize(buf.len().max(READ_STEP_BYTES) * 2, 0);
        }
        let end = buf.len().min(used + READ_STEP_BYTES);
        let n = match file.read(&mut buf[used..end]) {
            Ok(0) => return Ok((used, crc)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc = crc32c::crc32c_append(crc, &buf[used..used + n]);
        used += n;
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

    fn attr(store: &ChunkStore, id: &ChunkId) -> Option<u32> {
        store.recorded_crc(&File::open(store.path_of(id)).unwrap())
    }

    fn set_attr(store: &ChunkStore, id: &ChunkId, crc: u32) {
        let f = File::open(store.path_of(id)).unwrap();
        rustix::fs::fsetxattr(
            &f,
            CRC_ATTR,
            &crc.to_le_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    /// Whether the test's filesystem keeps user extended attributes (tmpfs
    /// before Linux 6.6 does not); the CRC cases are then moot.
    fn keeps_attrs(dir: &Path) -> bool {
        let f = File::create(dir.join("probe")).unwrap();
        rustix::fs::fsetxattr(&f, CRC_ATTR, b"1234", rustix::fs::XattrFlags::empty()).is_ok()
    }

    #[test]
    fn every_check_refuses_bytes_changed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path().join("c")).unwrap();
        let data = vec![7u8; DIRECT_IO_MIN_BYTES + 100];
        let id = store.put(&data).unwrap();
        if keeps_attrs(dir.path()) {
            assert_eq!(attr(&store, &id), Some(crc32c::crc32c(&data)));
        } else {
            eprintln!("SKIPPED: CRC record cases (no user xattrs on this filesystem)");
        }
        // Bit rot: the file keeps its inode and attribute.
        let mut rotten = data.clone();
        rotten[data.len() / 2] ^= 0x40;
        fs::OpenOptions::new()
            .write(true)
            .open(store.path_of(&id))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &rotten))
            .unwrap();
        for check in [Check::Recorded, Check::Name] {
            assert!(
                matches!(store.read(&id, check), Err(Error::ChunkCorrupt(_))),
                "{check:?}"
            );
        }
    }

    #[test]
    fn a_file_without_a_record_is_checked_by_name_and_then_recorded() {
        let dir = tempfile::tempdir().unwrap();
        if !keeps_attrs(dir.path()) {
            eprintln!("SKIPPED: CRC record cases (no user xattrs on this filesystem)");
            return;
        }
        let store = ChunkStore::open(dir.path().join("c")).unwrap();
        let id = store.put(b"written before there were records").unwrap();
        // A new file with the same name has no attribute (an old store).
        fs::remove_file(store.path_of(&id)).unwrap();
        fs::write(store.path_of(&id), b"written before there were records").unwrap();
        assert_eq!(attr(&store, &id), None);
        assert_eq!(
            &store.get(&id).unwrap()[..],
            b"written before there were records"
        );
        assert_eq!(
            attr(&store, &id),
            Some(crc32c::crc32c(b"written before there were records"))
        );
        // Replaced by other bytes, with no record: the name catches it.
        fs::remove_file(store.path_of(&id)).unwrap();
        fs::write(store.path_of(&id), b"something else entirely").unwrap();
        assert!(matches!(store.get(&id), Err(Error::ChunkCorrupt(_))));
        assert_eq!(
            attr(&store, &id),
            None,
            "a corrupt file is never given a record"
        );
    }

    #[test]
    fn a_wrong_record_over_good_bytes_is_rewritten_and_scrub_sees_past_a_forged_one() {
        let dir = tempfile::tempdir().unwrap();
        if !keeps_attrs(dir.path()) {
            eprintln!("SKIPPED: CRC record cases (no user xattrs on this filesystem)");
            return;
        }
        let store = ChunkStore::open(dir.path().join("c")).unwrap();
        let id = store.put(b"good bytes").unwrap();
        set_attr(&store, &id, 12345);
        assert_eq!(&store.get(&id).unwrap()[..], b"good bytes");
        assert_eq!(attr(&store, &id), Some(crc32c::crc32c(b"good bytes")));
        // Changed bytes whose CRC happens to match the record (the 1 in
        // 2^32 the fast check misses): the read path serves them, scrub's
        // blake3 check does not.
        fs::write(store.path_of(&id), b"evil bytes").unwrap();
        set_attr(&store, &id, crc32c::crc32c(b"evil bytes"));
        assert_eq!(
            &store.read(&id, Check::Recorded).unwrap()[..],
            b"evil bytes"
        );
        assert!(matches!(
            store.read(&id, Check::Name),
            Err(Error::ChunkCorrupt(_))
        ));
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
