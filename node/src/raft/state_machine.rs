//! The Raft state machine for openraft, over `stowage_storage::StateMachine`,
//! and its snapshots. Each applied entry stores its log id and the current
//! membership (the "applied mark") in the same sled batch as its data.
//!
//! A snapshot is two files in `snapshots/`: `<name>.state` (the state
//! machine's export, streamed, never held in memory) and `<name>.meta` (the
//! openraft metadata), the meta file written last so its presence means the
//! pair is complete.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot};
use stowage_storage::durable::{self, TempFile};
use stowage_storage::meta::Outcome;
use stowage_storage::Store;

use super::codec::{decode, encode};
use super::{io_err, LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// What openraft hands around as snapshot data: an open state file (kept
/// readable even if a newer snapshot replaces it) and where it lives.
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: File,
    pub path: PathBuf,
}

pub type StowageSnapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// The applied mark: what the state machine has applied, and the membership
/// as of that point.
type Mark = (Option<LogId>, StoredMembership);

/// The snapshot files' directory under the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

pub struct StateMachineStore {
    store: Arc<Store>,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachineStore {
    pub fn open(store: Arc<Store>) -> io::Result<Self> {
        let dir = store.data_dir().join(SNAPSHOT_DIR);
        durable::create_dir_durable(&dir).map_err(io_err)?;
        durable::remove_temp_files(&dir).map_err(io_err)?;
        // Staged files are transfers or builds a crash interrupted.
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("staged") {
                fs::remove_file(&path)?;
            }
        }
        let (last_applied, membership) = read_mark(&store)?;
        Ok(StateMachineStore {
            store,
            dir,
            last_applied,
            membership,
        })
    }

    pub fn snapshot_dir(&self) -> &Path {
        &self.dir
    }
}

fn read_mark(store: &Store) -> io::Result<Mark> {
    match store.meta.applied_mark().map_err(io_err)? {
        Some(b) => decode(&b).map_err(io_err),
        None => Ok((None, StoredMembership::default())),
    }
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(l) => format!(
            "snap-{:020}-{}-{}",
            l.index, l.leader_id.term, l.leader_id.node_id
        ),
        None => "snap-empty".to_string(),
    }
}

/// Records `state_file` (already fsynced) as the current snapshot with
/// `meta`, and removes older snapshots.
fn commit_snapshot(dir: &Path, state_file: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
    let name = snapshot_name(meta);
    let state_path = dir.join(format!("{name}.state"));
    if state_file != state_path {
        fs::rename(state_file, &state_path)?;
    }
    durable::write_file(dir, &dir.join(format!("{name}.meta")), &encode(meta)).map_err(io_err)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let is_snapshot = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("state" | "meta")
        );
        if is_snapshot && stem.as_deref() != Some(name.as_str()) {
            let _ = fs::remove_file(&path);
        }
    }
    durable::sync_dir(dir).map_err(io_err)?;
    Ok(state_path)
}

/// The newest complete snapshot in `dir`.
fn current_snapshot(dir: &Path) -> io::Result<Option<StowageSnapshot>> {
    let mut best: Option<(u64, SnapshotMeta, PathBuf)> = None;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let Ok(meta) = decode::<SnapshotMeta>(&fs::read(&path)?) else {
            continue;
        };
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
        let state = path.with_extension("state");
        if state.is_file() && best.as_ref().is_none_or(|b| index >= b.0) {
            best = Some((index, meta, state));
        }
    }
    match best {
        None => Ok(None),
        Some((_, meta, path)) => Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFile {
                file: File::open(&path)?,
                path,
            },
        })),
    }
}

pub struct SnapshotBuilder {
    store: Arc<Store>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<StowageSnapshot, io::Error> {
        let store = self.store.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<StowageSnapshot> {
            // The export is consistent at one applied mark (applies wait
            // while it runs), and that mark says what the snapshot covers.
            let mut tmp = TempFile::create_in(&dir).map_err(io_err)?;
            let mut out = BufWriter::new(tmp.as_file_mut());
            let mark = store.meta.export(&mut out).map_err(io_err)?;
            out.flush()?;
            drop(out);
            let (last_log_id, last_membership): Mark = match mark {
                Some(b) => decode(&b).map_err(io_err)?,
                None => (None, StoredMembership::default()),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
            };
            let staged = dir.join(format!("{}.staged", snapshot_name(&meta)));
            tmp.persist(&staged).map_err(io_err)?;
            let path = commit_snapshot(&dir, &staged, &meta)?;
            tracing::info!(snapshot = %path.display(), "built a snapshot");
            Ok(Snapshot {
                meta,
                snapshot: SnapshotFile {
                    file: File::open(&path)?,
                    path,
                },
            })
        })
        .await
        .map_err(io_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => {
                    let mark = encode(&(self.last_applied, self.membership.clone()));
                    self.store.meta.set_mark(&mark).map_err(io_err)?;
                    Outcome::Done
                }
                EntryPayload::Normal(cmd) => {
                    let mark = encode(&(self.last_applied, self.membership.clone()));
                    self.store.meta.apply(&cmd, &mark).map_err(io_err)?
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    let mark = encode(&(self.last_applied, self.membership.clone()));
                    self.store.meta.set_mark(&mark).map_err(io_err)?;
                    Outcome::Done
                }
            };
            if let Some(r) = responder {
                r.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.store.clone();
        let dir = self.dir.clone();
        let meta_owned = meta.clone();
        let (last_applied, membership) =
            tokio::task::spawn_blocking(move || -> io::Result<Mark> {
                let SnapshotFile { mut file, path } = snapshot;
                file.seek(SeekFrom::Start(0))?;
                let mark = store
                    .meta
                    .import(&mut BufReader::new(&mut file))
                    .map_err(io_err)?;
                let mark: Mark = match mark {
                    Some(b) => decode(&b).map_err(io_err)?,
                    None => (None, StoredMembership::default()),
                };
                if mark.0 != meta_owned.last_log_id {
                    return Err(io::Error::other(format!(
                        "snapshot content is at {:?} but its metadata says {:?}",
                        mark.0, meta_owned.last_log_id
                    )));
                }
                store.sync_meta().map_err(io_err)?;
                commit_snapshot(&dir, &path, &meta_owned)?;
                Ok(mark)
            })
            .await
            .map_err(io_err)??;
        tracing::info!(last_applied = ?last_applied, "installed a snapshot");
        self.last_applied = last_applied;
        self.membership = membership;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<StowageSnapshot>, io::Error> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || current_snapshot(&dir))
            .await
            .map_err(io_err)?
    }
}
