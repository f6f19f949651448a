//! Garbage collection frees exactly what nothing needs, on every node: two
//! images share a layer, one is deleted, and each node's chunk files come
//! back to what the surviving image needs; deleting everything empties the
//! catalog.

use std::collections::BTreeSet;
use std::time::Duration;

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::disk::{chunk_files, chunk_names};
use stowage_cluster_tests::oci::*;

const CHUNK: usize = 64 * 1024;
/// Collect promptly: no grace, a pass every second on the leader and a
/// sweep of chunk files every second on every node.
const GC_TOML: &str = "chunk_size_bytes = 65536\ngc_grace_secs = 0\ngc_interval_secs = 1\n";
/// Chunk files written within the clock-skew allowance (2 s) of their
/// tombstone count as written by an upload still to be recorded, and stay
/// for the upload lease; the test lets the pushes age past it.
const OLDER_THAN_SKEW: Duration = Duration::from_millis(2_500);

async fn push_layer(c: &reqwest::Client, url: &str, repo: &str, blob: &[u8]) -> (String, usize) {
    (push_blob(c, url, repo, blob).await, blob.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_image_frees_its_unique_layers_on_every_node() {
    let cluster = Cluster::start(&["a", "b", "c"], GC_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let url = cluster.url(1);
    let repo = "gc/app";

    let shared = data(1, 3 * CHUNK + 100);
    let only_a = data(2, 2 * CHUNK + 7);
    let only_b = data(3, CHUNK + 5);
    let (config_a, config_b) = (b"{\"image\":\"a\"}".to_vec(), b"{\"image\":\"b\"}".to_vec());
    let mut descs = Vec::new();
    for blob in [&shared, &only_a, &only_b, &config_a, &config_b] {
        descs.push(push_layer(&c, &url, repo, blob).await);
    }
    let manifest_a = image_manifest(&descs[3], &[descs[0].clone(), descs[1].clone()]);
    let manifest_b = image_manifest(&descs[4], &[descs[0].clone(), descs[2].clone()]);
    for (tag, m) in [("a", &manifest_a), ("b", &manifest_b)] {
        let r = put_manifest(&c, &url, repo, tag, OCI_MANIFEST, m).await;
        assert_eq!(r.status(), 201);
    }
    let name_set = |blobs: &[&Vec<u8>]| -> BTreeSet<String> {
        blobs.iter().flat_map(|b| chunk_names(b, CHUNK)).collect()
    };
    let everything = name_set(&[&shared, &only_a, &only_b, &config_a, &config_b]);
    let survivors = name_set(&[&shared, &only_b, &config_b]);
    let freed = name_set(&[&only_a, &config_a]);
    assert!(survivors.is_disjoint(&freed));

    // Every node holds every chunk (three nodes, three replicas).
    for m in &cluster.members {
        eventually("all chunks on every node", Duration::from_secs(30), || {
            let files = chunk_files(&m.node.data_dir);
            let have: BTreeSet<String> = files.keys().cloned().collect();
            let everything = everything.clone();
            async move {
                everything.is_subset(&have).then_some(()).ok_or(format!(
                    "node {} holds {} chunk files",
                    m.id,
                    have.len()
                ))
            }
        })
        .await;
    }
    tokio::time::sleep(OLDER_THAN_SKEW).await;

    let r = c
        .delete(format!("{url}/v2/{repo}/manifests/{}", sha256(&manifest_a)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let want_bytes: u64 = [&shared, &only_b, &config_b]
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    for m in &cluster.members {
        eventually(
            "only the surviving image's chunks",
            Duration::from_secs(60),
            || {
                let files = chunk_files(&m.node.data_dir);
                let survivors = survivors.clone();
                async move {
                    let names: BTreeSet<String> = files.keys().cloned().collect();
                    let bytes: u64 = files.values().sum();
                    (names == survivors && bytes == want_bytes)
                        .then_some(())
                        .ok_or(format!(
                            "node {}: {} files, {bytes} bytes (want {} files, {want_bytes} bytes)",
                            m.id,
                            names.len(),
                            survivors.len()
                        ))
                }
            },
        )
        .await;
    }
    // The other image, with the shared layer, pulls whole from every node;
    // the deleted one's own layer is gone from the repository.
    for id in [1, 2, 3] {
        let node = cluster.url(id);
        verify_image(
            &c,
            &node,
            repo,
            "b",
            &sha256(&manifest_b),
            &[shared.clone(), only_b.clone()],
        )
        .await;
        let r = c
            .get(format!("{node}/v2/{repo}/blobs/{}", sha256(&only_a)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "node {id}");
    }
    let gc = cluster.cli(&["gc", "status", "--node", &url]);
    assert!(gc.contains("\"last_pass\""), "{gc}");

    // Deleting the last image empties the repository and the catalog.
    let r = c
        .delete(format!("{url}/v2/{repo}/manifests/{}", sha256(&manifest_b)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(
        "the repository leaves the catalog",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            let url = url.clone();
            async move {
                let v: serde_json::Value = c
                    .get(format!("{url}/v2/_catalog"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let repos = v["repositories"].as_array().cloned().unwrap_or_default();
                repos.is_empty().then_some(()).ok_or(format!("{repos:?}"))
            }
        },
    )
    .await;
    for m in &cluster.members {
        eventually("no chunk files left", Duration::from_secs(60), || {
            let n = chunk_files(&m.node.data_dir).len();
            async move { (n == 0).then_some(()).ok_or(format!("{n} files")) }
        })
        .await;
    }
}
