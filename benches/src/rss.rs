//! The registry's memory during a workload: resident set size (VmRSS) of
//! the given processes, sampled from `/proc` by a background thread, and
//! their high-water mark (VmHWM), reset at the start of each workload where
//! the kernel allows it, so a peak between two samples is not missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

/// How often VmRSS is read.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// A process's peak memory during one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    pub pid: u32,
    /// The largest of the sampled VmRSS and, when it could be reset at the
    /// start, VmHWM; in KiB.
    pub peak_kib: u64,
}

/// VmRSS and VmHWM of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Parses the `VmRSS:` and `VmHWM:` lines of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

pub fn read(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(Error::io("read", path))?;
    Ok(parse_status(&text))
}

/// Resets VmHWM to the current RSS (`echo 5 > clear_refs`); false where
/// that is not permitted (another user's process, an old kernel).
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

/// Samples the processes' memory until `finish`.
pub struct Monitor {
    pids: Vec<u32>,
    hwm_reset: Vec<bool>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<Vec<u64>>>,
}

impl Monitor {
    pub fn start(pids: &[u32]) -> Self {
        let pids = pids.to_vec();
        let hwm_reset = pids.iter().map(|p| reset_hwm(*p)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = (!pids.is_empty()).then(|| {
            let pids = pids.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peaks = vec![0u64; pids.len()];
                loop {
                    for (peak, pid) in peaks.iter_mut().zip(&pids) {
                        if let Ok(m) = read(*pid) {
                            *peak = (*peak).max(m.rss_kib);
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        return peaks;
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            })
        });
        Monitor {
            pids,
            hwm_reset,
            stop,
            sampler,
        }
    }

    /// The peaks since `start`, one per process; empty without processes.
    pub fn finish(mut self) -> Vec<Peak> {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = match self.sampler.take() {
            Some(h) => h.join().unwrap_or_default(),
            None => return Vec::new(),
        };
        self.pids
            .iter()
            .zip(&self.hwm_reset)
            .enumerate()
            .map(|(i, (pid, reset))| {
                let mut peak_kib = sampled.get(i).copied().unwrap_or(0);
                if *reset {
                    if let Ok(m) = read(*pid) {
                        peak_kib = peak_kib.max(m.hwm_kib);
                    }
                }
                Peak {
                    pid: *pid,
                    peak_kib,
                }
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tstowage\nVmPeak:\t  900 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   80000 kB\n";
        assert_eq!(
            parse_status(text),
            Memory {
                rss_kib: 80_000,
                hwm_kib: 81_234
            }
        );
        assert_eq!(parse_status(""), Memory::default());
    }

    #[test]
    fn samples_this_process() {
        let pid = std::process::id();
        let monitor = Monitor::start(&[pid]);
        let peaks = monitor.finish();
        assert_eq!(peaks.len(), 1);
        assert_eq!(peaks[0].pid, pid);
        assert!(peaks[0].peak_kib > 0);
        assert!(Monitor::start(&[]).finish().is_empty());
    }
}
