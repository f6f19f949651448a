//! The cluster RPC over mTLS under a cluster CA made with `stowage cert`:
//! three nodes form a cluster and replicate through it, and a node whose
//! certificate another CA signed cannot join (its add fails, it never
//! becomes a voter) while the cluster keeps serving.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::{client, try_push_image, verify_image};
use stowage_cluster_tests::process::stowage_bin;

/// A CA in `dir` and one certificate for 127.0.0.1 (every node here is on
/// loopback, so one certificate serves them all); the TOML that uses it.
fn ca_and_cert(bin: &Path, dir: &Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().expect("stowage runs");
        assert!(
            out.status.success(),
            "stowage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = dir.to_str().unwrap();
    run(&["cert", "init", "--dir", d]);
    run(&[
        "cert",
        "node",
        "--dir",
        d,
        "--id",
        "1",
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
    ]);
    format!(
        "cluster_tls_ca_file = \"{d}/ca.pem\"\ncluster_tls_cert_file = \"{d}/node-1.pem\"\ncluster_tls_key_file = \"{d}/node-1-key.pem\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_speaks_mtls_and_refuses_a_node_of_another_ca() {
    let bin = stowage_bin();
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(&theirs).unwrap();
    let tls = ca_and_cert(&bin, &ours);
    let foreign = ca_and_cert(&bin, &theirs);

    let mut cluster = Cluster::start(&["a", "b", "c"], &tls);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (d, layers) = try_push_image(&c, &cluster.url(1), "mtls/app", "v1", 4242, &[200_000])
        .await
        .expect("a push through the mTLS cluster");
    for id in [2, 3] {
        cluster.wait_in_sync(id, Duration::from_secs(30)).await;
        verify_image(&c, &cluster.url(id), "mtls/app", "v1", &d, &layers).await;
    }

    let (id4, spec) = cluster.start_joiner("d", &foreign);
    let out = Command::new(&bin)
        .args(["members", "add", &spec, "--node", &cluster.url(1)])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a node of another CA was added");
    let s = cluster.status(1).await.unwrap_or_default();
    let voter4 = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["id"] == id4 && m["voter"] == true);
    assert!(!voter4, "node {id4} became a voter: {s}");
    let out = cluster.cli(&[
        "members",
        "remove",
        &id4.to_string(),
        "--node",
        &cluster.url(2),
    ]);
    assert!(out.contains("no longer a member"), "{out}");
    try_push_image(&c, &cluster.url(3), "mtls/app", "v2", 4343, &[1000])
        .await
        .expect("the cluster still writes");
}
