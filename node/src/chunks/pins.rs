//! Pins: chunks written by requests still in progress, which nothing durable
//! references yet. Garbage collection and rebalancing leave a pinned chunk
//! alone whatever its age; a `Pins` guard unpins on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stowage_storage::types::ChunkId;

/// The node's pin counts, shared by every request.
#[derive(Default)]
pub struct PinTable {
    pinned: Mutex<HashMap<ChunkId, usize>>,
}

impl PinTable {
    pub fn is_pinned(&self, id: &ChunkId) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }
}

/// Keeps chunks pinned until the upload session or blob record that
/// references them is stored.
pub struct Pins {
    table: Arc<PinTable>,
    ids: Vec<ChunkId>,
}

impl Pins {
    pub fn new(table: &Arc<PinTable>) -> Self {
        Pins {
            table: table.clone(),
            ids: Vec::new(),
        }
    }

    /// Pins `id` (before it is written, so no sweep sees it unpinned).
    pub fn add(&mut self, id: ChunkId) {
        *self
            .table
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
        self.ids.push(id);
    }

    pub fn absorb(&mut self, mut other: Pins) {
        self.ids.append(&mut other.ids);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut pinned = self.table.pinned.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            if let Some(n) = pinned.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    pinned.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_count_and_release_on_drop() {
        let table = Arc::new(PinTable::default());
        let id = ChunkId::of(b"x");
        let mut a = Pins::new(&table);
        a.add(id);
        let mut b = Pins::new(&table);
        b.add(id);
        let mut c = Pins::new(&table);
        c.absorb(a);
        assert!(table.is_pinned(&id));
        drop(c);
        assert!(table.is_pinned(&id));
        drop(b);
        assert!(!table.is_pinned(&id));
    }
}
