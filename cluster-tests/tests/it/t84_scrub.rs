//! Scrub finds bit rot before a client does: a flipped byte in one node's
//! copy is quarantined and rewritten from a replica, and the pull from that
//! node is byte-identical; with every copy rotten the chunk is reported as
//! lost, naming the image, and a pull fails cleanly instead of serving
//! wrong or truncated bytes. Before any scrub, the pull path's own checks
//! (the CRC recorded with each chunk file, and blake3 for a file with no
//! record) catch a rotten copy and serve the replica's.

use std::time::Duration;

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::disk::{chunk_names, chunk_path, corrupt_chunk, quarantined};
use stowage_cluster_tests::oci::*;

const CHUNK: usize = 64 * 1024;
const SCRUB_TOML: &str = "chunk_size_bytes = 65536\n";

async fn scrub_status(cluster: &Cluster, id: u64) -> Result<serde_json::Value, String> {
    client()
        .get(format!("{}/_stowage/scrub", cluster.url(id)))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

/// Runs a scrub pass on node `id` (through the CLI) and waits for it.
async fn scrub(cluster: &Cluster, id: u64) -> serde_json::Value {
    let before = scrub_status(cluster, id).await.unwrap()["passes"]
        .as_u64()
        .unwrap_or(0);
    cluster.cli(&["scrub", "run", "--node", &cluster.url(id)]);
    eventually("a scrub pass", Duration::from_secs(60), || async {
        let s = scrub_status(cluster, id).await?;
        (s["passes"].as_u64().unwrap_or(0) > before && s["running"] == false)
            .then_some(s.clone())
            .ok_or(s.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_is_quarantined_and_rewritten_from_a_replica() {
    let cluster = Cluster::start(&["a", "b", "c"], SCRUB_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (digest, layers) =
        push_image(&c, &cluster.url(1), "scrub/one", "v1", 61, &[3 * CHUNK]).await;
    let victim = chunk_names(&layers[0], CHUNK)[1].clone();
    let dir = cluster.member(2).node.data_dir.clone();
    eventually("node 2 holds the chunk", Duration::from_secs(30), || {
        let p = chunk_path(&dir, &victim);
        async move { p.is_file().then_some(()).ok_or("absent".to_string()) }
    })
    .await;
    let good = std::fs::read(chunk_path(&dir, &victim)).unwrap();
    corrupt_chunk(&dir, &victim);

    let s = scrub(&cluster, 2).await;
    assert_eq!(s["corrupt_found"], 1, "{s}");
    assert_eq!(s["repaired"], 1, "{s}");
    assert!(s["lost"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(std::fs::read(chunk_path(&dir, &victim)).unwrap(), good);
    let q = quarantined(&dir);
    assert!(q.iter().any(|f| f.starts_with(&victim)), "{q:?}");
    verify_image(&c, &cluster.url(2), "scrub/one", "v1", &digest, &layers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_rotten_everywhere_is_reported_lost_and_pulls_fail_cleanly() {
    let cluster = Cluster::start(&["a", "b", "c"], SCRUB_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (_, layers) = push_image(&c, &cluster.url(1), "scrub/all", "v1", 62, &[2 * CHUNK]).await;
    let victim = chunk_names(&layers[0], CHUNK)[0].clone();
    for m in &cluster.members {
        let dir = m.node.data_dir.clone();
        eventually(
            "every node holds the chunk",
            Duration::from_secs(30),
            || {
                let p = chunk_path(&dir, &victim);
                async move { p.is_file().then_some(()).ok_or("absent".to_string()) }
            },
        )
        .await;
        corrupt_chunk(&dir, &victim);
    }
    for id in [1, 2, 3] {
        let s = scrub(&cluster, id).await;
        let lost = s["lost"].as_array().cloned().unwrap_or_default();
        let entry = lost
            .iter()
            .find(|l| l["chunk"] == victim.as_str())
            .unwrap_or_else(|| panic!("node {id} does not report the chunk lost: {s}"));
        assert_eq!(entry["tags"][0], "scrub/all:v1", "{entry}");
        assert_eq!(entry["repositories"][0], "scrub/all", "{entry}");
        assert_eq!(entry["blobs"][0], sha256(&layers[0]).as_str(), "{entry}");
    }
    let status = cluster.status(1).await.unwrap();
    assert_eq!(
        status["replication"]["lost_chunks"], 3,
        "{}",
        status["replication"]
    );

    // The blob cannot be served: an error before any body byte, on every
    // node, never a 200 with wrong or missing bytes.
    for id in [1, 2, 3] {
        let r = c
            .get(format!(
                "{}/v2/scrub/all/blobs/{}",
                cluster.url(id),
                sha256(&layers[0])
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let (_, code) = json_code(r).await;
        assert_eq!(status, 503, "node {id}");
        assert_eq!(code, "UNAVAILABLE", "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_catches_a_rotten_copy_by_either_check_and_serves_a_replica() {
    let cluster = Cluster::start(&["a", "b", "c"], SCRUB_TOML);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (digest, layers) =
        push_image(&c, &cluster.url(1), "scrub/pull", "v1", 63, &[3 * CHUNK]).await;
    let victim = chunk_names(&layers[0], CHUNK)[2].clone();
    for id in [2, 3] {
        let dir = cluster.member(id).node.data_dir.clone();
        eventually("the node holds the chunk", Duration::from_secs(30), || {
            let p = chunk_path(&dir, &victim);
            async move { p.is_file().then_some(()).ok_or("absent".to_string()) }
        })
        .await;
    }
    // Node 2: bit rot in place (the file keeps its recorded CRC).
    corrupt_chunk(&cluster.member(2).node.data_dir, &victim);
    // Node 3: a file with no record and wrong bytes (as a store written
    // before records existed would have after rot): blake3 decides.
    let path = chunk_path(&cluster.member(3).node.data_dir, &victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] ^= 0x01;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();

    for id in [2, 3] {
        verify_image(&c, &cluster.url(id), "scrub/pull", "v1", &digest, &layers).await;
        let q = quarantined(&cluster.member(id).node.data_dir);
        assert!(
            q.iter().any(|f| f.starts_with(&victim)),
            "node {id} did not quarantine the rotten copy: {q:?}"
        );
        let good = std::fs::read(chunk_path(&cluster.member(1).node.data_dir, &victim)).unwrap();
        assert_eq!(
            std::fs::read(chunk_path(&cluster.member(id).node.data_dir, &victim)).unwrap(),
            good,
            "node {id} keeps the good copy it fetched"
        );
    }
}
