//! `stowage-chaos`: one seeded chaos run against a 3-node cluster of real
//! `stowage` processes in network namespaces (see `cluster-tests/README.md`).
//! Prints one summary line, writes a JSON report with `--report`, and exits
//! non-zero when an acknowledged write was lost, corrupted or read stale,
//! a shared tag's history is not linearizable, or the cluster did not heal.
//! Ctrl-C (and the hard timeout) tear the namespaces and nodes down.

use std::process::ExitCode;
use std::time::Duration;

use stowage_cluster_tests::chaos::nemesis::Fault;
use stowage_cluster_tests::chaos::{self, Config, Keep, RunError};
use stowage_cluster_tests::netns;

const USAGE: &str = "usage: stowage-chaos [--seed N] [--duration SECS] [--faults LIST|all] \
[--zone-loss-secs SECS] [--workers N] [--request-timeout-secs SECS] [--report PATH] [--no-keep|--keep]

faults: kill, leader-kill, pause, partition, leader-partition, asymmetric, loss, delay,
        zone-loss, wipe (comma-separated; default all)
The stowage binary comes from $STOWAGE_BIN (else it is built from this workspace).";

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        if flag == "--no-keep" || flag == "--keep" {
            cfg.keep = if flag == "--keep" {
                Keep::Always
            } else {
                Keep::Never
            };
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--seed" => cfg.seed = num(&value)?,
            "--duration" => cfg.duration = Duration::from_secs(num(&value)?),
            "--faults" => cfg.faults = Fault::parse_list(&value)?,
            "--zone-loss-secs" => cfg.zone_loss = Duration::from_secs(num(&value)?),
            "--workers" => {
                cfg.workers = usize::try_from(num(&value)?).map_err(|e| e.to_string())?
            }
            "--request-timeout-secs" => cfg.request_timeout = Duration::from_secs(num(&value)?),
            "--report" => cfg.report = Some(value.into()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stowage-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stowage-chaos: interrupted; tearing down");
                netns::cleanup_all();
                std::process::exit(130);
            }
        });
        let hard = cfg.hard_timeout();
        match tokio::time::timeout(hard, chaos::run(&cfg)).await {
            Err(_) => {
                eprintln!("stowage-chaos: hard timeout of {hard:?} reached; tearing down");
                netns::cleanup_all();
                ExitCode::from(3)
            }
            Ok(Err(RunError::Skipped(why))) => {
                println!("SKIPPED: {why}");
                ExitCode::SUCCESS
            }
            Ok(Err(RunError::Failed(why))) => {
                eprintln!("stowage-chaos: run failed: {why}");
                ExitCode::from(2)
            }
            Ok(Ok(outcome)) => {
                println!("{}", outcome.summary);
                if outcome.failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
        }
    })
}
