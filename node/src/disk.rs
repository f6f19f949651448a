//! This node's disk as status shows it, and the job that watches it: says
//! once when free space falls under the reserve (pushes then answer 507)
//! and once when it is back, and keeps the ballast file (released when the
//! disk is nearly full, made again when there is room).
//!
//! The reserve itself is enforced where data is written (the registry's
//! pushes, the chunk store), live on every write; this job only reports
//! and tends the ballast, so nothing waits for its interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stowage_storage::space::BallastChange;
use stowage_storage::Store;

use crate::error::Result;
use crate::workers::{Step, Worker};

/// How often the job looks. A statvfs costs microseconds; the interval
/// only bounds how late the ballast is released or made, and the log line.
const CHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiskStatus {
    pub data_dir: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The reserve (`min_free_bytes`).
    pub min_free_bytes: u64,
    /// The ballast file's size on disk now (0: none, or released).
    pub ballast_bytes: u64,
    /// Free space is under the reserve: pushes answer 507, reads are
    /// served, and writes resume once space is back.
    pub read_only: bool,
    /// Why the disk could not be looked at, if it could not.
    pub error: Option<String>,
}

pub fn status(store: &Store) -> DiskStatus {
    let data_dir = store.data_dir().display().to_string();
    match store.space.report() {
        Ok(r) => DiskStatus {
            data_dir,
            free_bytes: r.free_bytes,
            total_bytes: r.total_bytes,
            min_free_bytes: r.min_free_bytes,
            ballast_bytes: r.ballast_bytes,
            read_only: r.low,
            error: None,
        },
        Err(e) => DiskStatus {
            data_dir,
            error: Some(e.to_string()),
            ..DiskStatus::default()
        },
    }
}

/// One line for `stowage status`.
pub fn render(d: &DiskStatus) -> String {
    if let Some(e) = &d.error {
        return format!("disk {}: {e}", d.data_dir);
    }
    format!(
        "disk {}: {} free of {} (reserve {}, ballast {}){}",
        d.data_dir,
        mib(d.free_bytes),
        mib(d.total_bytes),
        mib(d.min_free_bytes),
        mib(d.ballast_bytes),
        if d.read_only {
            " · READ-ONLY: free space is under the reserve, pushes answer 507"
        } else {
            ""
        }
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

pub struct DiskWatch {
    pub store: Arc<Store>,
    /// What the last step saw, so a change is logged once.
    low: AtomicBool,
}

impl DiskWatch {
    pub fn new(store: Arc<Store>) -> Self {
        DiskWatch {
            store,
            low: AtomicBool::new(false),
        }
    }
}

impl Worker for DiskWatch {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn interval(&self) -> Duration {
        CHECK_EVERY
    }

    async fn step(&self) -> Result<Step> {
        let store = self.store.clone();
        // A ballast that cannot be made (or dropped) must not hide the
        // reserve's own warning: the report runs either way.
        let (change, report) = tokio::task::spawn_blocking(move || {
            let change = store.space.tend_ballast();
            Ok::<_, stowage_storage::Error>((change, store.space.report()?))
        })
        .await??;
        let change = change.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "tending the ballast file failed");
            BallastChange::Unchanged
        });
        let dir = self.store.data_dir().display().to_string();
        match change {
            BallastChange::Released { bytes } => tracing::warn!(
                data_dir = %dir, bytes, free_bytes = report.free_bytes,
                "the disk is nearly full: released the ballast file to keep room for the Raft log"
            ),
            BallastChange::Created { bytes } => {
                tracing::info!(data_dir = %dir, bytes, "made the ballast file")
            }
            BallastChange::Unchanged => {}
        }
        if self.low.swap(report.low, Ordering::Relaxed) != report.low {
            if report.low {
                tracing::warn!(
                    data_dir = %dir, free_bytes = report.free_bytes, min_free_bytes = report.min_free_bytes,
                    "free space is under the reserve: this node refuses pushes (507) and serves reads until space is freed"
                );
            } else {
                tracing::info!(
                    data_dir = %dir, free_bytes = report.free_bytes,
                    "free space is back above the reserve: this node takes pushes again"
                );
            }
        }
        Ok(Step::Idle(format!(
            "{} bytes free, reserve {}, ballast {}{}",
            report.free_bytes,
            report.min_free_bytes,
            report.ballast_bytes,
            if report.low { " (read-only)" } else { "" }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_read_only() {
        let d = DiskStatus {
            data_dir: "/data".into(),
            free_bytes: 1 << 20,
            total_bytes: 64 << 20,
            min_free_bytes: 8 << 20,
            ballast_bytes: 0,
            read_only: true,
            error: None,
        };
        let line = render(&d);
        assert!(line.contains("1.0 MiB free of 64.0 MiB"), "{line}");
        assert!(line.contains("READ-ONLY"), "{line}");
        let ok = DiskStatus {
            read_only: false,
            ..d
        };
        assert!(!render(&ok).contains("READ-ONLY"));
    }
}
