//! Pull mode: a cluster mirrors a Distribution upstream under a prefix.
//! The first pull goes through to the upstream; the second is served by
//! the cluster (any node) with the upstream stopped; a tag moved upstream
//! is refreshed by the leader; names outside the prefix never reach it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::oci::*;
use stowage_cluster_tests::tools::{skopeo_pull, tool_available, Distribution};

const LIMIT: Duration = Duration::from_secs(60);

async fn manifest(url: &str, repo: &str, tag: &str) -> (StatusCode, String) {
    let r = client()
        .get(format!("{url}/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, sha256(&r.bytes().await.unwrap()))
}

/// Puts an image into a Distribution registry: pushed to the cluster, then
/// `stowage copy` (Distribution takes no monolithic POST, which the test
/// helpers use).
async fn seed(
    cluster: &Cluster,
    repo: &str,
    tag: &str,
    to: &str,
    seed: u64,
    sizes: &[usize],
) -> (String, Vec<Vec<u8>>) {
    let u1 = cluster.url(1);
    let (d, layers) = push_image(&client(), &u1, &format!("seed/{repo}"), tag, seed, sizes).await;
    cluster.cli(&[
        "copy",
        &format!("{u1}/seed/{repo}:{tag}"),
        &format!("{to}/{repo}:{tag}"),
    ]);
    (d, layers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_pulls_through_once_and_then_serves_without_its_upstream() {
    let Some(upstream) = Distribution::start() else {
        return;
    };
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(LIMIT).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    // The upstream holds library/app:v1 (a layer over several pieces).
    let (v1, v1_layers) = seed(
        &cluster,
        "library/app",
        "v1",
        &upstream.url,
        1,
        &[20 << 20, 3000],
    )
    .await;
    let r = c
        .post(format!("{u2}/_stowage/mirrors"))
        .json(
            &json!({"op": "add", "name": "up", "upstream": upstream.url, "prefix": "hub/",
                      "upstream_prefix": "library/", "interval_secs": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // First pull, through a follower: fetched from the upstream.
    verify_image(&c, &u3, "hub/app", "v1", &v1, &v1_layers).await;
    // Not in the mirror's names, or not upstream: plain 404s.
    assert_eq!(
        manifest(&u1, "elsewhere/app", "v1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest(&u1, "hub/missing", "v1").await.0,
        StatusCode::NOT_FOUND
    );

    // The upstream goes; every node serves the image from here.
    drop(upstream);
    for url in [&u1, &u2, &u3] {
        verify_image(&c, url, "hub/app", "v1", &v1, &v1_layers).await;
    }
    if tool_available("skopeo") {
        let back = tempfile::tempdir().unwrap();
        skopeo_pull(
            &format!("{}/hub/app:v1", cluster.host(1)),
            back.path(),
            "v1",
        );
    }

    // A new upstream on another port is a new rule; a tag moved there is
    // refreshed by the leader without any client asking.
    let Some(up2) = Distribution::start() else {
        return;
    };
    let (old, _) = seed(&cluster, "app2", "latest", &up2.url, 2, &[1000]).await;
    c.post(format!("{u1}/_stowage/mirrors"))
        .json(&json!({"op": "add", "name": "up2", "upstream": up2.url, "prefix": "m2/", "interval_secs": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manifest(&u1, "m2/app2", "latest").await,
        (StatusCode::OK, old.clone())
    );
    let (new, _) = seed(&cluster, "app2", "latest", &up2.url, 3, &[1000]).await;
    eventually("the moved tag is refreshed", LIMIT, || async {
        match manifest(&u2, "m2/app2", "latest").await {
            (StatusCode::OK, d) if d == new => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
