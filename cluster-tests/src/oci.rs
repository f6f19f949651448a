//! Helpers for the OCI Distribution API over plain HTTP: push blobs and
//! images, read them back, and check error bodies. Test data is
//! deterministic and incompressible.

use std::path::Path;

use reqwest::{Client, Response, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

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
    try_put_manifest(c, url, repo, reference, media_type, body)
        .await
        .unwrap()
}

pub async fn try_put_manifest(
    c: &Client,
    url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Result<Response, String> {
    c.put(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())
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
    let r = try_put_manifest(c, url, repo, tag, OCI_MANIFEST, &m).await?;
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

/// Writes an OCI image layout holding one multi-layer image tagged `v1`;
/// returns the manifest digest.
pub fn write_oci_layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
        d
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .unwrap();
    let config_digest = put(&config);
    let descs: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": OCI_LAYER, "digest": put(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    md
}

/// Checks that `copy` (an OCI layout written by a client) holds the image
/// `digest` and every blob of `original`, byte for byte.
pub fn assert_same_layout(original: &Path, copy: &Path, digest: &str) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    assert_eq!(
        index["manifests"][0]["digest"], digest,
        "manifest is unchanged"
    );
    for entry in std::fs::read_dir(original.join("blobs/sha256")).expect("blobs dir") {
        let entry = entry.expect("dir entry");
        let copied = copy.join("blobs/sha256").join(entry.file_name());
        assert!(
            std::fs::read(entry.path()).expect("original blob")
                == std::fs::read(&copied).expect("copied blob"),
            "blob {:?} round-trips byte for byte",
            entry.file_name()
        );
    }
}
