//! What the numbers are relative to: the CPU model, the number of cores,
//! and the single-core sha256 throughput that the push-large target is
//! judged against (a registry must hash every byte it receives, so a push
//! cannot beat one core's sha256 speed by much).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The buffer hashed repeatedly: big enough to defeat the CPU caches, as a
/// stream of pushed bytes would.
pub const SHA256_BUFFER_MIB: usize = 64;
/// How long the sha256 measurement runs.
pub const SHA256_MEASURE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub nproc: usize,
    /// Single-core sha256 throughput, MB/s (10^6 bytes).
    pub sha256_mb_per_s: f64,
}

impl Machine {
    /// Measures this machine; takes about `SHA256_MEASURE`.
    pub fn measure() -> Self {
        Machine {
            cpu_model: cpu_model(),
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            sha256_mb_per_s: sha256_mb_per_s(SHA256_MEASURE),
        }
    }
}

/// The first `model name` of `/proc/cpuinfo` ("unknown" elsewhere).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Hashes a `SHA256_BUFFER_MIB` buffer on this thread until `at_least` has
/// passed; returns MB/s.
pub fn sha256_mb_per_s(at_least: Duration) -> f64 {
    let buf = crate::data::random_bytes(0x5a5a, SHA256_BUFFER_MIB << 20);
    let started = Instant::now();
    let mut hashed = 0u64;
    loop {
        let digest = Sha256::digest(&buf);
        std::hint::black_box(digest);
        hashed += buf.len() as u64;
        if started.elapsed() >= at_least {
            break;
        }
    }
    hashed as f64 / started.elapsed().as_secs_f64() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something() {
        assert!(sha256_mb_per_s(Duration::ZERO) > 0.0);
        assert!(!cpu_model().is_empty());
    }
}
