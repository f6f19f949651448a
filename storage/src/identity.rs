//! The data directory's incarnation: a random id written once, when the
//! directory is created, and read on every open. The membership records it
//! for each node, so a node that comes back under its old id with an
//! emptied, replaced or foreign disk is recognised as a different replica
//! (it forgot what it acknowledged) instead of being trusted as the old one.

use std::path::Path;

use crate::durable;
use crate::error::{Error, Result};

/// File name of the incarnation, beside `chunks/`, `meta/` and `log/`.
pub const INCARNATION_FILE: &str = "incarnation";

/// 32 lowercase hex characters.
const INCARNATION_LEN: usize = 32;

/// Reads the directory's incarnation, creating one (through the durable
/// write path) if the directory has none yet.
pub fn load_or_create(dir: &Path) -> Result<String> {
    let path = dir.join(INCARNATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == INCARNATION_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(id.to_owned())
            } else {
                Err(Error::BadIncarnation { path })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            durable::write_file(dir, &path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(Error::io("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert_eq!(a.len(), INCARNATION_LEN);
        assert_eq!(load_or_create(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a);
        std::fs::write(dir.path().join(INCARNATION_FILE), "nonsense").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(Error::BadIncarnation { .. })
        ));
    }
}
