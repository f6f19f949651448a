//! Rebalancing with data: 3 → 4 → 3 nodes. After each change every chunk
//! ends on exactly `replicas` (3) members, as placement says (no misplaced
//! copies left), and at no moment in between does a chunk have fewer than 3
//! copies: a copy placement moves away is dropped only after its new homes
//! confirmed theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::disk::{chunk_files, chunk_names};
use stowage_cluster_tests::oci::*;

const CHUNK: usize = 64 * 1024;
const TOML: &str = "chunk_size_bytes = 65536\n";

/// How many of `dirs` hold each chunk of `names`. Old holders are listed
/// before newcomers: a copy dropped between two listings was confirmed on
/// its new home before, so it is seen there.
fn copies(dirs: &[std::path::PathBuf], names: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let mut count: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    for d in dirs {
        for name in chunk_files(d).into_keys() {
            if let Some(c) = count.get_mut(&name) {
                *c += 1;
            }
        }
    }
    count
}

async fn settled(cluster: &Cluster, via: u64) -> Result<(), String> {
    cluster.replication_healthy(via).await?;
    let s = cluster.status(via).await.ok_or("no status")?;
    let nodes = s["replication"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for n in &nodes {
        let h = &n["health"];
        if h["misplaced_chunks"] != 0 || h["queued"] != 0 {
            return Err(format!("node {}: {h}", n["id"]));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_four_to_three_keeps_three_copies_throughout() {
    let mut cluster = Cluster::start(&["a", "b", "c"], TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let url1 = cluster.url(1);
    let mut images = Vec::new();
    for i in 0..40u64 {
        let repo = format!("rebalance/r{}", i % 4);
        let tag = format!("t{i}");
        let (d, layers) = push_image(&c, &url1, &repo, &tag, 80_000 + i, &[CHUNK + 10]).await;
        images.push((repo, tag, d, layers));
    }
    let names: BTreeSet<String> = images
        .iter()
        .flat_map(|(_, _, _, ls)| ls.iter().flat_map(|l| chunk_names(l, CHUNK)))
        .collect();
    let mut dirs: Vec<_> = [1, 2, 3]
        .iter()
        .map(|id| cluster.member(*id).node.data_dir.clone())
        .collect();
    eventually(
        "three copies of everything",
        Duration::from_secs(60),
        || {
            let low = copies(&dirs, &names).values().filter(|n| **n < 3).count();
            async move {
                (low == 0)
                    .then_some(())
                    .ok_or(format!("{low} chunks short"))
            }
        },
    )
    .await;

    // A sampler watches copy counts across every data directory while the
    // membership changes.
    let (id4, spec) = cluster.start_joiner("d", TOML);
    dirs.push(cluster.member(id4).node.data_dir.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new(usize::MAX));
    let sampler = {
        let (stop, worst, dirs, names) = (stop.clone(), worst.clone(), dirs.clone(), names.clone());
        tokio::task::spawn_blocking(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let least = copies(&dirs, &names).into_values().min().unwrap_or(0);
                let mut w = worst.lock().unwrap();
                *w = (*w).min(least);
                drop(w);
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };

    cluster.cli(&["members", "add", &spec, "--node", &url1]);
    cluster.wait_in_sync(id4, Duration::from_secs(60)).await;
    eventually(
        "rebalanced onto four nodes",
        Duration::from_secs(120),
        || settled(&cluster, 1),
    )
    .await;
    let on_four = copies(&dirs, &names);
    assert!(
        on_four.values().all(|n| *n == 3),
        "not exactly 3 copies: {on_four:?}"
    );
    let with_node4 = copies(&dirs[3..], &names)
        .values()
        .filter(|n| **n > 0)
        .count();
    assert!(with_node4 > 0, "node 4 got no chunks");

    // Back to three: the leaving node's copies are re-made on the others.
    let started = Instant::now();
    cluster.cli(&["members", "remove", &id4.to_string(), "--node", &url1]);
    eventually(
        "rebalanced back onto three",
        Duration::from_secs(120),
        || settled(&cluster, 1),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let worst = *worst.lock().unwrap();
    println!(
        "rebalance: {samples} samples, fewest copies seen {worst}, shrink took {:?}",
        started.elapsed()
    );
    assert!(
        worst >= 3,
        "a chunk fell to {worst} copies during rebalancing"
    );
    cluster.kill(id4);
    let on_three = copies(&dirs[..3], &names);
    assert!(on_three.values().all(|n| *n == 3), "{on_three:?}");
    for id in [1, 2, 3] {
        for (repo, tag, d, layers) in &images {
            verify_image(&c, &cluster.url(id), repo, tag, d, layers).await;
        }
    }
}
