//! What one client request did, recorded while it runs: the last Raft entry
//! committed for it and who asked. The HTTP edge opens one scope per
//! request and turns it into the `Stowage-*` response headers and the
//! access log line; code outside a scope (workers, RPC handlers) records
//! nothing. A task-local rather than a return value, so the dozen paths
//! from a handler down to `Consensus::propose` need not carry it.

use std::future::Future;
use std::sync::{Arc, Mutex};

/// A committed Raft entry: its log index and the term of the leader that
/// committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub index: u64,
    pub term: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Receipt {
    /// The latest entry committed for this request, if it wrote.
    pub write: Option<Written>,
    /// The authenticated account, if any.
    pub caller: Option<String>,
}

tokio::task_local! {
    static CURRENT: Arc<Mutex<Receipt>>;
}

/// Runs `f` with a fresh receipt and returns both.
pub async fn scope<F: Future>(f: F) -> (F::Output, Receipt) {
    let cell = Arc::new(Mutex::new(Receipt::default()));
    let out = CURRENT.scope(cell.clone(), f).await;
    let receipt = cell.lock().map(|r| r.clone()).unwrap_or_default();
    (out, receipt)
}

fn with(f: impl FnOnce(&mut Receipt)) {
    let _ = CURRENT.try_with(|cell| {
        if let Ok(mut r) = cell.lock() {
            f(&mut r);
        }
    });
}

/// Records that `index` (of `term`) was committed for the current request.
pub fn wrote(index: u64, term: u64) {
    with(|r| {
        if r.write.is_none_or(|w| index >= w.index) {
            r.write = Some(Written { index, term });
        }
    });
}

/// Records who the current request is from.
pub fn caller(name: &str) {
    with(|r| r.caller = Some(name.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_keeps_the_latest_write_and_nothing_leaks_outside() {
        wrote(1, 1);
        let ((), r) = scope(async {
            wrote(7, 2);
            wrote(5, 2);
            caller("alice");
        })
        .await;
        assert_eq!(r.write, Some(Written { index: 7, term: 2 }));
        assert_eq!(r.caller.as_deref(), Some("alice"));
        let ((), empty) = scope(async {}).await;
        assert!(empty.write.is_none() && empty.caller.is_none());
    }
}
