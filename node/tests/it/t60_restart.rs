use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;
use crate::t20_blobs::walk;

#[tokio::test]
async fn sigterm_then_restart_keeps_everything() {
    let mut node = Node::start(bin());
    let c = client();
    let (d, layers) = push_image(&c, &node.url, "keep", "v1", 9, &[5000, 70_000]).await;
    let status = node.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    node.restart();
    // A fresh client: pooled connections died with the old process.
    let c = client();
    let u = &node.url;
    let r = c
        .get(format!("{u}/v2/keep/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    for l in layers {
        let r = c
            .get(format!("{u}/v2/keep/blobs/{}", sha256(&l)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().to_vec(), l);
    }
}

#[tokio::test]
async fn upload_session_resumes_after_restart() {
    let mut node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    let c = client();
    let blob = data(21, 30_000);
    let d = sha256(&blob);
    let r = c
        .post(format!("{}/v2/resume/blobs/uploads/", node.url))
        .send()
        .await
        .unwrap();
    let path = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(format!("{}{path}", node.url))
        .header("Content-Range", "0-9999")
        .body(blob[..10_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    assert!(node.terminate().success());
    node.restart();
    let c = client();
    let loc = format!("{}{path}", node.url);
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-9999");
    let r = c
        .patch(&loc)
        .header("Content-Range", "10000-29999")
        .body(blob[10_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.put(format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(format!("{}/v2/resume/blobs/{d}", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
}

#[tokio::test]
async fn kill9_mid_session_leaves_it_resumable_or_cleanly_gone() {
    let mut node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    let c = client();
    let blob = data(22, 12_000);
    let d = sha256(&blob);
    let r = c
        .post(format!("{}/v2/k/blobs/uploads/", node.url))
        .send()
        .await
        .unwrap();
    let path = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(format!("{}{path}", node.url))
        .body(blob[..6000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    node.kill9();
    node.restart();
    let c = client();
    let loc = format!("{}{path}", node.url);
    let r = c.get(&loc).send().await.unwrap();
    match r.status() {
        StatusCode::NO_CONTENT => {
            assert_eq!(r.headers()["range"], "0-5999");
            let r = c
                .put(format!("{loc}?digest={d}"))
                .body(blob[6000..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let r = c
                .get(format!("{}/v2/k/blobs/{d}", node.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
        }
        StatusCode::NOT_FOUND => {
            assert_eq!(json_code(r).await.1, "BLOB_UPLOAD_UNKNOWN");
        }
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn orphan_chunks_and_abandoned_sessions_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "gc_grace_secs = 0\ngc_interval_secs = 1\nsweep_interval_secs = 1\nupload_expiry_secs = 0\n",
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    // A chunk file nothing references, as a crash between writing chunks
    // and recording their blob would leave.
    let orphan = b"orphaned chunk";
    let hash = blake3_hex(orphan);
    let orphan_path = data_dir
        .join("chunks")
        .join(&hash[..2])
        .join(&hash[2..4])
        .join(&hash);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, orphan).unwrap();

    let node = Node::spawn(bin(), &data_dir, &["--config", cfg.to_str().unwrap()]);
    let c = client();
    let u = &node.url;
    // A blob a manifest references stays; unreferenced ones are garbage
    // once their upload lease (0 here) is over.
    let kept = push_blob(&c, u, "r", &data(1, 3000)).await;
    let m = image_manifest(&(kept.clone(), 3000), &[]);
    let r = put_manifest(&c, u, "r", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A failed digest check and an abandoned session leave chunks too.
    let r = c
        .post(format!(
            "{u}/v2/r/blobs/uploads/?digest={}",
            sha256(b"other")
        ))
        .body(data(2, 3000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(format!("{u}/v2/r/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = format!("{u}{}", r.headers()["location"].to_str().unwrap());
    let _ = c.patch(&loc).body(data(3, 3000)).send().await.unwrap();

    let chunk_files = || {
        walk(&node.data_dir.join("chunks"))
            .into_iter()
            .filter(|p| p.parent().and_then(|d| d.file_name()) != Some("tmp".as_ref()))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while chunk_files() > 1 || orphan_path.exists() {
        assert!(Instant::now() < deadline, "orphan chunks were not swept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the idle session expired"
    );
    let r = c
        .get(format!("{u}/v2/r/blobs/{kept}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), data(1, 3000));
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}
