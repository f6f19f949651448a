use std::time::Duration;

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;
use stowage_cluster_tests::tools::*;

const READY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_to_one_node_pulls_byte_for_byte_from_the_others() {
    if !tool_available("skopeo") {
        return;
    }
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(READY).await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let layers = vec![
        data(1, 5 * 1024 * 1024 + 3),
        data(2, 4096),
        data(3, 900_000),
    ];
    let digest = write_oci_layout(&src, &layers);
    skopeo_push(&src, "v1", &format!("{}/multi/image:v1", cluster.host(1)));
    for n in [2, 3] {
        let back = tmp.path().join(format!("back{n}"));
        skopeo_pull(&format!("{}/multi/image:v1", cluster.host(n)), &back, "v1");
        assert_same_layout(&src, &back, &digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_writes_acknowledged_by_other_nodes() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(READY).await;
    let c = client();
    for round in 0..5u64 {
        // Node 1 moves the tag; node 3 takes a push right after; node 2
        // must see the moved tag at once.
        let (d1, _) = push_image(
            &c,
            &cluster.url(1),
            "rw/app",
            "latest",
            100 + round,
            &[2000],
        )
        .await;
        let (d3, layers3) = push_image(
            &c,
            &cluster.url(3),
            "rw/other",
            &format!("r{round}"),
            200 + round,
            &[3000],
        )
        .await;
        let r = c
            .get(format!("{}/v2/rw/app/manifests/latest", cluster.url(2)))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["docker-content-digest"],
            d1.as_str(),
            "round {round}"
        );
        verify_image(
            &c,
            &cluster.url(2),
            "rw/other",
            &format!("r{round}"),
            &d3,
            &layers3,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_spread_over_three_nodes() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(READY).await;
    let c = client();
    let blob = data(42, 3 * 1024 * 1024);
    let digest = sha256(&blob);
    // Opened on node 1, continued on node 2, status from and finished on
    // node 3: the session's owner serves every step.
    let r = c
        .post(format!("{}/v2/spread/blobs/uploads/", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(format!("{}{path}", cluster.url(2)))
        .header("Content-Range", format!("0-{}", 2 * 1024 * 1024 - 1))
        .body(blob[..2 * 1024 * 1024].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .get(format!("{}{path}", cluster.url(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", 2 * 1024 * 1024 - 1).as_str()
    );
    let r = c
        .put(format!("{}{path}?digest={digest}", cluster.url(3)))
        .body(blob[2 * 1024 * 1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for n in [1, 2, 3] {
        let r = c
            .get(format!("{}/v2/spread/blobs/{digest}", cluster.url(n)))
            .send()
            .await
            .unwrap();
        assert!(
            r.bytes().await.unwrap().as_ref() == blob.as_slice(),
            "node {n}"
        );
    }
}

/// The owner of a session checks its repository, so the check holds
/// whichever node a request arrives at; an id naming a node outside the
/// membership is unknown on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_checked_by_their_owner() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(READY).await;
    let c = client();
    let blob = data(43, 9000);
    let digest = sha256(&blob);
    let r = c
        .post(format!("{}/v2/own/blobs/uploads/", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = r.headers()["location"].to_str().unwrap().to_string();
    // Through node 2, so the owner holds the session in memory.
    let r = c
        .patch(format!("{}{path}", cluster.url(2)))
        .body(blob[..5000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let wrong = path.replace("/v2/own/", "/v2/other/");
    for n in [1, 2, 3] {
        let loc = format!("{}{wrong}", cluster.url(n));
        for (what, req) in [
            ("GET", c.get(&loc)),
            ("PATCH", c.patch(&loc).body(blob[5000..6000].to_vec())),
            (
                "PUT",
                c.put(format!("{loc}?digest={digest}"))
                    .body(blob[5000..].to_vec()),
            ),
            ("DELETE", c.delete(&loc)),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(
                json_code(r).await,
                (reqwest::StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()),
                "{what} on node {n}"
            );
        }
    }
    let stranger = format!("/v2/own/blobs/uploads/9-{}", "cd".repeat(16));
    for n in [1, 2, 3] {
        let r = c
            .get(format!("{}{stranger}", cluster.url(n)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            json_code(r).await,
            (reqwest::StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()),
            "an id naming node 9, on node {n}"
        );
    }

    let r = c
        .get(format!("{}{path}", cluster.url(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-4999");
    let r = c
        .put(format!("{}{path}?digest={digest}", cluster.url(3)))
        .body(blob[5000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!("{}/v2/own/blobs/{digest}", cluster.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
    let r = c
        .head(format!("{}/v2/other/blobs/{digest}", cluster.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Read-your-writes across nodes from headers alone: each tag overwrite
/// through node 1 names its entry (`Stowage-Log-Index`, `Stowage-Term`,
/// `Stowage-Node`), and a read on node 2 or 3 that demands that entry
/// (`Stowage-Min-Log-Index`) sees that very manifest, never an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_s_log_index_buys_a_fresh_read_on_any_node() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(READY).await;
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = push_blob(&c, &cluster.url(1), "ryw/app", &config).await;
    let mut last_index = 0;
    for round in 0..10u64 {
        let layer = data(500 + round, 2000);
        let ld = push_blob(&c, &cluster.url(1), "ryw/app", &layer).await;
        let manifest = image_manifest(&(cd.clone(), config.len()), &[(ld, layer.len())]);
        let digest = sha256(&manifest);
        let r = c
            .put(format!("{}/v2/ryw/app/manifests/latest", cluster.url(1)))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let h = |name: &str| -> u64 { r.headers()[name].to_str().unwrap().parse().unwrap() };
        let index = h("stowage-log-index");
        assert!(h("stowage-term") >= 1);
        assert!(
            index > last_index,
            "entries grow: {index} after {last_index}"
        );
        last_index = index;
        let reader = 2 + round % 2;
        let r = c
            .get(format!(
                "{}/v2/ryw/app/manifests/latest",
                cluster.url(reader)
            ))
            .header("Accept", OCI_MANIFEST)
            .header("Stowage-Min-Log-Index", index.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        assert_eq!(
            r.headers()["stowage-node"].to_str().unwrap(),
            reader.to_string()
        );
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            digest,
            "node {reader} served an older tag after entry {index}"
        );
    }
}
