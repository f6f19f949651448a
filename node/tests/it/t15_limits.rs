//! File descriptors and connections: a node started with a low soft
//! open-files limit raises it and keeps accepting past it, and a node at
//! its connection limit answers 503 to a new connection instead of
//! stopping accepting, and serves again once connections close.

use std::time::{Duration, Instant};

use crate::common::*;
use stowage_cluster_tests::process::free_port;

/// Opens `n` connections that send nothing (as idle clients do).
fn idle_connections(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect()
}

#[tokio::test]
async fn a_low_soft_open_files_limit_is_raised_at_start() {
    if !tool_available("prlimit") {
        return;
    }
    let _ = rlimit::increase_nofile_limit(4096);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    // Soft 256 as some service managers start processes; hard unchanged.
    let node = Node::try_launch(
        bin(),
        vec!["prlimit".into(), "--nofile=256:".into()],
        &data_dir,
        vec!["--data-dir".into(), data_dir.display().to_string()],
        &listen,
        None,
    )
    .expect("the node starts");
    let idle = idle_connections(&listen, 400);
    let r = client().get(format!("{}/v2/", node.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "still accepting with 400 idle connections open");
    drop(idle);
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_gets_503_not_silence() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "max_connections = 20\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        &listen,
        None,
    );
    let idle = idle_connections(&listen, 20);
    // The node takes the 20 connections as it accepts them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    install_crypto();
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let r = fresh().get(format!("{}/v2/", node.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let (_, code) = json_code(r).await;
    assert_eq!(code, "UNAVAILABLE");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = fresh().get(format!("{}/v2/", node.url)).send().await.map(|r| r.status().as_u16());
        if matches!(s, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
