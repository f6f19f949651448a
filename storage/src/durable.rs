//! The one durable-write path for every file the node keeps: write to a temp
//! file, fsync it, rename it into place, fsync the directory. A guard deletes
//! the temp file if anything fails before the rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of temp files, so start-up sweeps can recognise leftovers.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A temp file that is removed on drop unless it was persisted.
pub struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    pub fn create_in(dir: &Path) -> Result<Self> {
        Self::create_in_with_flags(dir, 0)
    }

    /// A temp file opened with extra `open(2)` flags (such as O_DIRECT).
    pub fn create_in_with_flags(dir: &Path, flags: i32) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// The open file, for callers that stream into it.
    pub fn as_file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn set_len(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(Error::io("truncate", &self.path))
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(Error::io("write", &self.path))
    }

    /// fsyncs the data, renames the file to `dest` and fsyncs `dest`'s
    /// directory, so that the name survives a power cut too.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        self.file
            .sync_all()
            .map_err(Error::io("fsync", &self.path))?;
        fs::rename(&self.path, dest).map_err(Error::io("rename", dest))?;
        self.persisted = true;
        sync_parent(dest)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `data` to `dest` durably, replacing any previous content atomically.
pub fn write_file(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = TempFile::create_in(tmp_dir)?;
    tmp.write_all(data)?;
    tmp.persist(dest)
}

/// fsyncs a directory so that entries created, renamed or removed in it
/// are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Flushes every file of the filesystem `dir` is on (`syncfs`): for files
/// written by code that does not fsync them (a backup repository written
/// through `object_store`), before something that depends on them is
/// recorded.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| rustix::fs::syncfs(&d).map_err(std::io::Error::from))
        .map_err(Error::io("syncfs", dir))
}

pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        // A bare relative name lives in the current directory.
        Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new(".")),
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Creates `dir` (and missing parents), fsyncing each parent that gained an
/// entry, so a directory that holds durable files is itself durable.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create directory", dir)(e)),
    }
}

/// Removes temp files left in `dir` by a crash in the middle of a write.
pub fn remove_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path()).map_err(Error::io("remove", entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        write_file(dir.path(), &dest, b"one").unwrap();
        write_file(dir.path(), &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut t = TempFile::create_in(dir.path()).unwrap();
            t.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn leftovers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}x")), b"").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }
}
