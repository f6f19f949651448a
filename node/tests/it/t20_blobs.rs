use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn monolithic_push_then_head_get_and_ranges() {
    // Small chunks so ranges cross chunk boundaries.
    let node = Node::start_with(bin(), &["--chunk-size-bytes", "4096"]);
    let c = client();
    let u = &node.url;
    let blob = data(1, 10_000);
    let d = push_blob(&c, u, "lib/app", &blob).await;

    let r = c
        .head(format!("{u}/v2/lib/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "10000");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");

    let r = c
        .get(format!("{u}/v2/lib/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);

    for (range, start, end) in [
        ("bytes=0-99", 0usize, 100usize),
        ("bytes=4000-8999", 4000, 9000),
        ("bytes=9990-", 9990, 10_000),
        ("bytes=-10", 9990, 10_000),
        ("bytes=5000-20000", 5000, 10_000),
    ] {
        let r = c
            .get(format!("{u}/v2/lib/app/blobs/{d}"))
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{}/10000", end - 1).as_str()
        );
        assert_eq!(
            r.bytes().await.unwrap().to_vec(),
            blob[start..end].to_vec(),
            "{range}"
        );
    }
    let r = c
        .get(format!("{u}/v2/lib/app/blobs/{d}"))
        .header("Range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */10000");
}

#[tokio::test]
async fn blobs_are_visible_only_in_their_repository_and_deletable() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let d = push_blob(&c, u, "one", b"private layer").await;
    let r = c.get(format!("{u}/v2/two/blobs/{d}")).send().await.unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );

    let r = c
        .delete(format!("{u}/v2/one/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .head(format!("{u}/v2/one/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(format!("{u}/v2/one/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );
}

#[tokio::test]
async fn wrong_digest_is_rejected_and_nothing_is_stored() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let claimed = sha256(b"what the client says");
    let r = c
        .post(format!("{u}/v2/r/blobs/uploads/?digest={claimed}"))
        .body(b"something else".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let r = c
        .head(format!("{u}/v2/r/blobs/{claimed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .post(format!("{u}/v2/r/blobs/uploads/?digest=sha256:1234"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
}

#[tokio::test]
async fn sha512_and_empty_blobs() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let blob = data(7, 3000);
    let d512 = {
        use sha2::Digest as _;
        format!("sha512:{}", hex(&sha2::Sha512::digest(&blob)))
    };
    let r = c
        .post(format!("{u}/v2/r/blobs/uploads/?digest={d512}"))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(format!("{u}/v2/r/blobs/{d512}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], d512.as_str());
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);

    let empty = push_blob(&c, u, "r", b"").await;
    let r = c
        .get(format!("{u}/v2/r/blobs/{empty}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "0");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_corrupted_chunk_is_never_served() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let blob = data(3, 5000);
    let d = push_blob(&c, u, "r", &blob).await;
    // Flip a byte in every chunk file on disk.
    let mut flipped = 0;
    for entry in walk(&node.data_dir.join("chunks")) {
        if entry.parent().unwrap().file_name().unwrap() == "tmp" {
            continue;
        }
        let mut bytes = std::fs::read(&entry).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
        flipped += 1;
    }
    assert!(flipped > 0);
    let r = c.get(format!("{u}/v2/r/blobs/{d}")).send().await.unwrap();
    // Headers are already sent when a chunk fails verification, so the
    // transfer must break off rather than deliver wrong bytes.
    assert!(r.bytes().await.is_err(), "corrupt data must not be served");
}

/// A chunk file with no recorded CRC (a store from before records, or a
/// file restored by hand) is checked against its blake3 name instead:
/// good bytes are served, changed ones are not.
#[tokio::test]
async fn a_chunk_file_without_its_crc_is_checked_by_name() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let good = data(4, 6000);
    let bad = data(5, 7000);
    let dg = push_blob(&c, u, "r", &good).await;
    let db = push_blob(&c, u, "r", &bad).await;
    for entry in walk(&node.data_dir.join("chunks")) {
        if entry.parent().unwrap().file_name().unwrap() == "tmp" {
            continue;
        }
        // A new file: same name, no attribute.
        let mut bytes = std::fs::read(&entry).unwrap();
        std::fs::remove_file(&entry).unwrap();
        if bytes.len() == bad.len() {
            bytes[bad.len() - 1] ^= 0x01;
        }
        std::fs::write(&entry, bytes).unwrap();
    }
    let r = c.get(format!("{u}/v2/r/blobs/{dg}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], &good[..]);
    let r = c.get(format!("{u}/v2/r/blobs/{db}")).send().await.unwrap();
    assert!(r.bytes().await.is_err(), "corrupt data must not be served");
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
