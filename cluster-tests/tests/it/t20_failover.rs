use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

type Acked = Arc<Mutex<Vec<(Instant, String, String, String, Vec<Vec<u8>>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_pushes_loses_nothing() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6u64 {
        let url = cluster.url(w % 3 + 1);
        let (acked, stop) = (acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let repo = format!("failover/w{w}");
                let tag = format!("t{n}");
                let seed = w * 1_000_000 + n;
                if let Ok((d, layers)) =
                    try_push_image(&c, &url, &repo, &tag, seed, &[3000, 70_000]).await
                {
                    acked
                        .lock()
                        .unwrap()
                        .push((Instant::now(), repo, tag, d, layers));
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "pushes stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(20).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    cluster.kill(leader);
    wait_for(before + 30).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let all = acked.lock().unwrap().clone();
    let first_after = all
        .iter()
        .filter(|a| a.0 > killed_at)
        .map(|a| a.0 - killed_at)
        .min()
        .unwrap();
    eprintln!(
        "killed leader {leader}: first acknowledged write {} ms after the kill; {} pushes acknowledged",
        first_after.as_millis(),
        all.len()
    );

    let c = client();
    for survivor in cluster.running() {
        for (_, repo, tag, d, layers) in &all {
            verify_image(&c, &cluster.url(survivor), repo, tag, d, layers).await;
        }
    }
    cluster.restart(leader);
    cluster.wait_ready(leader, Duration::from_secs(60)).await;
    cluster.wait_in_sync(leader, Duration::from_secs(60)).await;
    let c = client();
    for (_, repo, tag, d, layers) in &all {
        verify_image(&c, &cluster.url(leader), repo, tag, d, layers).await;
    }
}
