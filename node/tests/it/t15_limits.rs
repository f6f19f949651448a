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
    let r = client()
        .get(format!("{}/v2/", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "still accepting with 400 idle connections open"
    );
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
    let r = fresh()
        .get(format!("{}/v2/", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let (_, code) = json_code(r).await;
    assert_eq!(code, "UNAVAILABLE");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = fresh()
            .get(format!("{}/v2/", node.url))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(s, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the peer closes; `true` if it did within `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_close_and_a_stalled_patch_frees_its_session() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        "header_read_timeout_secs = 2\nbody_idle_timeout_secs = 2\nchunk_size_bytes = 65536\n",
    )
    .unwrap();
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
    // A connection that never sends a byte is closed.
    let mut silent = std::net::TcpStream::connect(&listen).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)),
        "a silent connection stays open"
    );
    // So is a keep-alive connection after its last request.
    let mut idle = std::net::TcpStream::connect(&listen).unwrap();
    idle.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {listen}\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)),
        "an idle keep-alive connection stays open"
    );

    // A PATCH that stalls half way fails after the body timeout; its
    // session answers again and resumes at its last stored offset.
    let c = client();
    let blob = data(11, 200_000);
    let digest = sha256(&blob);
    let r = c
        .post(format!("{}/v2/stall/app/blobs/uploads/", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let mut stalled = std::net::TcpStream::connect(&listen).unwrap();
    stalled
        .write_all(
            format!(
                "PATCH {location} HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nContent-Range: 0-{}\r\n\r\n",
                blob.len(),
                blob.len() - 1
            )
            .as_bytes(),
        )
        .unwrap();
    stalled.write_all(&blob[..100_000]).unwrap();
    // The status request waits at most for the stalled body's timeout.
    let status = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = status
        .get(format!("{}{location}", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let range = r.headers()["range"].to_str().unwrap().to_owned();
    let end: usize = range.trim_start_matches("0-").parse().unwrap();
    // With 64 KiB chunks, "0-0" can only mean nothing stored.
    let offset = if end == 0 { 0 } else { end + 1 };
    assert!(offset <= 100_000, "{range}");
    drop(stalled);
    let r = c
        .patch(format!("{}{location}", node.url))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{offset}-{}", blob.len() - 1))
        .body(blob[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{location}{sep}digest={digest}", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(format!("{}/v2/stall/app/blobs/{digest}", node.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), digest);
}
