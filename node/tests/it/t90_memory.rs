use futures_util::stream;
use reqwest::{Body, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::common::*;

const PIECE: usize = 1 << 20;
const PIECES: u64 = 2048; // 2 GiB
const RSS_LIMIT_BYTES: u64 = 200 * 1024 * 1024;

fn piece(base: &[u8], i: u64) -> Vec<u8> {
    let mut p = base.to_vec();
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

#[tokio::test]
async fn a_2_gib_push_and_pull_stay_in_bounded_memory() {
    let node = Node::start(bin());
    let c = client();
    let base = data(77, PIECE);
    let mut h = Sha256::new();
    for i in 0..PIECES {
        h.update(piece(&base, i));
    }
    let digest = format!("sha256:{}", hex(&h.finalize()));

    let r = c
        .post(format!("{}/v2/big/blobs/uploads/", node.url))
        .send()
        .await
        .unwrap();
    let loc = format!("{}{}", node.url, r.headers()["location"].to_str().unwrap());
    let base2 = base.clone();
    let body = stream::iter((0..PIECES).map(move |i| Ok::<_, std::io::Error>(piece(&base2, i))));
    let r = c
        .patch(&loc)
        .body(Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(format!("{loc}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let after_push = node.peak_rss_bytes();

    let mut r = c
        .get(format!("{}/v2/big/blobs/{digest}", node.url))
        .send()
        .await
        .unwrap();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, PIECES * PIECE as u64);
    assert_eq!(format!("sha256:{}", hex(&h.finalize())), digest);
    let after_pull = node.peak_rss_bytes();
    eprintln!(
        "peak RSS: {} MiB after a 2 GiB push, {} MiB after pulling it back",
        after_push >> 20,
        after_pull >> 20
    );
    assert!(
        after_push < RSS_LIMIT_BYTES,
        "push peak RSS {after_push} bytes"
    );
    assert!(
        after_pull < RSS_LIMIT_BYTES,
        "pull peak RSS {after_pull} bytes"
    );
}
