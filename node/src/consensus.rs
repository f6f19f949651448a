//! Where metadata writes become durable and ordered: a `Command` is appended
//! to the fsynced log, then applied to the state machine, then acknowledged.
//! On a single node the log is local; in a cluster the same commands go
//! through the Raft log, and callers do not change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use stowage_storage::meta::{Command, Outcome};
use stowage_storage::Store;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The log is compacted (state machine made durable, applied entries
/// purged) after this many applied entries.
const COMPACT_EVERY_ENTRIES: u64 = 10_000;

struct Pending {
    index: u64,
    cmd: Command,
    durable: oneshot::Receiver<stowage_storage::Result<()>>,
    reply: oneshot::Sender<Result<Outcome>>,
}

pub struct Consensus {
    store: Arc<Store>,
    /// The last index handed out; held while submitting so that log order
    /// and apply order are the same.
    next: Mutex<u64>,
    applier: mpsc::UnboundedSender<Pending>,
    failed: Arc<AtomicBool>,
}

fn mark(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn applied_index(store: &Store) -> Result<u64> {
    Ok(store
        .meta
        .applied_mark()?
        .and_then(|m| m.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

impl Consensus {
    /// Replays log entries the state machine had not applied before a crash,
    /// then starts the applier.
    pub fn start(store: Arc<Store>) -> Result<Arc<Self>> {
        let applied = applied_index(&store)?;
        let last = store.log.last_index();
        if last > applied {
            tracing::info!(from = applied + 1, to = last, "replaying the log");
            for (index, bytes) in store.log.read_range(applied + 1, last + 1)? {
                let cmd: Command = decode(&bytes)?;
                store.meta.apply(&cmd, &mark(index))?;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        tokio::spawn(apply_loop(store.clone(), rx, failed.clone()));
        Ok(Arc::new(Consensus {
            store,
            next: Mutex::new(last.max(applied)),
            applier: tx,
            failed,
        }))
    }

    /// Makes `cmd` durable, applies it, and returns what applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "a log write failed; restart the node".into(),
            ));
        }
        let bytes = postcard::to_stdvec(&cmd)
            .map_err(|_| Error::Unavailable("command does not encode".into()))?;
        let (durable_tx, durable) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let index = *next + 1;
            self.store.log.append(
                vec![(index, bytes)],
                Box::new(move |r| {
                    let _ = durable_tx.send(r);
                }),
            );
            *next = index;
            let pending = Pending {
                index,
                cmd,
                durable,
                reply,
            };
            if self.applier.send(pending).is_err() {
                return Err(Error::Unavailable("the applier stopped".into()));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("the applier stopped".into())))
    }

    /// Waits until every write acknowledged anywhere is visible here. A
    /// single node applies before it acknowledges, so there is nothing to
    /// wait for.
    pub async fn read_barrier(&self) -> Result<()> {
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }
}

fn decode(bytes: &[u8]) -> Result<Command> {
    postcard::from_bytes(bytes).map_err(|source| {
        Error::Storage(stowage_storage::Error::Decode {
            tree: "log",
            source,
        })
    })
}

async fn apply_loop(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    failed: Arc<AtomicBool>,
) {
    let mut since_compaction = 0u64;
    while let Some(p) = rx.recv().await {
        let durable = p
            .durable
            .await
            .unwrap_or(Err(stowage_storage::Error::LogClosed));
        let result = match durable {
            Ok(()) if !failed.load(Ordering::Acquire) => store
                .meta
                .apply(&p.cmd, &mark(p.index))
                .map_err(Error::from),
            Ok(()) => Err(Error::Unavailable("an earlier log write failed".into())),
            Err(e) => {
                // Later entries may already be queued behind a hole; stop
                // taking writes rather than apply out of order.
                tracing::error!(error = %e, index = p.index, "log append failed; refusing further writes");
                failed.store(true, Ordering::Release);
                Err(Error::Storage(e))
            }
        };
        let _ = p.reply.send(result);
        since_compaction += 1;
        if since_compaction >= COMPACT_EVERY_ENTRIES {
            since_compaction = 0;
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = compact(&store) {
                    tracing::warn!(error = %e, "log compaction failed; will retry later");
                }
            });
        }
    }
}

/// Makes the state machine durable up to its applied mark, then drops the
/// log entries it covers.
pub fn compact(store: &Store) -> Result<()> {
    let applied = applied_index(store)?;
    store.sync_meta()?;
    store.log.purge_wait(applied)?;
    Ok(())
}
