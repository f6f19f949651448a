//! Background repair: a node that missed pushes gets every chunk it should
//! hold without any client reading them, and a node whose disk was wiped
//! is replaced and refilled, after which losing another node loses nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::disk::{chunk_files, chunk_names};
use stowage_cluster_tests::oci::*;

const CHUNK: usize = 64 * 1024;
/// The periodic sweep is left at its default (10 minutes): what these tests
/// see is the sweep a restart, a membership change or a returning peer
/// starts by itself.
const REPAIR_TOML: &str = "chunk_size_bytes = 65536\n";

type Image = (String, String, String, Vec<Vec<u8>>);

/// Pushes `n` two-chunk images over nodes `via`, four at a time.
async fn push_images(cluster: &Cluster, via: &[u64], n: u64, seed: u64) -> Vec<Image> {
    let urls: Vec<String> = via.iter().map(|id| cluster.url(*id)).collect();
    stream::iter(0..n)
        .map(|i| {
            let url = urls[usize::try_from(i).unwrap() % urls.len()].clone();
            async move {
                let c = client();
                let repo = format!("repair/r{}", i % 5);
                let tag = format!("t{i}");
                let (d, layers) =
                    push_image(&c, &url, &repo, &tag, seed + i, &[CHUNK + 1000]).await;
                (repo, tag, d, layers)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await
}

/// The chunk names of every layer of `images`.
fn expected_chunks(images: &[Image]) -> BTreeSet<String> {
    images
        .iter()
        .flat_map(|(_, _, _, layers)| layers.iter().flat_map(|l| chunk_names(l, CHUNK)))
        .collect()
}

async fn wait_holds_all(cluster: &Cluster, id: u64, want: &BTreeSet<String>) {
    let dir = cluster.member(id).node.data_dir.clone();
    eventually(
        "every chunk on the node's disk",
        Duration::from_secs(90),
        || {
            let have: BTreeSet<String> = chunk_files(&dir).into_keys().collect();
            let missing = want.difference(&have).count();
            async move {
                (missing == 0)
                    .then_some(())
                    .ok_or(format!("node {id} lacks {missing} chunks"))
            }
        },
    )
    .await;
}

async fn wait_healthy(cluster: &Cluster, via: u64) {
    eventually("replication healthy", Duration::from_secs(90), || {
        cluster.replication_healthy(via)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_pushes_is_refilled_without_reads() {
    let mut cluster = Cluster::start(&["a", "b", "c"], REPAIR_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    cluster.member_mut(3).node.terminate();
    let images = push_images(&cluster, &[1, 2], 200, 40_000).await;
    let want = expected_chunks(&images);
    assert!(!chunk_files(&cluster.member(3).node.data_dir)
        .keys()
        .any(|k| want.contains(k)));

    cluster.restart(3);
    cluster.wait_ready(3, Duration::from_secs(60)).await;
    // No client reads from node 3: its own sweep finds what it lacks.
    wait_holds_all(&cluster, 3, &want).await;
    wait_healthy(&cluster, 1).await;
    let health = cluster.chunk_health(3).await.unwrap();
    assert_eq!(health["missing_chunks"], 0, "{health}");
    assert_eq!(health["under_replicated_blobs"], 0, "{health}");
    assert!(
        health["repaired_chunks"].as_u64().unwrap() >= want.len() as u64 / 2,
        "{health}"
    );
    let text = cluster.cli(&["status", "--node", &cluster.url(3)]);
    assert!(text.contains("every chunk has its 3 copies"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_replaced_refilled_and_the_cluster_survives_another_loss() {
    let mut cluster = Cluster::start(&["a", "b", "c"], REPAIR_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let images = push_images(&cluster, &[1, 2, 3], 30, 50_000).await;
    let want = expected_chunks(&images);

    // Node 3's disk is lost. The documented replacement: remove the member,
    // start the node on an empty data directory, add it again.
    let url1 = cluster.url(1);
    let spec = format!("3=c@{}", cluster.member(3).rpc);
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.member(3).node.data_dir).expect("wipe");
    cluster.cli(&["members", "remove", "3", "--node", &url1]);
    cluster.restart(3);
    cluster.cli(&["members", "add", &spec, "--node", &url1]);
    cluster.wait_in_sync(3, Duration::from_secs(60)).await;
    wait_holds_all(&cluster, 3, &want).await;
    wait_healthy(&cluster, 1).await;

    // Now lose node 1: every image still pulls whole from the other two.
    cluster.kill(1);
    cluster.wait_ready(2, Duration::from_secs(60)).await;
    let c = client();
    for id in [2, 3] {
        for (repo, tag, d, layers) in &images {
            verify_image(&c, &cluster.url(id), repo, tag, d, layers).await;
        }
    }
}
