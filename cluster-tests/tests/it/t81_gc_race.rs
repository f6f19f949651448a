//! Garbage collection races pushes and loses nothing, with no grace period
//! at all: uploads' leases alone protect layers whose manifest comes later.
//! Clients upload layers, wait, then put manifests; others delete images
//! and push the same content again; GC passes run all the time. No
//! acknowledged upload is ever refused as `MANIFEST_BLOB_UNKNOWN`, and every
//! image left standing pulls whole from every node afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

const RACE_TOML: &str = "chunk_size_bytes = 65536\ngc_grace_secs = 0\ngc_interval_secs = 1\n";
const RUN_FOR: Duration = Duration::from_secs(20);
const WORKERS: u64 = 4;
/// Distinct images each worker cycles through, so deletes and re-pushes of
/// the same content keep meeting the collector.
const IMAGES_PER_WORKER: u64 = 3;

/// An upload the registry refused is not acknowledged: the client tries
/// again, as docker does. A refusal here is GC having tombstoned chunks the
/// upload reused while it ran (within the 2 s clock allowance of the
/// tombstone), so retries span more than that.
async fn push_with_retry(c: &reqwest::Client, url: &str, repo: &str, blob: &[u8]) -> String {
    for _ in 0..60 {
        if let Ok(d) = try_push_blob(c, url, repo, blob).await {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("upload to {repo} kept failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_at_zero_grace_never_takes_an_acknowledged_upload() {
    let cluster = Arc::new(Cluster::start(&["a", "b", "c"], RACE_TOML));
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(AtomicU64::new(0));
    let deletes = Arc::new(AtomicU64::new(0));
    // The images standing at the end: repo, tag → manifest digest, layers.
    let standing: Arc<Mutex<std::collections::BTreeMap<(String, String), (String, Vec<Vec<u8>>)>>> =
        Arc::default();

    // Extra passes on demand, through every node, beside the leader's own.
    let collector = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let node = cluster.url(i % 3 + 1);
                let _ = std::process::Command::new(cluster.bin())
                    .args(["gc", "run", "--node", &node])
                    .output();
                std::thread::sleep(Duration::from_millis(200));
            }
            i
        })
    };

    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (cluster, stop, puts, deletes, standing) = (
            cluster.clone(),
            stop.clone(),
            puts.clone(),
            deletes.clone(),
            standing.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let image = round % IMAGES_PER_WORKER;
                let repo = format!("race/w{w}");
                let tag = format!("i{image}");
                // Uploads and the manifest go to different nodes.
                let up = cluster.url((w + round) % 3 + 1);
                let put = cluster.url((w + round + 1) % 3 + 1);
                // The same content each time this image comes round.
                let seed = 7_000 + w * 100 + image;
                let layers = vec![data(seed, 100_000), data(seed + 50, 30_000)];
                let config = format!("{{\"w\":{w},\"i\":{image}}}").into_bytes();
                let cd = push_with_retry(&c, &up, &repo, &config).await;
                let mut descs = Vec::new();
                for l in &layers {
                    descs.push((push_with_retry(&c, &up, &repo, l).await, l.len()));
                }
                // Wait between upload and manifest: the layers are held only
                // by their leases meanwhile.
                tokio::time::sleep(Duration::from_millis(300 + (round % 4) * 200)).await;
                let m = image_manifest(&(cd, config.len()), &descs);
                let r = try_put_manifest(&c, &put, &repo, &tag, OCI_MANIFEST, &m)
                    .await
                    .expect("manifest PUT answered");
                let status = r.status();
                let (_, code) = json_code(r).await;
                assert_eq!(
                    status,
                    StatusCode::CREATED,
                    "manifest PUT after acknowledged uploads: {code}"
                );
                puts.fetch_add(1, Ordering::Relaxed);
                standing
                    .lock()
                    .unwrap()
                    .insert((repo.clone(), tag.clone()), (sha256(&m), layers));
                // Every other round, delete it again: its blobs become
                // garbage while this worker will push the same content.
                if round % 2 == 0 {
                    let r = c
                        .delete(format!("{put}/v2/{repo}/manifests/{}", sha256(&m)))
                        .send()
                        .await
                        .expect("delete answered");
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                    standing.lock().unwrap().remove(&(repo, tag));
                    deletes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(RUN_FOR).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker finished without a refused manifest");
    }
    let passes = collector.await.expect("collector");
    println!(
        "gc race: {} manifests put, {} deleted, {passes} extra gc passes",
        puts.load(Ordering::Relaxed),
        deletes.load(Ordering::Relaxed)
    );
    assert!(puts.load(Ordering::Relaxed) > 0);

    // Let collection and chunk sweeps run on what is left, then check that
    // nothing standing lost a byte, on any node.
    for id in [1, 2, 3] {
        cluster.cli(&["gc", "run", "--node", &cluster.url(id)]);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = client();
    let standing = standing.lock().unwrap().clone();
    for ((repo, tag), (digest, layers)) in &standing {
        for id in [1, 2, 3] {
            verify_image(&c, &cluster.url(id), repo, tag, digest, layers).await;
        }
    }
}
