//! Repair throughput: how fast a node that missed pushes is refilled by the
//! cluster's background repair, against how fast the same bytes were pushed.
//!
//! It starts a 3-node loopback cluster (zones a, b, c) through the cluster
//! test harness, stops node 3, pushes `--mib` MiB of distinct incompressible
//! layers through node 1 (one image per layer, one blob at a time; this
//! push's MB/s is the anchor), restarts node 3 and polls its status every
//! 100 ms until it holds everything: `chunks.missing_chunks == 0`, a sweep
//! has run (`chunks.last_sweep_unix_ms` set) and `chunks.held_bytes` is at
//! least the bytes pushed. No client reads from node 3 meanwhile. Repair
//! MB/s is the bytes pushed over the time from the restart to that point;
//! the ratio repair/push is printed beside it.
//!
//! Like the harness, it drives the `stowage` binary as processes and never
//! links the node: `--stowage`, else `$STOWAGE_BIN`, else the `stowage`
//! beside this executable (`cargo build --release -p stowage-node --bin
//! stowage` puts it there).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use stowage_benches::data::random_bytes;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::{client, image_manifest, push_blob, put_manifest, OCI_MANIFEST};

/// How often node 3's status is read while it is being refilled.
const POLL: Duration = Duration::from_millis(100);
/// How long the nodes get to answer `/readyz` and agree on a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(about = "Repair throughput of a node that missed pushes, against the push itself")]
struct Args {
    /// MiB of layers pushed while node 3 is down.
    #[arg(long, default_value_t = 512)]
    mib: usize,
    /// Size of each layer, MiB (the last one takes the remainder).
    #[arg(long, default_value_t = 64)]
    layer_mib: usize,
    /// `repair_max_bytes_per_sec` of every node (0 = no cap).
    #[arg(long, default_value_t = 0)]
    repair_max_bytes_per_sec: u64,
    /// `chunk_size_bytes` of every node (default: the node's own).
    #[arg(long)]
    chunk_size_bytes: Option<u64>,
    /// Give up waiting for the repair after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// The `stowage` binary.
    #[arg(long, env = "STOWAGE_BIN")]
    stowage: Option<PathBuf>,
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// The `stowage` beside this executable (target/release/).
fn sibling_stowage() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.join("stowage");
    bin.is_file().then_some(bin)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let Some(bin) = args.stowage.clone().or_else(sibling_stowage) else {
        eprintln!("no stowage binary: pass --stowage or set STOWAGE_BIN");
        std::process::exit(2);
    };
    // The harness reads the binary from the environment. Nothing else runs
    // yet, so setting it cannot race another thread's read.
    std::env::set_var("STOWAGE_BIN", &bin);
    let layer_mib = args.layer_mib.max(1);

    let mut extra = format!(
        "repair_max_bytes_per_sec = {}\n",
        args.repair_max_bytes_per_sec
    );
    if let Some(size) = args.chunk_size_bytes {
        extra.push_str(&format!("chunk_size_bytes = {size}\n"));
    }

    // Test data before anything starts: distinct seeds, so no layer or
    // chunk shares content with another.
    let mut layers = Vec::new();
    let mut left = args.mib;
    let mut seed = 0x5eed_0000u64;
    while left > 0 {
        let mib = left.min(layer_mib);
        seed += 1;
        layers.push(random_bytes(seed, mib * MIB));
        left -= mib;
    }

    let mut cluster = Cluster::start(&["a", "b", "c"], &extra);
    cluster.wait_all_ready(READY_TIMEOUT).await;
    cluster.member_mut(3).node.terminate();
    // Node 3 may have led: wait for the other two to agree on a leader.
    cluster.leader(READY_TIMEOUT).await;
    cluster.wait_ready(1, READY_TIMEOUT).await;

    let c = client();
    let url = cluster.url(1);
    let repo = "repairbench/layers";
    let started = Instant::now();
    let mut pushed_bytes = 0u64;
    for (i, layer) in layers.iter().enumerate() {
        let config = format!("{{\"layer\":{i}}}").into_bytes();
        let cd = push_blob(&c, &url, repo, &config).await;
        let ld = push_blob(&c, &url, repo, layer).await;
        let m = image_manifest(&(cd, config.len()), &[(ld, layer.len())]);
        let r = put_manifest(&c, &url, repo, &format!("l{i}"), OCI_MANIFEST, &m).await;
        assert!(r.status().is_success(), "manifest l{i}: {}", r.status());
        pushed_bytes += u64::try_from(config.len() + layer.len()).unwrap_or(u64::MAX);
    }
    let push_took = started.elapsed();
    drop(layers);
    let push = mb_per_s(pushed_bytes, push_took);
    println!(
        "push (anchor)   {:.1} MiB through node 1 with node 3 down in {:.2} s: {push:.1} MB/s",
        pushed_bytes as f64 / MIB as f64,
        push_took.as_secs_f64()
    );

    let restarted = Instant::now();
    cluster.restart(3);
    let process_up = restarted.elapsed();
    let deadline = restarted + Duration::from_secs(args.timeout_secs);
    let mut ready: Option<Duration> = None;
    let mut first_queued: Option<Duration> = None;
    let done = loop {
        if let Some(s) = cluster.status(3).await {
            let h = &s["chunks"];
            let at = restarted.elapsed();
            ready.get_or_insert(at);
            if first_queued.is_none() && h["queued"].as_u64().unwrap_or(0) > 0 {
                first_queued = Some(at);
            }
            if h["missing_chunks"] == 0
                && !h["last_sweep_unix_ms"].is_null()
                && h["held_bytes"].as_u64().unwrap_or(0) >= pushed_bytes
            {
                break (at, s);
            }
        }
        if Instant::now() > deadline {
            let last = cluster.status(3).await.map(|s| s["chunks"].clone());
            eprintln!(
                "node 3 not refilled within {} s; last chunks status: {last:?}; log:\n{}",
                args.timeout_secs,
                cluster.log_tail(3)
            );
            std::process::exit(1);
        }
        tokio::time::sleep(POLL).await;
    };
    let (repair_took, status) = done;
    let repair = mb_per_s(pushed_bytes, repair_took);
    let h = &status["chunks"];
    println!(
        "repair          node 3 refilled {:.2} s after its restart: {repair:.1} MB/s \
         (process up {:.2} s, status answering {:.2} s, first chunk queued {})",
        repair_took.as_secs_f64(),
        process_up.as_secs_f64(),
        ready.unwrap_or_default().as_secs_f64(),
        first_queued.map_or("never seen".into(), |d| format!("{:.2} s", d.as_secs_f64())),
    );
    println!(
        "node 3          held_chunks={} held_bytes={} repaired_chunks={} repaired_bytes={} misplaced_chunks={} lost_chunks={}",
        h["held_chunks"],
        h["held_bytes"],
        h["repaired_chunks"],
        h["repaired_bytes"],
        h["misplaced_chunks"],
        h["lost_chunks"]
    );
    println!(
        "replication     {}",
        status["replication"]["summary"].as_str().unwrap_or("?")
    );
    println!(
        "ratio           repair/push = {:.2}x  (mib={} layer_mib={layer_mib} repair_max_bytes_per_sec={})",
        repair / push,
        args.mib,
        args.repair_max_bytes_per_sec
    );
}
