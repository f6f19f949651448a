//! A backup repository: one `object_store` (a directory or an S3 bucket)
//! holding chunks by content address, snapshots and the continuous archive,
//! every object sealed (XChaCha20-Poly1305 under the operator's key, else a
//! blake3 trailer), so corruption and a wrong key are caught on every read.
//!
//! Layout (restic's idea: content-addressed data shared by every snapshot):
//!
//! ```text
//! config                          JSON, never encrypted: format, version, id, encrypted, key check
//! chunks/<2 hex>/<64 hex>         a chunk (name: its blake3 id, or under a key a keyed hash of it)
//! snapshots/<time>-<id>           a snapshot's header (`SnapshotInfo`), written last
//! states/<id>                     the state machine's export at the snapshot's log index
//! archive/<first:020>-<last:020>  committed log entries (the continuous archive)
//! locks/<id>                      a backup in progress, so prune leaves its chunks alone
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures_util::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use stowage_storage::types::ChunkId;

use crate::error::{Error, Result};

/// The repository format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT: &str = "stowage-backup";
const SEALED: &[u8; 4] = b"STWE";
const PLAIN: &[u8; 4] = b"STWP";
const NONCE_BYTES: usize = 24;
const KEY_CHECK: &[u8] = b"stowage backup key check";

/// The operator's key: 32 random bytes, kept as 64 hex digits in a file.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    pub fn generate() -> Result<Key> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::BackupSource(format!("no randomness: {e}")))?;
        Ok(Key(k))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key in a file's first line (64 hex digits).
    pub fn parse(text: &str) -> std::result::Result<Key, String> {
        let line = text.lines().next().unwrap_or("").trim();
        let bytes = hex::decode(line).map_err(|_| "a key file holds 64 hex digits".to_owned())?;
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "a key file holds 64 hex digits (32 bytes)".to_owned())?;
        Ok(Key(k))
    }

    pub fn from_file(path: &std::path::Path) -> Result<Key> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::BackupRepo {
            repo: path.display().to_string(),
            reason: format!("cannot read the key file: {e}"),
        })?;
        Key::parse(&text).map_err(|reason| Error::BackupRepo {
            repo: path.display().to_string(),
            reason,
        })
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What the key seals with: separate subkeys for contents and for names,
/// so the names (keyed hashes) say nothing about contents.
struct Sealer {
    aead: XChaCha20Poly1305,
    names: [u8; 32],
}

impl Sealer {
    fn new(key: &Key) -> Sealer {
        let data = blake3::derive_key("stowage backup 2026-12 object contents", &key.0);
        let names = blake3::derive_key("stowage backup 2026-12 object names", &key.0);
        Sealer {
            aead: XChaCha20Poly1305::new(&data.into()),
            names,
        }
    }
}

/// The repository's `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub encrypted: bool,
    pub created_ms: u64,
    /// A known text sealed under the key: opening with another key fails
    /// here, with a clear message, rather than on the first chunk.
    #[serde(default)]
    pub key_check: Option<String>,
}

#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn ObjectStore>,
    sealer: Option<Arc<Sealer>>,
    pub config: RepoConfig,
    /// Where the repository is, as the operator named it.
    pub location: String,
    /// The local directory, for `syncfs` before a snapshot is recorded.
    local_dir: Option<std::path::PathBuf>,
}

/// Builds the object store a location names: `s3://bucket/prefix` (with the
/// usual `AWS_*` variables, `AWS_ENDPOINT` for other S3 servers and
/// `AWS_ALLOW_HTTP=true` for a plain-HTTP one), `file:///dir`, or a path.
fn connect(location: &str) -> Result<(Arc<dyn ObjectStore>, Option<std::path::PathBuf>)> {
    let bad = |reason: String| Error::BackupRepo {
        repo: location.to_owned(),
        reason,
    };
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("s3://BUCKET[/PREFIX]: the bucket is missing".into()));
        }
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| bad(format!("S3 settings: {e}")))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        return Ok((store, None));
    }
    if location.contains("://") && !location.starts_with("file://") {
        return Err(bad(
            "a backup repository is a directory, file:///DIR or s3://BUCKET[/PREFIX]".into(),
        ));
    }
    let dir = std::path::PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
    std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
    let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
    Ok((Arc::new(fs), Some(dir)))
}

