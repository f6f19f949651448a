//! Immutable tags on a cluster: a rule made with the CLI through node 1
//! (`prod/**`, `v*`) holds on every node at once, since apply decides: a
//! `v1` pushed once cannot be overwritten through node 3, deleted through
//! node 2, or taken away by deleting its manifest; `latest` and other
//! repositories move freely; lifting the rule lets `v1` move again.

use std::time::Duration;

use reqwest::StatusCode;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_never_moves_or_goes_on_any_node() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    let out = cluster.cli(&["immutable", "add", "prod/**", "v*", "--node", &u1]);
    assert!(out.contains("tags v* in prod/**"), "{out}");

    let (first, _) = push_image(&c, &u1, "prod/app", "v1", 1, &[5000]).await;
    // The same manifest again is no move.
    let (again, _) = push_image(&c, &u2, "prod/app", "v1", 1, &[5000]).await;
    assert_eq!(first, again);
    let refused = try_push_image(&c, &u3, "prod/app", "v1", 2, &[5000]).await;
    assert!(refused.is_err(), "v1 was overwritten");
    let r = c
        .get(format!("{u3}/v2/prod/app/manifests/v1"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        first
    );

    // Overwrite, untag and delete-by-digest: 409 DENIED naming the rule.
    push_image(&c, &u3, "prod/app", "latest", 3, &[5000]).await;
    let latest_manifest = c
        .get(format!("{u3}/v2/prod/app/manifests/latest"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = c
        .put(format!("{u3}/v2/prod/app/manifests/v1"))
        .header("Content-Type", OCI_MANIFEST)
        .body(latest_manifest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("DENIED") && text.contains("immutable") && text.contains("prod/**"),
        "{text}"
    );
    let r = c
        .delete(format!("{u2}/v2/prod/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::CONFLICT, "DENIED".into()));
    let r = c
        .delete(format!("{u2}/v2/prod/app/manifests/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::CONFLICT, "DENIED".into()));

    // Not covered: latest in prod, v1 elsewhere.
    push_image(&c, &u2, "prod/app", "latest", 4, &[5000]).await;
    push_image(&c, &u2, "dev/app", "v1", 5, &[5000]).await;
    push_image(&c, &u3, "dev/app", "v1", 6, &[5000]).await;

    // Listed through any node; lifted, v1 moves again.
    let out = cluster.cli(&["immutable", "list", "--node", &u3]);
    assert!(out.contains("tags v* in prod/**"), "{out}");
    cluster.cli(&["immutable", "remove", "prod/**", "v*", "--node", &u2]);
    let out = cluster.cli(&["immutable", "list", "--node", &u1]);
    assert!(out.contains("no immutable-tag rules"), "{out}");
    let (moved, _) = push_image(&c, &u3, "prod/app", "v1", 7, &[5000]).await;
    assert_ne!(moved, first);
}
