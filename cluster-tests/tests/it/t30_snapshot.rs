use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_through_many_snapshots_catches_up_by_snapshot() {
    // Snapshots every few entries, and no log kept behind them: the node
    // that was away can only catch up from a snapshot.
    let mut cluster = Cluster::start(
        &["a", "b", "c"],
        "snapshot_every_entries = 20\nsnapshot_logs_to_keep = 0\n",
    );
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let away = cluster
        .running()
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let writer = cluster.running().into_iter().find(|n| *n != away).unwrap();
    cluster.kill(away);

    let c = client();
    let mut pushed = Vec::new();
    // Push until the leader has purged log entries the absent node never
    // got, so that only a snapshot can bring it back.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0u64.. {
        let tag = format!("v{i}");
        let (d, layers) =
            push_image(&c, &cluster.url(writer), "snap/app", &tag, 500 + i, &[1500]).await;
        pushed.push((tag, d, layers));
        let leader_status = cluster.status(leader).await.unwrap();
        if i >= 40 && leader_status["purged"].as_u64().unwrap_or(0) > 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never purged its log: {leader_status}"
        );
    }

    cluster.restart(away);
    cluster.wait_ready(away, Duration::from_secs(60)).await;
    cluster.wait_in_sync(away, Duration::from_secs(60)).await;
    let status = cluster.status(away).await.unwrap();
    assert!(
        status["snapshot"].as_u64().unwrap_or(0) > 20,
        "the returning node installed a snapshot: {status}"
    );
    // Its metadata came by snapshot, its chunks come from peers on demand.
    let c = client();
    for (tag, d, layers) in &pushed {
        verify_image(&c, &cluster.url(away), "snap/app", tag, d, layers).await;
    }
}
