//! A short seeded chaos run (the `stowage-chaos` runner's library code) in
//! the suite: kills, a leader kill, a pause, partitions, one-way loss and
//! packet loss against a 3-zone cluster in network namespaces, with pushes,
//! tag moves, pulls and deletes running; nothing acknowledged may be lost
//! or corrupted, and every shared tag's history must be linearizable.
//! Longer runs with every fault are `stowage-chaos` (see the README).

use std::time::Duration;

use stowage_cluster_tests::chaos::nemesis::Fault;
use stowage_cluster_tests::chaos::{self, Config, RunError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_seeded_chaos_run_loses_nothing_and_stays_linearizable() {
    let cfg = Config {
        seed: 90,
        duration: Duration::from_secs(45),
        faults: vec![
            Fault::Kill,
            Fault::LeaderKill,
            Fault::Pause,
            Fault::Partition,
            Fault::Asymmetric,
            Fault::Loss,
        ],
        zone_loss: Duration::from_secs(8),
        workers: 8,
        request_timeout: Duration::from_secs(30),
        report: None,
        keep: chaos::Keep::OnFailure,
    };
    let hard = cfg.hard_timeout();
    let outcome = match tokio::time::timeout(hard, chaos::run(&cfg)).await {
        Err(_) => panic!("the chaos run did not end within {hard:?}"),
        Ok(Err(RunError::Skipped(why))) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
        Ok(Err(RunError::Failed(why))) => panic!("the chaos run could not run: {why}"),
        Ok(Ok(o)) => o,
    };
    eprintln!("{}", outcome.summary);
    let report = serde_json::to_string_pretty(&outcome.report).unwrap_or_default();
    assert!(
        outcome.acked > 0,
        "the workload acknowledged nothing:\n{report}"
    );
    assert_eq!(outcome.lost, 0, "acknowledged writes lost:\n{report}");
    assert_eq!(
        outcome.corrupt, 0,
        "acknowledged writes corrupted:\n{report}"
    );
    assert_eq!(
        outcome.nonlinearizable, 0,
        "a shared tag's history is not linearizable:\n{report}"
    );
}
