//! Free space on the data directory's filesystem: the reserve below which
//! this node takes no new data (`min_free_bytes`), and the ballast, a
//! preallocated file given back when the disk is nearly full, so that sled
//! and the Raft log always find room to open and append.
//!
//! The reserve is checked live (one `statvfs`, about a microsecond) before
//! every new chunk file and by the registry before every write it accepts,
//! so space that comes back is usable at once, without a restart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::{Error, Result};

/// The ballast's name in the data directory. Deleting it by hand is always
/// safe: it holds nothing, and the node makes it again once there is room.
pub const BALLAST_FILE: &str = "ballast";
/// Where the ballast is built before it is renamed into place, so a crash
/// leaves no half-sized ballast under the real name.
const BALLAST_TEMP_FILE: &str = "ballast.tmp";
/// Zeros written per call where the filesystem cannot preallocate.
const ZERO_FILL_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceConfig {
    /// Below this many free bytes the node takes no new data (0: no
    /// reserve; only a real ENOSPC stops writes).
    pub min_free_bytes: u64,
    /// Size of the ballast file (0: none).
    pub ballast_bytes: u64,
}

/// The filesystem's free and total bytes, as an unprivileged writer sees
/// them (`f_bavail`, not `f_bfree`: root's reserved blocks are not ours).
pub type Probe = Box<dyn Fn(&Path) -> io::Result<(u64, u64)> + Send + Sync>;

/// What one look at the disk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceReport {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub min_free_bytes: u64,
    /// Size of the ballast file on disk now (0: none).
    pub ballast_bytes: u64,
    /// Below the reserve: the node takes no new data.
    pub low: bool,
}

/// What `tend_ballast` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BallastChange {
    Unchanged,
    /// Deleted to give its bytes back (the disk is nearly full, or the
    /// ballast was turned off).
    Released {
        bytes: u64,
    },
    Created {
        bytes: u64,
    },
}

pub struct Space {
    dir: PathBuf,
    config: SpaceConfig,
    probe: Probe,
}

fn statvfs_probe(dir: &Path) -> io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(dir)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

impl Space {
    pub fn new(dir: impl Into<PathBuf>, config: SpaceConfig) -> Self {
        Self::with_probe(dir, config, Box::new(statvfs_probe))
    }

    /// A `Space` that reads free space from `probe` (tests fake a full disk
    /// with it).
    pub fn with_probe(dir: impl Into<PathBuf>, config: SpaceConfig, probe: Probe) -> Self {
        Space {
            dir: dir.into(),
            config,
            probe,
        }
    }

    pub fn config(&self) -> SpaceConfig {
        self.config
    }

    fn ballast_path(&self) -> PathBuf {
        self.dir.join(BALLAST_FILE)
    }

    fn ballast_len(&self) -> Result<u64> {
        let path = self.ballast_path();
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("stat", path)(e)),
        }
    }

    fn free_and_total(&self) -> Result<(u64, u64)> {
        (self.probe)(&self.dir).map_err(Error::io("statvfs", &self.dir))
    }

    pub fn report(&self) -> Result<SpaceReport> {
        let (free_bytes, total_bytes) = self.free_and_total()?;
        Ok(SpaceReport {
            free_bytes,
            total_bytes,
            min_free_bytes: self.config.min_free_bytes,
            ballast_bytes: self.ballast_len()?,
            low: free_bytes < self.config.min_free_bytes,
        })
    }

    /// `Ok` while free space is at or above the reserve; `Error::DiskFull`
    /// below it. Callers ask before taking new data.
    pub fn check(&self) -> Result<()> {
        if self.config.min_free_bytes == 0 {
            return Ok(());
        }
        let (free_bytes, _) = self.free_and_total()?;
        if free_bytes < self.config.min_free_bytes {
            return Err(Error::DiskFull {
                path: self.dir.clone(),
                free_bytes,
                min_free_bytes: self.config.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Releases the ballast once free space falls under half the reserve,
    /// and makes it again once free space covers the reserve plus the
    /// ballast (so making it never pushes the node below the reserve). The
    /// gap between the two keeps it from flapping. Run at start, before
    /// sled and the log are opened, and periodically after.
    ///
    /// Why half the reserve: the node's own data writes stop at the reserve,
    /// so a disk that keeps filling below it is being filled by the Raft log
    /// and snapshots (which must never fail) or by another program; that is
    /// when the ballast's bytes are needed.
    pub fn tend_ballast(&self) -> Result<BallastChange> {
        let tmp = self.dir.join(BALLAST_TEMP_FILE);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(Error::io("remove", &tmp))?;
        }
        let present = self.ballast_len()?;
        let (free, _) = self.free_and_total()?;
        let want = self.config.ballast_bytes;
        if present > 0 && (want == 0 || free < self.config.min_free_bytes / 2) {
            let path = self.ballast_path();
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            durable::sync_dir(&self.dir)?;
            return Ok(BallastChange::Released { bytes: present });
        }
        if present == 0 && want > 0 && free >= self.config.min_free_bytes.saturating_add(want) {
            self.create_ballast(&tmp, want)?;
            return Ok(BallastChange::Created { bytes: want });
        }
        Ok(BallastChange::Unchanged)
    }

    /// Writes a ballast of `len` really allocated bytes: preallocated where
    /// the filesystem can (a sparse file would reserve nothing), zeros
    /// otherwise; fsynced, then renamed into place. A failure (ENOSPC from
    /// another writer in between) leaves no temp file behind.
    fn create_ballast(&self, tmp: &Path, len: u64) -> Result<()> {
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(tmp)
                .map_err(Error::io("create", tmp))?;
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::OPNOTSUPP => zero_fill(&mut f, tmp, len)?,
                Err(e) => return Err(Error::io("fallocate", tmp)(e.into())),
            }
            f.sync_all().map_err(Error::io("fsync", tmp))?;
            let dest = self.ballast_path();
            fs::rename(tmp, &dest).map_err(Error::io("rename", &dest))?;
            durable::sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result
    }
}

fn zero_fill(f: &mut File, path: &Path, len: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_FILL_BYTES];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(ZERO_FILL_BYTES, |l| l.min(ZERO_FILL_BYTES));
        f.write_all(&zeros[..n]).map_err(Error::io("write", path))?;
        left -= n as u64;
    }
    Ok(())
}

