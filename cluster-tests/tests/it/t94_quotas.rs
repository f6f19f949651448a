//! Quotas per namespace, decided in apply: two pushes racing through
//! different nodes for the last bytes of a quota have exactly one winner,
//! a blob counts once per namespace, the repository count holds, and the
//! quotas are replicated state that a backup carries.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

async fn set_quota(c: &reqwest::Client, url: &str, body: Value) {
    let r = c
        .post(format!("{url}/_stowage/quotas"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

async fn usage(c: &reqwest::Client, url: &str, namespace: &str) -> (u64, u64) {
    let v: Value = c
        .get(format!("{url}/_stowage/quotas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let q = v["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["quota"]["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no quota {namespace}: {v}"))
        .clone();
    (
        q["bytes"].as_u64().unwrap(),
        q["repositories"].as_u64().unwrap(),
    )
}

async fn post_blob(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    blob: &[u8],
) -> (StatusCode, String) {
    let r = c
        .post(format!(
            "{url}/v2/{repo}/blobs/uploads/?digest={}",
            sha256(blob)
        ))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or_default();
    let msg = format!("{} {}", v["errors"][0]["code"], v["errors"][0]["message"]);
    (status, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_bytes_of_a_quota_go_to_exactly_one_of_two_racing_pushes() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    for round in 0..8u64 {
        let ns = format!("race{round}");
        // Room for one of the two 2000-byte blobs, not both.
        set_quota(
            &c,
            &u2,
            json!({"op": "set", "namespace": ns, "max_bytes": 3000}),
        )
        .await;
        let (a, b) = (data(7000 + 2 * round, 2000), data(7001 + 2 * round, 2000));
        let (app, lib) = (format!("{ns}/app"), format!("{ns}/lib"));
        let (ra, rb) = tokio::join!(post_blob(&c, &u1, &app, &a), post_blob(&c, &u3, &lib, &b));
        let (winner, loser) = match (ra.0, rb.0) {
            (StatusCode::CREATED, StatusCode::FORBIDDEN) => (&a, rb.1),
            (StatusCode::FORBIDDEN, StatusCode::CREATED) => (&b, ra.1),
            other => panic!("round {round}: {other:?} ({ra:?} {rb:?}), wanted exactly one winner"),
        };
        assert!(
            loser.contains("DENIED") && loser.contains("quota") && loser.contains("2000 bytes"),
            "{loser}"
        );
        for url in [&u1, &u2, &u3] {
            let r = c
                .get(format!("{url}/v2/_catalog"))
                .header("Stowage-Min-Log-Index", "0")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let (bytes, _) = usage(&c, url, &ns).await;
            assert_eq!(bytes, 2000, "round {round}: usage on {url}");
        }
        // The winner again, in another repository of the namespace:
        // counted once, so it fits.
        let (s, msg) = post_blob(&c, &u3, &format!("{ns}/copy"), winner).await;
        assert_eq!(s, StatusCode::CREATED, "{msg}");
        assert_eq!(usage(&c, &u1, &ns).await.0, 2000);
    }

    // Repository counts: two fit, a third does not; a mount is refused
    // the same way, with the limit in the message.
    set_quota(
        &c,
        &u1,
        json!({"op": "set", "namespace": "few", "max_repositories": 2}),
    )
    .await;
    let blob = data(7100, 100);
    for repo in ["few/a", "few/b"] {
        assert_eq!(post_blob(&c, &u2, repo, &blob).await.0, StatusCode::CREATED);
    }
    let (s, msg) = post_blob(&c, &u3, "few/c", &blob).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{msg}");
    assert!(msg.contains("2 repositories"), "{msg}");
    let r = c
        .post(format!(
            "{u1}/v2/few/d/blobs/uploads/?mount={}&from=few/a",
            sha256(&blob)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(usage(&c, &u3, "few").await, (100, 2));
    // Outside the namespace nothing is limited.
    assert_eq!(
        post_blob(&c, &u2, "fewer/x", &blob).await.0,
        StatusCode::CREATED
    );

    // Bad requests get a clear 400; lifting a quota lets pushes in again.
    for bad in [
        json!({"op": "set", "namespace": "Bad Name", "max_bytes": 1}),
        json!({"op": "set", "namespace": "x"}),
        json!({"op": "grow", "namespace": "x", "max_bytes": 1}),
    ] {
        let r = c
            .post(format!("{u2}/_stowage/quotas"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    set_quota(&c, &u2, json!({"op": "remove", "namespace": "few"})).await;
    assert_eq!(
        post_blob(&c, &u3, "few/c", &blob).await.0,
        StatusCode::CREATED
    );

    // The quotas are replicated state: a backup carries them.
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("backups");
    let out = std::process::Command::new(cluster.bin())
        .args([
            "backup",
            "create",
            "--to",
            repo.to_str().unwrap(),
            "--node",
            &u2,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tmp.path().join("restored");
    let out = std::process::Command::new(cluster.bin())
        .args([
            "restore",
            "--from",
            repo.to_str().unwrap(),
            "--latest",
            "--data-dir",
            restored.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = stowage_cluster_tests::process::Node::spawn(cluster.bin(), &restored, &[]);
    assert_eq!(usage(&c, &node.url, "race0").await.0, 2000);
    let (s, msg) = post_blob(&c, &node.url, "race0/more", &data(7200, 2000)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{msg}");
}
