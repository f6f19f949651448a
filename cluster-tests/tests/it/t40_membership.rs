use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

type Acked = Arc<Mutex<Vec<(String, String, String, Vec<Vec<u8>>)>>>;

async fn voters(cluster: &Cluster, via: u64) -> Vec<u64> {
    let s = cluster.status(via).await.unwrap_or_default();
    let mut v: Vec<u64> = s["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

async fn wait_voters(cluster: &Cluster, via: u64, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while voters(cluster, via).await != want {
        assert!(Instant::now() < deadline, "voters never became {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_four_and_shrink_back_with_traffic() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let url = cluster.url(w + 1);
        let (acked, stop) = (acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let repo = format!("members/w{w}");
                let tag = format!("t{n}");
                if let Ok((d, layers)) =
                    try_push_image(&c, &url, &repo, &tag, 9_000_000 + w * 10_000 + n, &[5000]).await
                {
                    acked.lock().unwrap().push((repo, tag, d, layers));
                }
            }
        }));
    }

    let (id4, spec) = cluster.start_joiner("d", "");
    let url1 = cluster.url(1);
    let out = cluster.cli(&["members", "add", &spec, "--node", &url1]);
    assert!(out.contains("is a voter"), "{out}");
    wait_voters(&cluster, 2, &[1, 2, 3, id4]).await;
    cluster.wait_in_sync(id4, Duration::from_secs(60)).await;

    // The new node takes writes and serves reads like any other.
    let c = client();
    let (d, layers) = push_image(&c, &cluster.url(id4), "members/new", "v1", 77, &[4000]).await;
    verify_image(&c, &cluster.url(1), "members/new", "v1", &d, &layers).await;
    verify_image(&c, &cluster.url(id4), "members/new", "v1", &d, &layers).await;

    let url2 = cluster.url(2);
    let out = cluster.cli(&["members", "remove", &id4.to_string(), "--node", &url2]);
    assert!(out.contains("no longer a member"), "{out}");
    wait_voters(&cluster, 1, &[1, 2, 3]).await;
    let status = cluster.cli(&["status", "--node", &url1]);
    assert!(!status.contains(&format!("\n{id4} ")), "{status}");

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    cluster.kill(id4);
    let all = acked.lock().unwrap().clone();
    assert!(
        all.len() > 10,
        "traffic ran throughout: {} pushes",
        all.len()
    );
    let c = client();
    for node in [1, 2, 3] {
        for (repo, tag, d, layers) in &all {
            verify_image(&c, &cluster.url(node), repo, tag, d, layers).await;
        }
    }
}
