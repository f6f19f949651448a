//! What a node tells operators and scripts about each request: the
//! `Stowage-Node`, `Stowage-Log-Index` and `Stowage-Term` headers of a
//! write, reads that demand a replica at least as fresh as a given entry
//! (`Stowage-Min-Log-Index`), and one access log line per request, without
//! colour codes in a file and without secrets.

use reqwest::StatusCode;

use crate::common::*;
use stowage_cluster_tests::process::free_port;

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_name_their_entry_and_reads_wait_for_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("node.log");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "request_deadline_secs = 1\n").unwrap();
    let node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--log-level".into(),
            "info".into(),
        ],
        &format!("127.0.0.1:{}", free_port()),
        Some(log.clone()),
    );
    let c = client();
    let u = &node.url;

    // A monolithic blob push commits a blob record: it names the entry.
    let blob = data(12, 10_000);
    let d = sha256(&blob);
    let r = c
        .post(format!("{u}/v2/h/app/blobs/uploads/?digest={d}"))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "stowage-node"), Some(1));
    let first = header(&r, "stowage-log-index").expect("a write names its entry");
    assert!(header(&r, "stowage-term").is_some_and(|t| t >= 1));
    let config_blob = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = push_blob(&c, u, "h/app", &config_blob).await;
    let manifest = image_manifest(&(cd, config_blob.len()), &[(d.clone(), blob.len())]);
    let r = c
        .put(format!("{u}/v2/h/app/manifests/v1"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let index = header(&r, "stowage-log-index").unwrap();
    assert!(
        index > first,
        "later writes, later entries: {index} after {first}"
    );

    // A read names the node but no entry.
    let r = c
        .get(format!("{u}/v2/h/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "stowage-node"), Some(1));
    assert!(r.headers().get("stowage-log-index").is_none());
    // Fresh enough: served.
    let r = c
        .get(format!("{u}/v2/h/app/manifests/v1"))
        .header("Stowage-Min-Log-Index", index.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // An entry nobody wrote: 503 with the reason after the deadline.
    let r = c
        .get(format!("{u}/v2/h/app/manifests/v1"))
        .header("Stowage-Min-Log-Index", (index + 1_000_000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("UNAVAILABLE") && text.contains("Stowage-Min-Log-Index"),
        "{text}"
    );
    let r = c
        .get(format!("{u}/v2/h/app/manifests/v1"))
        .header("Stowage-Min-Log-Index", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "UNSUPPORTED".into())
    );

    // One access line per request, plain text in a file.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("stowage::access"))
        .collect();
    assert!(lines.len() >= 6, "{text}");
    assert!(
        lines.iter().any(|l| l.contains("method=PUT")
            && l.contains("path=/v2/h/app/manifests/v1")
            && l.contains("status=201")),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_can_be_turned_off_and_names_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let run = async |access_log: bool| {
        let dir = tmp.path().join(format!("n-{access_log}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("node.log");
        let config = dir.join("node.toml");
        std::fs::write(&config, format!("access_log = {access_log}\n")).unwrap();
        let data_dir = dir.join("data");
        let node = Node::launch(
            bin(),
            &data_dir,
            vec![
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--config".into(),
                config.display().to_string(),
                "--log-level".into(),
                "info".into(),
            ],
            &format!("127.0.0.1:{}", free_port()),
            Some(log.clone()),
        );
        let c = client();
        let r = c
            .post(format!("{}/_stowage/users", node.url))
            .json(&serde_json::json!({"name": "root", "password": "access-log-pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = c
            .get(format!("{}/v2/", node.url))
            .basic_auth("root", Some("access-log-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        drop(node);
        std::fs::read_to_string(&log).unwrap()
    };
    let on = run(true).await;
    assert!(
        on.lines().any(|l| l.contains("stowage::access")
            && l.contains("path=/v2/")
            && l.contains("caller=root")),
        "{on}"
    );
    assert!(!on.contains("access-log-pw"), "a password reached the log");
    let off = run(false).await;
    assert!(!off.contains("stowage::access"), "{off}");
}

/// `GET /metrics`: OpenMetrics text with the requests answered, the chunk
/// writes, Raft's position and the process, every family documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_show_the_node() {
    let node = Node::start(bin());
    let c = client();
    let blob = data(120, 300_000);
    push_blob(&c, &node.url, "m/app", &blob).await;
    let r = c
        .get(format!("{}/v2/m/app/blobs/{}", node.url, sha256(&blob)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    let r = c.get(format!("{}/metrics", node.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert!(
        value(r#"stowage_http_requests_total{endpoint="blob",method="GET",status="200"}"#) >= 1.0
    );
    assert!(
        value(r#"stowage_http_requests_total{endpoint="upload_start",method="POST",status="201"}"#)
            >= 1.0
    );
    assert!(value("stowage_http_sent_bytes_total") >= blob.len() as f64);
    assert!(value("stowage_http_received_bytes_total") >= blob.len() as f64);
    assert!(value(r#"stowage_chunk_writes_total{result="ok"}"#) >= 1.0);
    assert_eq!(value("stowage_raft_is_leader"), 1.0);
    assert!(value("stowage_raft_applied_index") >= 1.0);
    assert!(value("stowage_raft_log_bytes") > 0.0);
    assert!(value("stowage_process_resident_memory_bytes") > 0.0);
    assert!(value("stowage_process_open_fds") > 0.0);
    assert!(value("stowage_disk_free_bytes") > 0.0);
    assert!(value("stowage_gc_reclaimed_bytes_total") >= 0.0);
    assert!(value("stowage_scrub_passes_total") >= 0.0);
    assert_eq!(value("stowage_disk_read_only"), 0.0);
    assert!(text.contains(r#"stowage_worker_state{worker="#), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    // Every family has its help line.
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
    }
}
