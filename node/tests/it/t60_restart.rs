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

/// The bytes a session has taken, from its `Range` header (`0-0` for none:
/// these tests never upload a single byte).
fn taken(r: &reqwest::Response) -> usize {
    let range = r.headers()["range"].to_str().unwrap();
    let end: usize = range
        .strip_prefix("0-")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("bad range {range}"));
    if end == 0 {
        0
    } else {
        end + 1
    }
}

/// A `202` to the POST means the session exists durably: sessions opened
/// (and one given a PATCH) just before a `kill -9` answer after the restart
/// and can be finished. A PATCH's bytes may be lost with the process (its
/// chunks are recorded after the answer), so that session resumes from
/// whatever `Range` it reports: nothing or all of the PATCH.
#[tokio::test]
async fn sessions_opened_just_before_kill9_survive() {
    let mut node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    // Each round is one kill; a few rounds catch a lost write that the
    // periodic flush happens to save once.
    for round in 0..4u64 {
        let c = client();
        let u = node.url.clone();
        let blob = data(22 + round, 12_000);
        let d = sha256(&blob);
        let open = |c: &reqwest::Client| {
            let url = format!("{u}/v2/k/blobs/uploads/");
            let c = c.clone();
            async move {
                let r = c.post(url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                r.headers()["location"].to_str().unwrap().to_string()
            }
        };
        let patched = open(&c).await;
        let r = c
            .patch(format!("{u}{patched}"))
            .body(blob[..6000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        // The last answer before the kill is a bare POST's 202.
        let bare = open(&c).await;
        node.kill9();
        node.restart();

        let c = client();
        let u = &node.url;
        for (path, sent) in [(&bare, 0), (&patched, 6000)] {
            let loc = format!("{u}{path}");
            let r = c.get(&loc).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "round {round}: {path}");
            let offset = taken(&r);
            assert!(
                offset == 0 || offset == sent,
                "round {round}: {path} stands at {offset} of {sent} bytes sent"
            );
            let r = c
                .put(format!("{loc}?digest={d}"))
                .body(blob[offset..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "round {round}: {path}");
        }
        let r = c.get(format!("{u}/v2/k/blobs/{d}")).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().to_vec(), blob, "round {round}");
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
