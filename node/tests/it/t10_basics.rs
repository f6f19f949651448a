use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn version_check_health_and_readiness() {
    let node = Node::start(bin());
    let c = client();
    let r = c.get(format!("{}/v2/", node.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(r.text().await.unwrap(), "{}");
    for path in ["/healthz", "/readyz"] {
        let r = c.get(format!("{}{path}", node.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn routing_errors_are_oci_json() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let cases = [
        (
            c.get(format!("{u}/v2/UPPER/tags/list")),
            400,
            "NAME_INVALID",
        ),
        (
            c.get(format!("{u}/v2/a/blobs/sha256:abc")),
            400,
            "DIGEST_INVALID",
        ),
        (
            c.get(format!("{u}/v2/a/blobs/md5:abc")),
            400,
            "DIGEST_INVALID",
        ),
        (c.get(format!("{u}/v2/a/nothing/here")), 404, "NOT_FOUND"),
        (
            c.get(format!("{u}/v2/a/blobs/uploads/bogus")),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            c.post(format!("{u}/v2/a/manifests/latest")),
            405,
            "UNSUPPORTED",
        ),
        (c.put(format!("{u}/v2/a/tags/list")), 405, "UNSUPPORTED"),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let allow = r.headers().get("allow").is_some();
        let got = json_code(r).await;
        assert_eq!((got.0.as_u16(), got.1.as_str()), (status, code));
        assert_eq!(ct, "application/json");
        if status == 405 {
            assert!(allow, "405 names the allowed methods");
        }
    }
}

#[test]
fn help_explains_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data-dir", "--config", "--log-level"] {
        assert!(text.contains(flag), "{flag} missing from help:\n{text}");
    }
}

#[test]
fn bad_config_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = 5\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
}

#[tokio::test]
async fn config_file_sets_what_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    let data = dir.path().join("from-config");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nchunk_size_bytes = 65536\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    // Node::spawn passes --data-dir, which wins over the file; use a
    // direct process here to see the file's data_dir take effect.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--config",
            &cfg_arg,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    assert!(data.join("chunks").is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_bare_relative_data_dir_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
            "data",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    assert!(dir.path().join("data/chunks").is_dir());
}

/// Sends `request` as raw bytes (it should ask for `Connection: close`)
/// and returns the status and the OCI error code of the answer, if any.
async fn raw_http1(host: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let code = v["errors"][0]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

#[tokio::test]
async fn http1_needs_exactly_one_host_header() {
    let node = Node::start(bin());
    let h = &node.host;
    let missing = "GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http1(h, missing).await, (400, "UNSUPPORTED".into()));
    let two =
        "GET /v2/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http1(h, two).await, (400, "UNSUPPORTED".into()));
    let one = format!("GET /v2/ HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_http1(h, &one).await, (200, String::new()));
    // HTTP/1.0 did not require Host.
    let old = "GET /v2/ HTTP/1.0\r\n\r\n";
    assert_eq!(raw_http1(h, old).await, (200, String::new()));
}

#[tokio::test]
async fn http2_names_its_target_without_a_host_header() {
    use http_body_util::{BodyExt, Empty};
    let node = Node::start(bin());
    let tcp = tokio::net::TcpStream::connect(&node.host).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // hyper sends the URI's authority as :authority and no Host header.
    let req = http::Request::get(format!("{}/v2/", node.url))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), b"{}");
}
