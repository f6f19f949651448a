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

/// `members add` of an address nobody answers on: the node becomes a
/// learner only (no quorum is at stake, writes and tag reads go on), the
/// add fails with a message saying so after the stall limit instead of
/// hanging, `members remove` cancels it, and every node restarts fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_that_cannot_complete_costs_no_quorum_and_is_cancelled() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let url1 = cluster.url(1);
    let nobody = format!(
        "9=d@127.0.0.1:{}",
        stowage_cluster_tests::process::free_port()
    );
    let bin = cluster.bin().to_owned();
    let add = {
        let (url1, nobody) = (url1.clone(), nobody.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["members", "add", &nobody, "--node", &url1])
                .output()
                .expect("stowage runs")
        })
    };
    // While the add waits, the cluster writes and reads as before.
    let c = client();
    for n in 0..5u64 {
        let (d, _) = try_push_image(
            &c,
            &cluster.url(2),
            "members/nobody",
            &format!("t{n}"),
            77_000 + n,
            &[1000],
        )
        .await
        .expect("a push while a learner that never answers is being added");
        let r = c
            .get(format!(
                "{}/v2/members/nobody/manifests/t{n}",
                cluster.url(3)
            ))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), d);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), add)
        .await
        .expect("the add answers within its stall limit")
        .unwrap();
    assert!(
        !out.status.success(),
        "an add that cannot complete must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("learner") && err.contains("members remove 9"),
        "{err}"
    );
    assert_eq!(
        voters(&cluster, 1).await,
        vec![1, 2, 3],
        "node 9 never became a voter"
    );
    let out = cluster.cli(&["members", "remove", "9", "--node", &url1]);
    assert!(out.contains("no longer a member"), "{out}");
    let s = cluster.status(2).await.unwrap_or_default();
    assert!(
        !s["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["id"] == 9),
        "{s}"
    );
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    try_push_image(
        &c,
        &cluster.url(1),
        "members/nobody",
        "after",
        78_000,
        &[1000],
    )
    .await
    .expect("a push after the restarts");
}
