//! A pull of a blob whose chunks are on fewer nodes than placement says is
//! honest: with one of the two holders down it is served whole from the
//! other, and with no holder reachable it is a `503` before any body byte,
//! never a `200` with a truncated body.

use std::time::Duration;

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::disk::{chunk_names, chunk_path};
use stowage_cluster_tests::oci::*;

const CHUNK: usize = 64 * 1024;
const TOML: &str = "chunk_size_bytes = 65536\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_is_whole_from_the_other_holder_or_a_503_before_the_body() {
    let mut cluster = Cluster::start(&["a", "b", "c"], TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let layer = data(86, 4 * CHUNK + 123);
    let digest = push_blob(&c, &cluster.url(1), "honest/app", &layer).await;
    let names = chunk_names(&layer, CHUNK);
    for m in &cluster.members {
        for n in &names {
            let p = chunk_path(&m.node.data_dir, n);
            eventually("every copy written", Duration::from_secs(30), || {
                let p = p.clone();
                async move { p.is_file().then_some(()).ok_or("absent".to_string()) }
            })
            .await;
        }
    }
    // Node 3 lost its copies of two chunks (no repair sweep is due), so
    // they have two holders left: nodes 1 and 2. Node 2 goes down.
    for n in &names[1..3] {
        std::fs::remove_file(chunk_path(&cluster.member(3).node.data_dir, n)).unwrap();
    }
    cluster.kill(2);
    let url3 = cluster.url(3);
    let blob_url = format!("{url3}/v2/honest/app/blobs/{digest}");
    let r = c.get(&blob_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("the whole body arrives");
    assert!(
        body.as_ref() == layer.as_slice(),
        "served whole from node 1"
    );

    // Lose the copies again, and the last other holder: nothing reachable
    // has them, so the answer is an error before the body.
    for n in &names[1..3] {
        std::fs::remove_file(chunk_path(&cluster.member(3).node.data_dir, n)).unwrap();
    }
    cluster.kill(1);
    let r = c.get(&blob_url).send().await.unwrap();
    let status = r.status();
    let length = r.content_length();
    let (_, code) = json_code(r).await;
    assert_eq!(status, 503, "no holder reachable");
    assert_eq!(code, "UNAVAILABLE");
    assert_ne!(length, Some(layer.len() as u64), "not the blob's headers");
    // A range that needs only chunks node 3 still has is served.
    let r = c
        .get(&blob_url)
        .header("Range", format!("bytes=0-{}", CHUNK - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap().as_ref() == &layer[..CHUNK]);
}
