//! Test harness: starts the real `stowage` binary on a free port with its
//! own data directory, and small HTTP helpers for the OCI API.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A running `stowage serve`, killed when dropped.
pub struct Node {
    child: Option<Child>,
    pub url: String,
    pub host: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

impl Node {
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut n = Self::spawn(&dir, extra);
        n._tmp = Some(tmp);
        n
    }

    pub fn spawn(data_dir: &Path, extra: &[&str]) -> Node {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = launch(data_dir, &extra, "127.0.0.1:0");
        Node {
            child: Some(child),
            url: format!("http://{addr}"),
            host: addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            extra,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait")
    }

    /// Starts the node again on the same data directory and the same port.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr) = launch(&self.data_dir, &self.extra, &self.host.clone());
        assert_eq!(addr, self.host);
        self.child = Some(child);
    }

    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn launch(data_dir: &Path, extra: &[String], listen: &str) -> (Child, String) {
    // A restarted node may find its port briefly held; retry a few times.
    for attempt in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
            .args([
                "serve",
                "--listen",
                listen,
                "--log-level",
                "warn",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stowage");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let addr = line
                    .strip_prefix("listening on ")
                    .expect("first stdout line names the address")
                    .to_string();
                return (child, addr);
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                if attempt == 19 {
                    panic!("stowage did not start: {status}");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    unreachable!()
}

/// reqwest (inside oci-client too) needs a rustls crypto provider even for
/// plain HTTP; install one once per test process.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn client() -> Client {
    install_crypto();
    Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic, incompressible test bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

pub async fn json_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    let code = v["errors"][0]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

/// Pushes a blob with a monolithic POST and returns its digest.
pub async fn push_blob(c: &Client, url: &str, repo: &str, blob: &[u8]) -> String {
    try_push_blob(c, url, repo, blob).await.unwrap()
}

pub async fn try_push_blob(
    c: &Client,
    url: &str,
    repo: &str,
    blob: &[u8],
) -> Result<String, String> {
    let d = sha256(blob);
    let r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("push blob to {repo}: {}", r.status()));
    }
    Ok(d)
}

pub fn image_manifest(config: &(String, usize), layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

pub async fn put_manifest(
    c: &Client,
    url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    c.put(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes a small image (config + layers) and tags it; returns the manifest
/// digest and the layer contents.
pub async fn push_image(
    c: &Client,
    url: &str,
    repo: &str,
    tag: &str,
    seed: u64,
    layer_sizes: &[usize],
) -> (String, Vec<Vec<u8>>) {
    try_push_image(c, url, repo, tag, seed, layer_sizes)
        .await
        .unwrap()
}

pub async fn try_push_image(
    c: &Client,
    url: &str,
    repo: &str,
    tag: &str,
    seed: u64,
    layer_sizes: &[usize],
) -> Result<(String, Vec<Vec<u8>>), String> {
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let cd = try_push_blob(c, url, repo, &config).await?;
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let l = data(seed * 1000 + i as u64, *size);
        let d = try_push_blob(c, url, repo, &l).await?;
        descs.push((d, l.len()));
        layers.push(l);
    }
    let m = image_manifest(&(cd, config.len()), &descs);
    let r = c
        .put(format!("{url}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("put manifest: {}", r.status()));
    }
    Ok((sha256(&m), layers))
}

/// Checks that `repo:tag` resolves to `digest` and every layer reads back
/// byte for byte.
pub async fn verify_image(
    c: &Client,
    url: &str,
    repo: &str,
    tag: &str,
    digest: &str,
    layers: &[Vec<u8>],
) {
    let r = c
        .get(format!("{url}/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
    let body = r.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest, "{repo}:{tag}");
    for l in layers {
        let r = c
            .get(format!("{url}/v2/{repo}/blobs/{}", sha256(l)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} layer");
        assert!(
            r.bytes().await.unwrap().as_ref() == l.as_slice(),
            "{repo}:{tag} layer bytes"
        );
    }
}

/// Whether a Docker engine answers; prints the loud skip line if not.
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: no Docker engine");
    }
    ok
}

/// Whether `tool` is installed; prints the loud skip line if not.
pub fn tool_available(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        // CI installs every tool the suite uses; a missing one there is a
        // broken pipeline, not a reason to skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} must be installed in CI"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}
