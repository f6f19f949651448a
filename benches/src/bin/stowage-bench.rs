//! `stowage-bench`: runs named workloads against any OCI registry over
//! plain HTTP and prints one result line per workload (or JSON with
//! `--json`); with `--table` it prints several runs side by side instead.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use stowage_benches::client::Registry;
use stowage_benches::data::{random_bytes, Blob};
use stowage_benches::machine::Machine;
use stowage_benches::real_client::{self, Credentials};
use stowage_benches::report::{emit, Record};
use stowage_benches::stats::Tally;
use stowage_benches::workloads::{self, Config, Runner, Selection};
use stowage_benches::{table, Error, Result};

/// Size of the blob that finds out how the registry takes monolithic
/// pushes.
const PROBE_BLOB_BYTES: usize = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "stowage-bench",
    version,
    about = "Load generator for any OCI registry: push/pull throughput, requests/s, latency, node RSS",
    after_help = "Workloads: push-large, pull-large, push-many, manifest-get, mixed, skopeo, docker, all.\n\
MB/s counts payload bytes (10^6 per MB); req/s counts HTTP requests; rss is MiB."
)]
struct Args {
    /// Registry base URL (http://host:port); repeat for the nodes of a
    /// cluster: requests spread over them and pulls go to other nodes
    /// than the pushes.
    #[arg(long = "target", value_name = "URL", required_unless_present = "table")]
    targets: Vec<String>,
    /// One JSON object per line on stdout (the human lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Workload to run (repeat, or comma-separate); `all` runs every one.
    #[arg(
        long = "workload",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "all"
    )]
    workloads: Vec<Selection>,
    /// push-large: blobs pushed monolithically, and as many again in chunks.
    #[arg(long, value_name = "N", default_value_t = workloads::DEFAULT_BLOBS)]
    blobs: usize,
    /// push-large: size of each blob, MiB.
    #[arg(long, value_name = "S", default_value_t = workloads::DEFAULT_BLOB_MIB)]
    blob_mib: usize,
    /// push-large: size of each PATCH of a chunked push, MiB.
    #[arg(long, value_name = "P", default_value_t = workloads::DEFAULT_PATCH_MIB)]
    patch_mib: usize,
    /// Concurrent clients of push-many, manifest-get and mixed.
    #[arg(long, value_name = "C", default_value_t = workloads::DEFAULT_CLIENTS)]
    clients: usize,
    /// push-many: small images each client pushes.
    #[arg(long, value_name = "K", default_value_t = workloads::DEFAULT_IMAGES_PER_CLIENT)]
    images_per_client: usize,
    /// mixed: how long it runs, seconds.
    #[arg(long, value_name = "T", default_value_t = workloads::DEFAULT_DURATION_SECS)]
    duration_secs: u64,
    /// manifest-get: how long each phase (by tag, by digest) runs, seconds
    /// [default: the smaller of 10 and --duration-secs].
    #[arg(long, value_name = "T")]
    manifest_secs: Option<u64>,
    /// skopeo, docker: layers of each image (of unequal sizes: 40, 25, 15,
    /// 12 and 8 % of it for five).
    #[arg(long, value_name = "N", default_value_t = real_client::DEFAULT_REAL_LAYERS)]
    real_layers: usize,
    /// skopeo, docker: size of each image's layers together, MiB.
    #[arg(long, value_name = "M", default_value_t = real_client::DEFAULT_REAL_MIB)]
    real_mib: usize,
    /// skopeo, docker: rounds of push (and as many of pull), each with a
    /// fresh image in a fresh repository; MB/s is over the median round.
    #[arg(long, value_name = "R", default_value_t = real_client::DEFAULT_ROUNDS)]
    rounds: usize,
    /// Repositories are created under this prefix.
    #[arg(long, value_name = "P", default_value = "bench")]
    repo_prefix: String,
    /// A registry process whose peak RSS each workload reports (repeat for
    /// every node).
    #[arg(long = "rss-pid", value_name = "PID")]
    rss_pids: Vec<u32>,
    /// Skip the one-second single-core sha256 measurement.
    #[arg(long)]
    no_machine: bool,
    /// Before pull-large, flush and drop the kernel's page cache (needs
    /// root) so the pull reads what the registry stored, not what it just
    /// wrote; pull-large-warm then repeats the pull with a warm cache. The
    /// real clients drop it before each pull round.
    #[arg(long)]
    drop_caches: bool,
    /// Log in as USER:PASSWORD_FILE for a registry that checks access: the
    /// token flow, a token per repository, as docker does. skopeo gets the
    /// credentials as --dest-creds/--src-creds, docker logs in with them.
    #[arg(long, value_name = "USER:PASSWORD_FILE")]
    login: Option<String>,
    /// Print runs side by side instead of running anything: LABEL=FILE of
    /// `--json` output (the first is the baseline), or LABEL=SKIPPED… .
    #[arg(long = "table", value_name = "LABEL=FILE", conflicts_with = "targets")]
    table: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.table.is_empty() {
        run(args)
    } else {
        print_table(&args.table)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stowage-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_table(specs: &[String]) -> Result<bool> {
    let runs = specs
        .iter()
        .map(|s| table::load(s))
        .collect::<Result<Vec<_>>>()?;
    print!("{}", table::render(&runs));
    Ok(true)
}

/// Runs the workloads; `Ok(false)` when any of them failed or had errors.
fn run(args: Args) -> Result<bool> {
    for pid in &args.rss_pids {
        stowage_benches::rss::read(*pid)?;
    }
    if !args.no_machine {
        // Measured before any load, on an otherwise idle client.
        emit(&Record::Machine(Machine::measure()), args.json);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("start", "the tokio runtime"))?;
    runtime.block_on(run_workloads(args))
}

async fn run_workloads(args: Args) -> Result<bool> {
    let mut reg = Registry::new(&args.targets)?;
    let mut credentials = None;
    if let Some(login) = &args.login {
        let (user, file) = login
            .split_once(':')
            .ok_or(stowage_benches::error::Error::Usage(
                "--login USER:PASSWORD_FILE",
            ))?;
        let password = std::fs::read_to_string(file).map_err(|_| {
            stowage_benches::error::Error::Usage("--login: cannot read the password file")
        })?;
        let password = password.lines().next().unwrap_or("");
        reg = reg.with_login(user, password);
        credentials = Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    let mut tally = Tally::default();
    for node in 0..reg.nodes() {
        reg.ping(node, &mut tally).await?;
    }
    // Unique per run, so repositories and blobs of earlier runs against the
    // same registry are never found already present.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let run_id = stowage_benches::data::mix(
        now.as_secs() ^ (u64::from(now.subsec_nanos()) << 32) ^ u64::from(std::process::id()),
    );
    let probe = Blob::new(random_bytes(run_id, PROBE_BLOB_BYTES));
    let probe_repo = format!("{}/probe-{run_id:x}", args.repo_prefix);
    reg.probe_monolithic(&probe_repo, &probe).await?;

    let duration = Duration::from_secs(args.duration_secs);
    let manifest_duration = Duration::from_secs(
        args.manifest_secs
            .unwrap_or(args.duration_secs.min(workloads::DEFAULT_MANIFEST_SECS)),
    );
    let cfg = Config {
        blobs: args.blobs,
        blob_mib: args.blob_mib,
        patch_mib: args.patch_mib,
        clients: args.clients,
        images_per_client: args.images_per_client,
        duration,
        manifest_duration,
        repo_prefix: args.repo_prefix.clone(),
        rss_pids: args.rss_pids.clone(),
        run_id,
        drop_caches: args.drop_caches,
        real_layers: args.real_layers,
        real_mib: args.real_mib,
        rounds: args.rounds,
        login: credentials,
    };
    let mut runner = Runner::new(reg, cfg);
    let mut all_ok = true;
    for workload in workloads::selected(&args.workloads) {
        match runner.run(workload).await {
            Ok(results) => {
                for r in results {
                    all_ok &= r.errors == 0;
                    emit(&Record::Workload(Box::new(r)), args.json);
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("{workload}: failed: {e}");
            }
        }
    }
    Ok(all_ok)
}
