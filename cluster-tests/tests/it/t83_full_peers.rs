//! A push whose write quorum fails because the peers' disks are full
//! (here: under a reserve larger than any disk) answers 507
//! `INSUFFICIENT_STORAGE`, not a "retry soon" 503, and says why; reads of
//! what was pushed before keep working on every node.

use std::time::Duration;

use reqwest::StatusCode;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_lost_to_full_peers_is_507() {
    // Nodes 2 and 3 keep a reserve no disk has: every copy sent to them is
    // refused for lack of space; node 1 has room.
    let cluster = Cluster::start_each(&["a", "b", "c"], |id| {
        if id == 1 {
            String::new()
        } else {
            "min_free_bytes = 1000000000000000\nballast_bytes = 0\n".into()
        }
    });
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    // A blob below the single-write size still needs its quorum.
    let blob = data(83, 200_000);
    let d = sha256(&blob);
    let r = c
        .post(format!(
            "{}/v2/full/app/blobs/uploads/?digest={d}",
            cluster.url(1)
        ))
        .body(blob)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{text}");
    assert!(
        text.contains("INSUFFICIENT_STORAGE") && text.contains("disk full"),
        "{text}"
    );
    // Pushes through a full node are refused by that node itself.
    let r = c
        .post(format!("{}/v2/full/app/blobs/uploads/", cluster.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (
            StatusCode::INSUFFICIENT_STORAGE,
            "INSUFFICIENT_STORAGE".into()
        )
    );
    // Reads and the API go on.
    for id in 1..=3 {
        let r = c
            .get(format!("{}/v2/full/app/tags/list", cluster.url(id)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "node {id}");
    }
}
