//! Background jobs: one `Worker` trait that every job implements (after
//! Garage's `src/util/background/worker.rs`), and the runner that drives
//! each one in its own task and records what it is doing, so status and
//! metrics show every job the same way: name, state, progress, last error,
//! next run.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::Result;
use crate::registry::now_ms;

/// What one step of a job did.
pub enum Step {
    /// There is more to do at once (a batch of a long pass): call again.
    More(String),
    /// Nothing left until the next interval or a wake-up.
    Idle(String),
}

pub trait Worker: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// How long the job rests after an idle step.
    fn interval(&self) -> Duration;
    /// Does one bounded piece of work and says what it did.
    fn step(&self) -> impl Future<Output = Result<Step>> + Send;
}

/// What status shows of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    /// `running`, `idle` or `failing`.
    pub state: String,
    pub progress: String,
    pub last_error: Option<String>,
    pub errors: u64,
    pub steps: u64,
    /// When the last step ended (Unix ms).
    pub last_step_unix_ms: Option<u64>,
    /// When the next step is due, if the job is resting (Unix ms).
    pub next_run_unix_ms: Option<u64>,
}

/// One job's shared state: its status, and a bell that ends its rest.
pub struct Handle {
    status: Mutex<WorkerStatus>,
    wake: Notify,
}

impl Handle {
    /// Ends the job's rest now (e.g. `stowage gc run`, a membership change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Rest after a failed step: doubling from one second, capped by the
/// job's interval.
fn backoff(errors_in_a_row: u32, interval: Duration) -> Duration {
    let secs = 1u64 << errors_in_a_row.min(8);
    Duration::from_secs(secs).min(interval.max(Duration::from_secs(1)))
}

/// Every job of the node, in start order.
#[derive(Default)]
pub struct Workers {
    handles: Mutex<Vec<Arc<Handle>>>,
}

impl Workers {
    /// Starts `worker` in a task of its own and returns its handle.
    pub fn spawn<W: Worker>(&self, worker: Arc<W>) -> Arc<Handle> {
        let handle = Arc::new(Handle {
            status: Mutex::new(WorkerStatus {
                name: worker.name().to_owned(),
                state: "idle".into(),
                ..WorkerStatus::default()
            }),
            wake: Notify::new(),
        });
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle.clone());
        let h = handle.clone();
        tokio::spawn(async move { run(worker, h).await });
        handle
    }

    pub fn status(&self) -> Vec<WorkerStatus> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|h| h.status())
            .collect()
    }
}

async fn run<W: Worker>(worker: Arc<W>, handle: Arc<Handle>) {
    let mut failures = 0u32;
    loop {
        handle.update(|s| {
            s.state = "running".into();
            s.next_run_unix_ms = None;
        });
        let started = Instant::now();
        let rest = match worker.step().await {
            Ok(Step::More(progress)) => {
                failures = 0;
                handle.update(|s| {
                    s.progress = progress;
                    s.steps += 1;
                    s.last_step_unix_ms = Some(now_ms());
                });
                // Let other tasks in between batches of a long pass.
                tokio::task::yield_now().await;
                continue;
            }
            Ok(Step::Idle(progress)) => {
                failures = 0;
                handle.update(|s| {
                    s.state = "idle".into();
                    s.progress = progress;
                    s.steps += 1;
                });
                worker.interval()
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(worker = worker.name(), error = %e, "background job failed; retrying");
                handle.update(|s| {
                    s.state = "failing".into();
                    s.last_error = Some(e.to_string());
                    s.errors += 1;
                });
                backoff(failures, worker.interval())
            }
        };
        tracing::trace!(worker = worker.name(), took = ?started.elapsed(), "step");
        let rest_ms = u64::try_from(rest.as_millis()).unwrap_or(u64::MAX);
        handle.update(|s| {
            s.last_step_unix_ms = Some(now_ms());
            s.next_run_unix_ms = Some(now_ms().saturating_add(rest_ms));
        });
        tokio::select! {
            () = tokio::time::sleep(rest) => {}
            () = handle.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::Error;

    struct Counter {
        steps: AtomicU32,
    }

    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn step(&self) -> Result<Step> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst);
            match n {
                0 => Ok(Step::More("first batch".into())),
                1 => Ok(Step::Idle("pass done".into())),
                _ => Err(Error::Unavailable("boom".into())),
            }
        }
    }

    async fn until(f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn runs_batches_rests_and_wakes_and_reports_errors() {
        let workers = Workers::default();
        let w = Arc::new(Counter {
            steps: AtomicU32::new(0),
        });
        let h = workers.spawn(w.clone());
        until(|| h.status().steps == 2 && h.status().state == "idle").await;
        let s = &workers.status()[0];
        assert_eq!(
            (s.name.as_str(), s.progress.as_str(), s.steps),
            ("counter", "pass done", 2)
        );
        assert!(s.next_run_unix_ms.is_some());
        h.wake();
        until(|| h.status().errors == 1).await;
        let s = h.status();
        assert_eq!(s.state, "failing");
        assert!(s.last_error.unwrap().contains("boom"));
        assert_eq!(
            backoff(1, Duration::from_secs(3600)),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff(30, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
