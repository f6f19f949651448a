//! This node's queue of chunks to fetch or check (not replicated): two sled
//! trees, one ordered by when each entry is due and one by chunk, so that a
//! chunk is queued once and the worker takes the due ones in order. It
//! survives restarts, so a repair interrupted by a crash carries on.

use crate::error::Result;
use crate::types::ChunkId;

/// One queued chunk: when it is due, and how many tries failed so far (for
/// the backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: ChunkId,
    pub due_ms: u64,
    pub attempts: u32,
}

pub struct ResyncQueue {
    /// due_ms (8 bytes, big-endian) ++ chunk id -> attempts (4 bytes).
    by_due: sled::Tree,
    /// chunk id -> the `by_due` key it is queued under.
    by_chunk: sled::Tree,
}

fn due_key(due_ms: u64, id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn parse_due_key(k: &[u8], v: &[u8]) -> Option<Queued> {
    let due_ms = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let id = ChunkId::from_bytes(k.get(8..40)?.try_into().ok()?);
    let attempts = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    Some(Queued {
        id,
        due_ms,
        attempts,
    })
}

impl ResyncQueue {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(ResyncQueue {
            by_due: db.open_tree("resync.due")?,
            by_chunk: db.open_tree("resync.chunk")?,
        })
    }

    /// Queues `id` to be looked at from `due_ms` on. A chunk already queued
    /// keeps the earlier of its two times.
    pub fn push(&self, id: ChunkId, due_ms: u64, attempts: u32) -> Result<()> {
        if let Some(old) = self.by_chunk.get(id.as_bytes())? {
            match parse_due_key(&old, &0u32.to_be_bytes()) {
                Some(q) if q.due_ms <= due_ms => return Ok(()),
                _ => {
                    self.by_due.remove(&old)?;
                }
            }
        }
        let k = due_key(due_ms, &id);
        self.by_due.insert(&k, &attempts.to_be_bytes())?;
        self.by_chunk.insert(id.as_bytes(), k)?;
        Ok(())
    }

    /// Takes up to `max` entries due at `now_ms`, earliest first, out of the
    /// queue. The caller pushes back what it could not finish.
    pub fn take_due(&self, now_ms: u64, max: usize) -> Result<Vec<Queued>> {
        let mut out = Vec::new();
        for kv in self.by_due.iter() {
            let (k, v) = kv?;
            let Some(q) = parse_due_key(&k, &v) else {
                self.by_due.remove(&k)?;
                continue;
            };
            if q.due_ms > now_ms || out.len() == max {
                break;
            }
            self.by_due.remove(&k)?;
            if self.by_chunk.get(q.id.as_bytes())?.as_deref() == Some(&k[..]) {
                self.by_chunk.remove(q.id.as_bytes())?;
            }
            out.push(q);
        }
        Ok(out)
    }

    /// When the next entry is due, if any.
    pub fn next_due(&self) -> Result<Option<u64>> {
        Ok(self
            .by_due
            .first()?
            .and_then(|(k, v)| parse_due_key(&k, &v))
            .map(|q| q.due_ms))
    }

    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_due_entries_in_order_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let q = ResyncQueue::open(&db).unwrap();
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        q.push(a, 30, 0).unwrap();
        q.push(b, 10, 2).unwrap();
        q.push(c, 100, 0).unwrap();
        q.push(a, 20, 0).unwrap(); // earlier: moves up
        q.push(b, 50, 0).unwrap(); // later: ignored
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_due().unwrap(), Some(10));
        let due = q.take_due(40, 10).unwrap();
        assert_eq!(
            due.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(),
            vec![(b, 2), (a, 0)]
        );
        assert_eq!(q.len(), 1);
        assert!(q.take_due(40, 10).unwrap().is_empty());
        q.push(a, 5, 1).unwrap();
        assert_eq!(q.take_due(1000, 1).unwrap()[0].id, a);
        assert_eq!(q.take_due(1000, 10).unwrap()[0].id, c);
        assert!(q.is_empty());
    }
}
