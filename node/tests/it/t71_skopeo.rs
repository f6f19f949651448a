use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::*;

/// Writes an OCI image layout holding one multi-layer image tagged `v1`;
/// returns the manifest digest.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> String {
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

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_copies_a_multi_layer_image_there_and_back() {
    if !tool_available("skopeo") {
        return;
    }
    let node = Node::start_with(&["--chunk-size-bytes", "1048576"]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    let layers = vec![
        data(1, 3 * 1024 * 1024 + 17),
        data(2, 100),
        data(3, 700_000),
    ];
    let digest = write_layout(&src, &layers);

    let remote = format!("docker://{}/skopeo/multi:v1", node.host);
    // Without --preserve-digests skopeo would gzip the uncompressed layers
    // on the way; the point here is a byte-for-byte round trip.
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &remote,
    ]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        digest.as_str(),
        "manifest is unchanged"
    );
    for entry in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let copied = back.join("blobs/sha256").join(entry.file_name());
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(&copied).unwrap(),
            "blob {:?} round-trips byte for byte",
            entry.file_name()
        );
    }
}
