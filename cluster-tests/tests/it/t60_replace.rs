//! A node that comes back with an empty disk under its old id must not
//! vote or count toward a quorum until `stowage members replace`: Raft
//! assumes a voter never forgets what it acknowledged. The scenario of
//! issue #8: follower X cut off (SIGSTOP), 5 images acknowledged by the
//! leader L and Y, L and Y killed, Y's data directory emptied, X healed, Y
//! started empty. Without incarnations Y votes for X at once and the 5
//! images are lost; with them, nothing is elected until L is back, and Y
//! counts again only after it was replaced and caught up.

use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

const LIMIT: Duration = Duration::from_secs(60);

/// The member entry `id` in a status report.
fn member(status: &serde_json::Value, id: u64) -> serde_json::Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .cloned()
        .unwrap_or_default()
}

/// Waits until `cond` holds on node `via`'s status report.
async fn wait_status(
    cluster: &Cluster,
    via: u64,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(s) = cluster.status(via).await {
            if cond(&s) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {via}: never {what}; status: {:?}\nlog:\n{}",
            cluster.status(via).await,
            cluster.log_tail(via)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_recorded(s: &serde_json::Value) -> bool {
    s["members"]
        .as_array()
        .is_some_and(|ms| ms.len() == 3 && ms.iter().all(|m| m["incarnation"].is_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_node_does_not_vote_until_replaced() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(LIMIT).await;
    let l = cluster.leader(LIMIT).await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != l).collect();
    let (x, y) = (others[0], others[1]);
    // The leader records every member's incarnation on first contact, and
    // every node learns the records through the log.
    for id in [1, 2, 3] {
        wait_status(&cluster, id, "recorded every incarnation", all_recorded).await;
    }
    let old_y = member(&cluster.status(l).await.unwrap(), y)["incarnation"].clone();

    // X is cut off; 5 images are acknowledged by L and Y.
    cluster.pause(x);
    let c = client();
    let mut images = Vec::new();
    for i in 0..5u64 {
        let tag = format!("v{i}");
        let (d, layers) = push_image(
            &c,
            &cluster.url(l),
            "replace/app",
            &tag,
            600 + i,
            &[3000, 70_000],
        )
        .await;
        images.push((tag, d, layers));
    }

    // L and Y die; Y's disk is replaced by an empty one; X comes back.
    cluster.kill(l);
    cluster.kill(y);
    cluster.resume(x);
    cluster.restart_empty(y);

    // Y says, once, what the operator must do.
    let deadline = Instant::now() + LIMIT;
    let hint = format!("stowage members replace {y}");
    while !std::fs::read_to_string(&cluster.member(y).log)
        .unwrap_or_default()
        .contains(&hint)
    {
        assert!(
            Instant::now() < deadline,
            "node {y} never named the fix; log:\n{}",
            cluster.log_tail(y)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // X sees that Y is not the member it recorded.
    wait_status(&cluster, x, "saw that Y's disk is new", |s| {
        member(s, y)["counted"] == false
    })
    .await;

    // With only X and the emptied Y up, nothing is elected and no write
    // succeeds: Y's vote does not count. (A negative condition: watched
    // for many election timeouts.)
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        for id in [x, y] {
            if let Some(s) = cluster.status(id).await {
                assert_ne!(s["role"], "leader", "node {id} was elected: {s}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = try_push_image(&c, &cluster.url(x), "replace/app", "lost", 700, &[1000]).await;
    assert!(r.is_err(), "a write succeeded without a quorum");

    // L comes back: L and X are a quorum, the images are all there, and the
    // leader reports Y as not counted.
    cluster.restart(l);
    let leader = cluster.leader(LIMIT).await;
    assert_ne!(leader, y);
    wait_status(&cluster, leader, "reported Y as not counted", |s| {
        member(s, y)["counted"] == false && member(s, y)["incarnation"] == old_y
    })
    .await;
    for id in [l, x] {
        cluster.wait_ready(id, LIMIT).await;
        for (tag, d, layers) in &images {
            verify_image(&c, &cluster.url(id), "replace/app", tag, d, layers).await;
        }
    }

    // The operator replaces Y: it rejoins under its new incarnation, is
    // promoted once caught up, and serves the images too.
    let out = cluster.cli(&[
        "members",
        "replace",
        &y.to_string(),
        "--node",
        &cluster.url(x),
    ]);
    assert!(out.contains("is a voter again"), "{out}");
    let leader = cluster.leader(LIMIT).await;
    wait_status(&cluster, leader, "counted Y again", |s| {
        let m = member(s, y);
        m["counted"] == true && m["voter"] == true && m["incarnation"] != old_y
    })
    .await;
    cluster.wait_in_sync(y, LIMIT).await;
    for (tag, d, layers) in &images {
        verify_image(&c, &cluster.url(y), "replace/app", tag, d, layers).await;
    }

    // Y now counts: with X gone, L and Y commit writes.
    cluster.kill(x);
    let deadline = Instant::now() + LIMIT;
    loop {
        match try_push_image(&c, &cluster.url(y), "replace/app", "after", 800, &[1000]).await {
            Ok((d, layers)) => {
                verify_image(&c, &cluster.url(l), "replace/app", "after", &d, &layers).await;
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "L and Y never took a write: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
