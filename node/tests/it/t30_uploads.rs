use futures_util::stream;
use reqwest::{Body, StatusCode};

use crate::common::*;

async fn start(c: &reqwest::Client, u: &str, repo: &str) -> String {
    let r = c
        .post(format!("{u}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-0");
    let uuid = r.headers()["docker-upload-uuid"]
        .to_str()
        .unwrap()
        .to_string();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.ends_with(&uuid), "{loc}");
    format!("{u}{loc}")
}

#[tokio::test]
async fn chunked_upload_with_content_range_status_and_finish() {
    let node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    let c = client();
    let u = &node.url;
    let blob = data(11, 20_000);
    let d = sha256(&blob);
    let loc = start(&c, u, "app").await;

    let mut offset = 0;
    for piece in blob[..15_000].chunks(5000) {
        let r = c
            .patch(&loc)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{}-{}", offset, offset + piece.len() - 1),
            )
            .body(piece.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        offset += piece.len();
        assert_eq!(r.headers()["range"], format!("0-{}", offset - 1).as_str());
        assert!(r.headers().contains_key("location"));
    }

    // A chunk that does not start where the upload stands is refused.
    let r = c
        .patch(&loc)
        .header("Content-Range", "20-29")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-14999");

    // The last piece rides on the PUT.
    let r = c
        .put(format!("{loc}?digest={d}"))
        .header("Content-Range", "15000-19999")
        .body(blob[15_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/app/blobs/{d}").as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());

    let got = c.get(format!("{u}/v2/app/blobs/{d}")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), blob);
    // The finished session is gone.
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into())
    );
}

#[tokio::test]
async fn streamed_patch_without_length_then_empty_put() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let pieces: Vec<Vec<u8>> = (0..40).map(|i| data(100 + i, 64 * 1024)).collect();
    let whole: Vec<u8> = pieces.concat();
    let d = sha256(&whole);
    let loc = start(&c, u, "stream").await;
    let s = stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let r = c
        .patch(&loc)
        .body(Body::wrap_stream(s))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", whole.len() - 1).as_str()
    );
    let r = c.put(format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c
        .get(format!("{u}/v2/stream/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), whole);
}

#[tokio::test]
async fn put_with_wrong_digest_or_none_is_digest_invalid() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let loc = start(&c, u, "a").await;
    let r = c.patch(&loc).body(b"abc".to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.put(&loc).send().await.unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let wrong = sha256(b"abd");
    let r = c.put(format!("{loc}?digest={wrong}")).send().await.unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let r = c
        .head(format!("{u}/v2/a/blobs/{wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_and_unknown_sessions() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let loc = start(&c, u, "a").await;
    let r = c.delete(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for r in [
        c.get(&loc).send().await.unwrap(),
        c.patch(&loc).body("x").send().await.unwrap(),
        c.delete(&loc).send().await.unwrap(),
    ] {
        assert_eq!(
            json_code(r).await,
            (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into())
        );
    }
    // A session belongs to its repository.
    let loc = start(&c, u, "a").await;
    let other = loc.replace("/v2/a/", "/v2/b/");
    let r = c.get(&other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cross_repository_mounts() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let d = push_blob(&c, u, "src", b"shared layer").await;

    let r = c
        .post(format!("{u}/v2/dst/blobs/uploads/?mount={d}&from=src"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/blobs/{d}").as_str()
    );
    let r = c.get(format!("{u}/v2/dst/blobs/{d}")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared layer");

    // Without `from`, a blob known to the registry is mounted too.
    let r = c
        .post(format!("{u}/v2/third/blobs/uploads/?mount={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A blob the source does not have: an ordinary session instead.
    let missing = sha256(b"never pushed");
    let r = c
        .post(format!(
            "{u}/v2/dst/blobs/uploads/?mount={missing}&from=src"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers().contains_key("docker-upload-uuid"));
    // The blob is in src but `from` names a repository without it.
    let r = c
        .post(format!("{u}/v2/dst2/blobs/uploads/?mount={d}&from=nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Once a session is in use (one PATCH loads it into memory), no other
/// repository name can read, continue, finish or cancel it, and it is
/// still whole under its own name afterwards (cluster-tests t87 runs the
/// same check across nodes).
#[tokio::test]
async fn a_session_is_unknown_under_another_repository() {
    let node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    stowage_cluster_tests::attacks::session_stays_in_its_repository(
        &node.url,
        std::slice::from_ref(&node.url),
    )
    .await;
}

/// An id naming a node that is not in the cluster is a session nobody
/// holds: 404, and nothing above debug in the log.
#[tokio::test]
async fn an_id_naming_no_member_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("node.log");
    let listen = format!("127.0.0.1:{}", stowage_cluster_tests::process::free_port());
    let node = Node::launch(
        bin(),
        &data_dir,
        vec!["--data-dir".into(), data_dir.display().to_string()],
        &listen,
        Some(log.clone()),
    );
    stowage_cluster_tests::attacks::ids_of_absent_nodes_are_unknown(
        std::slice::from_ref(&node.url),
        2,
    )
    .await;
    // The node logs at warn and above here, so any line is too loud.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("ERROR") && !text.contains("WARN"),
        "logged:\n{text}"
    );
}
