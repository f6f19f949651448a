//! The last warnings and errors this node logged, kept in memory for the
//! status report and page ("recent errors"): an operator looking at a node
//! sees what went wrong without its log at hand. A tracing layer records
//! them; nothing here ever holds a secret the log would not.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many entries are kept (the oldest go first).
const KEEP: usize = 50;

static RECENT: Mutex<VecDeque<LogEntry>> = Mutex::new(VecDeque::new());

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub unix_ms: u64,
    /// `ERROR` or `WARN`.
    pub level: String,
    pub target: String,
    /// The message and its fields, as the log line has them.
    pub message: String,
}

/// The entries kept, newest first.
pub fn entries() -> Vec<LogEntry> {
    RECENT
        .lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// Records warnings and errors (whatever the log's own level).
pub struct RecentErrors;

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        // Shown on terminals (`stowage status`): no control characters.
        let message =
            v.0.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect();
        let entry = LogEntry {
            unix_ms: crate::registry::now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message,
        };
        if let Ok(mut r) = RECENT.lock() {
            if r.len() == KEEP {
                r.pop_front();
            }
            r.push_back(entry);
        }
    }
}

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::prelude::*;

    use super::*;

    #[test]
    fn keeps_warnings_and_errors_newest_first() {
        let subscriber = tracing_subscriber::registry().with(RecentErrors);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(peer = 3, "peer stopped answering");
            tracing::error!("disk went away");
        });
        let got = entries();
        assert!(got.len() >= 2);
        assert_eq!(got[0].message, "disk went away");
        assert_eq!(got[0].level, "ERROR");
        assert_eq!(got[1].message, "peer stopped answering peer=3");
        assert!(!got.iter().any(|e| e.message == "not kept"));
    }
}