/// Whether `e` is the filesystem saying it is out of space (or quota).
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A `Space` whose free space the test sets.
    fn faked(dir: &Path, min_free: u64, ballast: u64) -> (Space, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(0));
        let f = free.clone();
        let space = Space::with_probe(
            dir,
            SpaceConfig {
                min_free_bytes: min_free,
                ballast_bytes: ballast,
            },
            Box::new(move |_| Ok((f.load(Ordering::SeqCst), 1 << 40))),
        );
        (space, free)
    }

    #[test]
    fn the_reserve_refuses_below_it_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (space, free) = faked(dir.path(), 100 * MIB, 0);
        free.store(100 * MIB, Ordering::SeqCst);
        space.check().unwrap();
        assert!(!space.report().unwrap().low);
        free.store(100 * MIB - 1, Ordering::SeqCst);
        let e = space.check().unwrap_err();
        assert!(e.is_disk_full());
        let text = e.to_string();
        assert!(
            text.contains("min_free_bytes") && text.contains("reads"),
            "{text}"
        );
        assert!(space.report().unwrap().low);
        // Space that comes back is usable at once.
        free.store(200 * MIB, Ordering::SeqCst);
        space.check().unwrap();
    }

    #[test]
    fn enospc_from_any_write_is_disk_full() {
        let enospc = Error::io("write", "/data/log/1")(io::Error::from_raw_os_error(28));
        assert!(enospc.is_disk_full());
        let sled = Error::Db(sled::Error::Io(io::Error::from_raw_os_error(28)));
        assert!(sled.is_disk_full());
        let other = Error::io("write", "/data/log/1")(io::Error::from_raw_os_error(5));
        assert!(!other.is_disk_full());
    }

    #[test]
    fn no_reserve_never_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (space, _free) = faked(dir.path(), 0, 0);
        space.check().unwrap();
    }

    #[test]
    fn the_ballast_is_made_with_room_released_when_nearly_full_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (space, free) = faked(dir.path(), 8 * MIB, 2 * MIB);
        // Not enough for reserve + ballast: none is made.
        free.store(9 * MIB, Ordering::SeqCst);
        assert_eq!(space.tend_ballast().unwrap(), BallastChange::Unchanged);
        assert_eq!(space.report().unwrap().ballast_bytes, 0);
        free.store(10 * MIB, Ordering::SeqCst);
        assert_eq!(
            space.tend_ballast().unwrap(),
            BallastChange::Created { bytes: 2 * MIB }
        );
        let on_disk = fs::metadata(dir.path().join(BALLAST_FILE)).unwrap();
        assert_eq!(on_disk.len(), 2 * MIB);
        // Really allocated, not a sparse file.
        use std::os::unix::fs::MetadataExt;
        assert!(on_disk.blocks() * 512 >= 2 * MIB);
        // Below the reserve but above half of it: kept.
        free.store(5 * MIB, Ordering::SeqCst);
        assert_eq!(space.tend_ballast().unwrap(), BallastChange::Unchanged);
        free.store(4 * MIB - 1, Ordering::SeqCst);
        assert_eq!(
            space.tend_ballast().unwrap(),
            BallastChange::Released { bytes: 2 * MIB }
        );
        assert!(!dir.path().join(BALLAST_FILE).exists());
        free.store(10 * MIB, Ordering::SeqCst);
        assert!(matches!(
            space.tend_ballast().unwrap(),
            BallastChange::Created { .. }
        ));
    }

    #[test]
    fn a_ballast_turned_off_is_removed_and_a_leftover_temp_file_too() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(BALLAST_FILE), vec![0u8; 4096]).unwrap();
        fs::write(dir.path().join(BALLAST_TEMP_FILE), b"half").unwrap();
        let (space, free) = faked(dir.path(), MIB, 0);
        free.store(100 * MIB, Ordering::SeqCst);
        assert_eq!(
            space.tend_ballast().unwrap(),
            BallastChange::Released { bytes: 4096 }
        );
        assert!(!dir.path().join(BALLAST_TEMP_FILE).exists());
    }

    #[test]
    fn the_real_probe_reads_this_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(
            dir.path(),
            SpaceConfig {
                min_free_bytes: 1,
                ballast_bytes: 0,
            },
        );
        let r = space.report().unwrap();
        assert!(r.total_bytes > 0 && r.free_bytes <= r.total_bytes);
    }
}