impl Repo {
    /// Opens an existing repository; `key` must match how it was made.
    pub async fn open(location: &str, key: Option<&Key>) -> Result<Repo> {
        let (store, local_dir) = connect(location)?;
        let config = match get(&store, "config").await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::BackupRepo {
                    repo: location.to_owned(),
                    reason: "not a backup repository (no config object); \
                             `stowage backup create --to` makes one"
                        .into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        Repo::from_config(location, store, local_dir, &config, key)
    }

    /// Opens the repository, or makes it (with `key`, if given) where there
    /// is none.
    pub async fn open_or_init(location: &str, key: Option<&Key>) -> Result<Repo> {
        let (store, local_dir) = connect(location)?;
        match get(&store, "config").await {
            Ok(bytes) => {
                return Repo::from_config(location, store, local_dir, &bytes, key);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::BackupSource(format!("no randomness: {e}")))?;
        let sealer = key.map(|k| Arc::new(Sealer::new(k)));
        let key_check = match &sealer {
            Some(s) => Some(hex::encode(seal(Some(s.as_ref()), "config", KEY_CHECK)?)),
            None => None,
        };
        let config = RepoConfig {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            id: hex::encode(id),
            encrypted: key.is_some(),
            created_ms: crate::registry::now_ms(),
            key_check,
        };
        let bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(&Path::from("config"), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            // Two backups made it at once: use the one that won.
            Err(object_store::Error::AlreadyExists { .. }) => {
                let bytes = get(&store, "config").await?;
                return Repo::from_config(location, store, local_dir, &bytes, key);
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            repo = location,
            encrypted = config.encrypted,
            "made a backup repository"
        );
        Ok(Repo {
            store,
            sealer,
            config,
            location: location.to_owned(),
            local_dir,
        })
    }

    fn from_config(
        location: &str,
        store: Arc<dyn ObjectStore>,
        local_dir: Option<std::path::PathBuf>,
        bytes: &[u8],
        key: Option<&Key>,
    ) -> Result<Repo> {
        let bad = |reason: String| Error::BackupRepo {
            repo: location.to_owned(),
            reason,
        };
        let config: RepoConfig = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("its config object is not readable ({e})")))?;
        if config.format != FORMAT {
            return Err(bad(format!(
                "not a Stowage backup repository (format {:?})",
                config.format
            )));
        }
        if config.version != FORMAT_VERSION {
            return Err(bad(format!(
                "repository format version {}, but this stowage reads version {FORMAT_VERSION}",
                config.version
            )));
        }
        let sealer = match (config.encrypted, key) {
            (true, None) => {
                return Err(bad(
                    "the repository is encrypted: give its key (--key-file or backup_key_file)"
                        .into(),
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    "the repository is not encrypted, but a key was given; \
                     drop the key or back up to a new repository"
                        .into(),
                ))
            }
            (true, Some(k)) => {
                let s = Sealer::new(k);
                let check = config
                    .key_check
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or_else(|| bad("its config has no key check".into()))?;
                match unseal(Some(&s), "config", &check) {
                    Ok(plain) if plain == KEY_CHECK => {}
                    _ => {
                        return Err(bad(
                            "the key does not open this repository (another key)".into()
                        ))
                    }
                }
                Some(Arc::new(s))
            }
            (false, None) => None,
        };
        Ok(Repo {
            store,
            sealer,
            config,
            location: location.to_owned(),
            local_dir,
        })
    }

    pub fn encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    fn corrupt(&self, path: &str, why: &str) -> Error {
        Error::BackupRepo {
            repo: self.location.clone(),
            reason: format!("object {path} is {why}"),
        }
    }

    /// The object name of a chunk: its id, or under a key a keyed hash of
    /// it, so names reveal nothing about contents.
    pub fn chunk_path(&self, id: &ChunkId) -> String {
        let name = match &self.sealer {
            Some(s) => blake3::keyed_hash(&s.names, id.as_bytes())
                .to_hex()
                .to_string(),
            None => id.to_hex(),
        };
        format!("chunks/{}/{}", &name[..2], name)
    }

    /// Writes an object, sealed.
    pub async fn put(&self, path: &str, plain: &[u8]) -> Result<u64> {
        let sealed = seal(self.sealer.as_deref(), path, plain)?;
        let n = sealed.len() as u64;
        self.store
            .put_opts(
                &Path::from(path),
                PutPayload::from(sealed),
                PutOptions::default(),
            )
            .await?;
        Ok(n)
    }

    /// Reads and unseals an object; `None` if there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let bytes = match get(&self.store, path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        unseal(self.sealer.as_deref(), path, &bytes)
            .map(Some)
            .map_err(|why| self.corrupt(path, why))
    }

