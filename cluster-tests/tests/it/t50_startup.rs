use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stowage_cluster_tests::cluster::{free_port, Cluster};
use stowage_cluster_tests::oci::client;
use stowage_cluster_tests::process::{stowage_bin, Node};

/// Runs `stowage serve` until it exits (or fails the test after `limit`);
/// returns whether it succeeded and what it said on stderr.
fn serve_until_exit(args: &[String], limit: Duration) -> (bool, String) {
    let mut child = Command::new(stowage_bin())
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("stowage kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_majority_keeps_retrying_and_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir.path().join("n1.toml"),
        &format!(
            "node_id = 1\nzone = \"a\"\ncluster_listen = \"127.0.0.1:{}\"\npeers = [\"2=b@127.0.0.1:{}\", \"3=c@127.0.0.1:{}\"]\n",
            free_port(),
            free_port(),
            free_port()
        ),
    );
    let log = dir.path().join("n1.log");
    let node = Node::launch(
        &stowage_bin(),
        &dir.path().join("data"),
        vec![
            "--config".into(),
            cfg,
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ],
        "127.0.0.1:0",
        Some(log.clone()),
    );
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.get(format!("{}/readyz", node.url)).send().await.unwrap();
        assert_eq!(r.status(), 503, "not ready without a majority");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("waiting for a majority") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log never said what it waits for:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_list_that_contradicts_the_stored_membership_is_refused() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    cluster.kill(3);
    let m3 = cluster.member(3);
    let (m1, m2) = (cluster.member(1), cluster.member(2));
    // Node 1 is listed in the wrong zone.
    let cfg = write(
        &m3.config.with_file_name("n3-wrong.toml"),
        &format!(
            "node_id = 3\nzone = \"c\"\ncluster_listen = \"{}\"\npeers = [\"1=elsewhere@{}\", \"2=b@{}\"]\n",
            m3.rpc, m1.rpc, m2.rpc
        ),
    );
    let args = vec![
        "--config".into(),
        cfg,
        "--data-dir".into(),
        m3.node.data_dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let (ok, stderr) = serve_until_exit(&args, Duration::from_secs(30));
    assert!(!ok);
    assert!(
        stderr.contains("disagrees with the membership stored"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    // A separate single-node registry, later pointed at the cluster above.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut single = Node::spawn(&stowage_bin(), &data, &[]);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait until it has named itself.
    loop {
        let s: serde_json::Value = c
            .get(format!("{}/_stowage/status", single.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["cluster_id"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the single node never formed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(single.terminate().success());
    let (m2, m3) = (cluster.member(2), cluster.member(3));
    let args = vec![
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--node-id".into(),
        "1".into(),
        "--cluster-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--peer".into(),
        format!("2=b@{}", m2.rpc),
        "--peer".into(),
        format!("3=c@{}", m3.rpc),
    ];
    let (ok, stderr) = serve_until_exit(&args, Duration::from_secs(30));
    assert!(!ok);
    assert!(stderr.contains("belongs to cluster"), "{stderr}");
}

/// One `peers` list, every node in it, serves every node (as etcd's
/// `--initial-cluster`): each finds itself by its id and the three form one
/// cluster that replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_list_with_every_node_in_it_forms_the_cluster() {
    let cluster = Cluster::start_one_peer_list(&["a", "b", "c"]);
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (d, layers) = stowage_cluster_tests::oci::push_image(
        &c,
        &cluster.url(1),
        "one/list",
        "v1",
        77,
        &[50_000],
    )
    .await;
    stowage_cluster_tests::oci::verify_image(&c, &cluster.url(3), "one/list", "v1", &d, &layers)
        .await;
    let status = cluster.status(2).await.expect("status");
    let members = status["members"].as_array().map_or(0, Vec::len);
    assert_eq!(members, 3, "{status}");
}
