use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[tokio::test]
async fn put_get_head_by_tag_and_digest() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let (digest, _) = push_image(&c, u, "lib/app", "v1", 1, &[100, 200]).await;
    for reference in ["v1", digest.as_str()] {
        let r = c
            .get(format!("{u}/v2/lib/app/manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), digest);
        let r = c
            .head(format!("{u}/v2/lib/app/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
    }
    let r = c
        .get(format!("{u}/v2/lib/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let r = c
        .get(format!("{u}/v2/other/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_answers_with_location_and_digest_and_checks_digest_references() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let cfg = push_blob(&c, u, "r", b"{}").await;
    let m = image_manifest(&(cfg, 2), &[]);
    let d = sha256(&m);
    let r = put_manifest(&c, u, "r", &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/r/manifests/{d}").as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    let wrong = sha256(b"not it");
    let r = put_manifest(&c, u, "r", &wrong, OCI_MANIFEST, &m).await;
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let cfg = push_blob(&c, u, "r", b"{}").await;
    let missing = sha256(b"missing layer");
    let with_missing = image_manifest(&(cfg.clone(), 2), &[(missing, 13)]);
    let r = put_manifest(&c, u, "r", "t", OCI_MANIFEST, &with_missing).await;
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );

    // A blob in another repository does not count.
    let elsewhere = push_blob(&c, u, "elsewhere", b"layer").await;
    let m = image_manifest(&(cfg.clone(), 2), &[(elsewhere, 5)]);
    let r = put_manifest(&c, u, "r", "t", OCI_MANIFEST, &m).await;
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );

    for (ct, body) in [
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, b"{\"schemaVersion\":2}".to_vec()),
        (OCI_INDEX, image_manifest(&(cfg.clone(), 2), &[])),
        (
            "application/vnd.docker.distribution.manifest.v1+json",
            b"{\"schemaVersion\":1}".to_vec(),
        ),
    ] {
        let r = put_manifest(&c, u, "r", "t", ct, &body).await;
        assert_eq!(
            json_code(r).await,
            (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()),
            "{ct}"
        );
    }
    let r = put_manifest(
        &c,
        u,
        "r",
        "-bad-tag",
        OCI_MANIFEST,
        &image_manifest(&(cfg.clone(), 2), &[]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = put_manifest(&c, u, "r", "t", OCI_MANIFEST, &huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn docker_types_indexes_and_accept_negotiation() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let cfg = push_blob(&c, u, "multi", b"{\"os\":\"linux\"}").await;
    let layer = push_blob(&c, u, "multi", &data(5, 1000)).await;
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 1000}],
    }))
    .unwrap();
    let amd64 = sha256(&docker);
    let r = put_manifest(&c, u, "multi", &amd64, DOCKER_MANIFEST, &docker).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let list = |children: Vec<String>| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": children.iter().map(|d| json!({
                "mediaType": DOCKER_MANIFEST, "digest": d, "size": docker.len(),
                "platform": {"architecture": "amd64", "os": "linux"}
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    };
    // An index whose child is not in the repository is refused.
    let bad = list(vec![sha256(b"absent")]);
    let r = put_manifest(&c, u, "multi", "latest", DOCKER_LIST, &bad).await;
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let good = list(vec![amd64.clone()]);
    let r = put_manifest(&c, u, "multi", "latest", DOCKER_LIST, &good).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A client that takes lists gets the list...
    let r = c
        .get(format!("{u}/v2/multi/manifests/latest"))
        .header("Accept", format!("{DOCKER_MANIFEST}, {DOCKER_LIST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], DOCKER_LIST);
    // ...one that takes only single manifests gets the linux/amd64 image...
    let r = c
        .get(format!("{u}/v2/multi/manifests/latest"))
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["docker-content-digest"], amd64.as_str());
    // ...and one that takes neither is told the manifest is unknown to it.
    let r = c
        .get(format!("{u}/v2/multi/manifests/latest"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
}

#[tokio::test]
async fn delete_by_tag_and_by_digest() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let (d, _) = push_image(&c, u, "r", "a", 1, &[10]).await;
    let r = c
        .put(format!("{u}/v2/r/manifests/b"))
        .header("Content-Type", OCI_MANIFEST)
        .body(
            c.get(format!("{u}/v2/r/manifests/{d}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = c
        .delete(format!("{u}/v2/r/manifests/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        c.get(format!("{u}/v2/r/manifests/a"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(format!("{u}/v2/r/manifests/b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{u}/v2/r/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = c
        .delete(format!("{u}/v2/r/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        c.get(format!("{u}/v2/r/manifests/b"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(format!("{u}/v2/r/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .delete(format!("{u}/v2/r/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
}

#[tokio::test]
async fn subject_header_and_referrers_with_filter() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let (subject, _) = push_image(&c, u, "r", "v1", 1, &[10]).await;
    let empty = push_blob(&c, u, "r", b"{}").await;
    let mut referrers = Vec::new();
    for (i, at) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
            "annotations": {"n": i.to_string()},
        }))
        .unwrap();
        let d = sha256(&m);
        let r = put_manifest(&c, u, "r", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["oci-subject"], subject.as_str());
        referrers.push((d, m.len(), at.to_string()));
    }
    let r = c
        .get(format!("{u}/v2/r/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (d, size, at) in &referrers {
        let e = list.iter().find(|e| e["digest"] == d.as_str()).unwrap();
        assert_eq!(e["size"], *size);
        assert_eq!(e["artifactType"], at.as_str());
        assert_eq!(e["mediaType"], OCI_MANIFEST);
    }

    let r = c
        .get(format!(
            "{u}/v2/r/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["annotations"]["n"], "1");

    // A subject with no referrers: an empty index, not an error.
    let none = sha256(b"nobody refers to me");
    let r = c
        .get(format!("{u}/v2/r/referrers/{none}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 0);

    // Deleting a referrer removes it from the list.
    let r = c
        .delete(format!("{u}/v2/r/manifests/{}", referrers[0].0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .get(format!("{u}/v2/r/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}