    /// Reads an object that must exist.
    pub async fn need(&self, path: &str) -> Result<Vec<u8>> {
        self.get(path)
            .await?
            .ok_or_else(|| self.corrupt(path, "missing"))
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let owned = Path::from(path);
        let one = futures_util::stream::once(async move { Ok(owned) }).boxed();
        let results: Vec<_> = self.store.delete_stream(one).collect().await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Every object under `prefix` (`chunks`, `snapshots`, ...), with its
    /// size.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_with_times(prefix)
            .await?
            .into_iter()
            .map(|(p, size, _)| (p, size))
            .collect())
    }

    /// Every object under `prefix` with its size and when it was last
    /// written (Unix ms).
    pub async fn list_with_times(&self, prefix: &str) -> Result<Vec<(String, u64, u64)>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let t = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
                (m.location.to_string(), m.size, t)
            })
            .collect())
    }

    /// Takes the repository for writing (a backup, an archive step) or
    /// for a prune, which exclude each other: each writes its lock and
    /// then looks for a fresh lock of the other kind, so of two that start
    /// together at least one sees the other and steps back. Returns the
    /// lock to give back with `unlock`.
    pub async fn lock(&self, prune: bool, who: &str) -> Result<String> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::BackupSource(format!("no randomness: {e}")))?;
        let kind = if prune { "prune" } else { "write" };
        let path = format!("locks/{kind}-{}", hex::encode(id));
        let now = crate::registry::now_ms();
        let body = serde_json::json!({ "who": who, "started_ms": now });
        self.put(&path, &serde_json::to_vec(&body).unwrap_or_default())
            .await?;
        for (other, _) in self.list("locks").await? {
            let is_prune = other.starts_with("locks/prune-");
            if other == path || (!prune && !is_prune) {
                continue;
            }
            let held = self.get(&other).await.ok().flatten().unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&held).unwrap_or_default();
            let since = v["started_ms"].as_u64().unwrap_or(0);
            if now.saturating_sub(since) < super::LOCK_STALE_MS {
                self.unlock(&path).await;
                let what = if is_prune {
                    "a prune"
                } else {
                    "a backup or an archive step"
                };
                return Err(Error::BackupRepo {
                    repo: self.location.clone(),
                    reason: format!(
                        "{what} holds it ({other}, {} since {}); try again after it ends",
                        v["who"].as_str().unwrap_or("?"),
                        super::restore::rfc3339(since)
                    ),
                });
            }
        }
        Ok(path)
    }

    /// Gives a lock back; one left behind only goes stale.
    pub async fn unlock(&self, path: &str) {
        if let Err(e) = self.delete(path).await {
            tracing::warn!(lock = path, error = %e, "could not remove a backup repository lock");
        }
    }

    /// Whether an object exists.
    pub async fn has(&self, path: &str) -> Result<bool> {
        let head = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&Path::from(path), head).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The names (paths) of every chunk object.
    pub async fn chunk_paths(&self) -> Result<HashSet<String>> {
        Ok(self
            .list("chunks")
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// Stores a chunk whose bytes `data` are (checked by the caller against
    /// `id`); returns the bytes written.
    pub async fn put_chunk(&self, id: &ChunkId, data: &[u8]) -> Result<u64> {
        let path = self.chunk_path(id);
        let n = self.put(&path, data).await?;
        // Checked on write: the object is there at the size sent.
        let head = GetOptions {
            head: true,
            ..Default::default()
        };
        let meta = self
            .store
            .get_opts(&Path::from(path.as_str()), head)
            .await?
            .meta;
        if meta.size != n {
            return Err(self.corrupt(&path, "short after writing"));
        }
        Ok(n)
    }

    /// A chunk, unsealed and checked against its id.
    pub async fn get_chunk(&self, id: &ChunkId) -> Result<Bytes> {
        let path = self.chunk_path(id);
        let plain = self.need(&path).await?;
        if ChunkId::of(&plain) != *id {
            return Err(self.corrupt(&path, "corrupt (its bytes do not hash to the chunk id)"));
        }
        Ok(Bytes::from(plain))
    }

    /// Makes what was written so far durable before something that depends
    /// on it is recorded: object stores are durable when a put returns, a
    /// local directory is not until its filesystem is synced.
    pub async fn sync(&self) -> Result<()> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(());
        };
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || stowage_storage::durable::sync_filesystem(&dir2))
            .await?
            .map_err(|e| Error::BackupRepo {
                repo: self.location.clone(),
                reason: format!("cannot sync {}: {e}", dir.display()),
            })
    }
}

