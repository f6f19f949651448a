//! The Raft log for openraft, over `stowage_storage::LogStore`: entries are
//! readable as soon as `append` returns and reported durable only after the
//! group-commit fsync; the vote is replaced atomically and fsynced before
//! `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use stowage_storage::Store;

use super::codec::{decode, encode};
use super::{io_err, Entry, LogId, TypeConfig, Vote};

pub const VOTE_STATE: &str = "vote";
const PURGED_STATE: &str = "purged-log-id";

#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> Self {
        LogStore { store }
    }

    fn last_purged(&self) -> io::Result<Option<LogId>> {
        match self.store.log.load_state(PURGED_STATE).map_err(io_err)? {
            Some(b) => decode(&b).map_err(io_err),
            None => Ok(None),
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.store
            .log
            .read_range(start, end)
            .map_err(io_err)?
            .into_iter()
            .map(|(_, b)| decode(&b).map_err(io_err))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.store.log.load_state(VOTE_STATE).map_err(io_err)? {
            Some(b) => decode(&b).map(Some).map_err(io_err),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.store.log.bounds() {
            Some((_, last)) => {
                let entry: Entry =
                    decode(&self.store.log.read(last).map_err(io_err)?).map_err(io_err)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let store = self.store.clone();
        let bytes = encode(vote);
        tokio::task::spawn_blocking(move || store.log.save_state(VOTE_STATE, &bytes))
            .await
            .map_err(io_err)?
            .map_err(io_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, encode(&e)))
            .collect();
        self.store
            .log
            .append(
                records,
                Box::new(move |r| callback.io_completed(r.map_err(io_err))),
            )
            .map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.store.log.truncate(from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> stowage_storage::Result<()> {
            store.log.save_state(PURGED_STATE, &encode(&Some(log_id)))?;
            // The purged entries are in a snapshot, but make the state
            // machine durable too so a restart never has to fall back to it.
            store.sync_meta()?;
            store.log.purge(log_id.index)
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)
    }
}