/// One whole object (the trait's own method: its future is `Send` for any
/// borrow, which the extension trait's is not).
async fn get(store: &Arc<dyn ObjectStore>, path: &str) -> object_store::Result<Bytes> {
    store
        .get_opts(&Path::from(path), GetOptions::default())
        .await?
        .bytes()
        .await
}

/// `STWE` nonce ciphertext (AEAD, the path as associated data, so an object
/// moved to another name fails too), or `STWP` plaintext blake3.
fn seal(sealer: Option<&Sealer>, path: &str, plain: &[u8]) -> Result<Vec<u8>> {
    match sealer {
        Some(s) => {
            let mut nonce = [0u8; NONCE_BYTES];
            getrandom::fill(&mut nonce)
                .map_err(|e| Error::BackupSource(format!("no randomness: {e}")))?;
            let ct = s
                .aead
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: plain,
                        aad: path.as_bytes(),
                    },
                )
                .map_err(|_| Error::BackupSource("encryption failed".into()))?;
            let mut out = Vec::with_capacity(4 + NONCE_BYTES + ct.len());
            out.extend_from_slice(SEALED);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&ct);
            Ok(out)
        }
        None => {
            let mut out = Vec::with_capacity(4 + plain.len() + 32);
            out.extend_from_slice(PLAIN);
            out.extend_from_slice(plain);
            out.extend_from_slice(blake3::hash(plain).as_bytes());
            Ok(out)
        }
    }
}

fn unseal(
    sealer: Option<&Sealer>,
    path: &str,
    bytes: &[u8],
) -> std::result::Result<Vec<u8>, &'static str> {
    match sealer {
        Some(s) => {
            if bytes.len() < 4 + NONCE_BYTES + 16 || &bytes[..4] != SEALED {
                return Err("not encrypted as the repository says (or truncated)");
            }
            let mut nonce = [0u8; NONCE_BYTES];
            nonce.copy_from_slice(&bytes[4..4 + NONCE_BYTES]);
            s.aead
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &bytes[4 + NONCE_BYTES..],
                        aad: path.as_bytes(),
                    },
                )
                .map_err(|_| "corrupt or sealed under another key (authentication failed)")
        }
        None => {
            if bytes.len() < 4 + 32 || &bytes[..4] != PLAIN {
                return Err("truncated or not a Stowage backup object");
            }
            let (plain, sum) = bytes[4..].split_at(bytes.len() - 4 - 32);
            if blake3::hash(plain).as_bytes() != sum {
                return Err("corrupt (checksum mismatch)");
            }
            Ok(plain.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_open_only_with_their_key_and_name() {
        let k = Key::generate().unwrap();
        let s = Sealer::new(&k);
        let sealed = seal(Some(&s), "states/a", b"hello").unwrap();
        assert_eq!(unseal(Some(&s), "states/a", &sealed).unwrap(), b"hello");
        assert!(
            unseal(Some(&s), "states/b", &sealed).is_err(),
            "moved object"
        );
        let other = Sealer::new(&Key::generate().unwrap());
        assert!(
            unseal(Some(&other), "states/a", &sealed).is_err(),
            "other key"
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            unseal(Some(&s), "states/a", &flipped).is_err(),
            "flipped byte"
        );
        assert!(
            !sealed.windows(5).any(|w| w == b"hello"),
            "the plaintext is not in the object"
        );
    }

    #[test]
    fn plain_objects_catch_a_flipped_byte() {
        let sealed = seal(None, "x", b"hello").unwrap();
        assert_eq!(unseal(None, "x", &sealed).unwrap(), b"hello");
        let mut flipped = sealed.clone();
        flipped[5] ^= 1;
        assert!(unseal(None, "x", &flipped).is_err());
        assert!(unseal(None, "x", &sealed[..10]).is_err());
    }

    #[tokio::test]
    async fn a_repository_says_what_is_wrong_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().to_str().unwrap().to_owned();
        let k = Key::generate().unwrap();
        Repo::open_or_init(&loc, Some(&k)).await.unwrap();
        let no_key = Repo::open(&loc, None).await.err().unwrap().to_string();
        assert!(no_key.contains("encrypted"), "{no_key}");
        let other = Repo::open(&loc, Some(&Key::generate().unwrap()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(other.contains("another key"), "{other}");
        assert!(Repo::open(&loc, Some(&k)).await.is_ok());
        let empty = tempfile::tempdir().unwrap();
        let none = Repo::open(empty.path().to_str().unwrap(), None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(none.contains("not a backup repository"), "{none}");
    }
}
