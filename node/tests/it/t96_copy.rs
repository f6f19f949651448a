//! `stowage copy` between registries: Stowage to Stowage (one tag, every
//! tag, an index with its children), to and from a Distribution registry,
//! and again (nothing uploaded twice).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn copy(args: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("copy")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "copy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn tags(url: &str, repo: &str) -> Vec<String> {
    let v: Value = client()
        .get(format!("{url}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn copy_moves_images_between_registries_and_skips_what_the_target_has() {
    let a = Node::start(bin());
    let b = Node::start(bin());
    let c = client();
    // A layer over two upload pieces (8 MiB each), and a small one.
    let (v1, v1_layers) = push_image(&c, &a.url, "src/app", "v1", 1, &[9 << 20, 1000]).await;
    let (v2, v2_layers) = push_image(&c, &a.url, "src/app", "v2", 2, &[2000]).await;

    let r = copy(&[
        &format!("{}/src/app:v1", a.url),
        &format!("{}/dst/app:v1", b.url),
    ]);
    assert_eq!(r["blobs_uploaded"], 3, "{r}");
    verify_image(&c, &b.url, "dst/app", "v1", &v1, &v1_layers).await;
    // Again: every blob is there; nothing is uploaded.
    let r = copy(&[
        &format!("{}/src/app:v1", a.url),
        &format!("{}/dst/app:v1", b.url),
    ]);
    assert_eq!(
        (r["blobs_uploaded"].as_u64(), r["blobs_present"].as_u64()),
        (Some(0), Some(3)),
        "{r}"
    );
    // Under another tag, and every tag of a repository.
    copy(&[
        &format!("{}/src/app:v2", a.url),
        &format!("{}/dst/app:stable", b.url),
    ]);
    verify_image(&c, &b.url, "dst/app", "stable", &v2, &v2_layers).await;
    let r = c
        .get(format!("{}/v2/dst/app/manifests/v2", b.url))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "only the tag asked for is set"
    );
    let r = copy(&[
        &format!("{}/src/app", a.url),
        &format!("{}/mirror/app", b.url),
    ]);
    assert_eq!(tags(&b.url, "mirror/app").await, ["v1", "v2"], "{r}");

    // An index and its children.
    let m1 = c
        .get(format!("{}/v2/src/app/manifests/v1", a.url))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let m2 = c
        .get(format!("{}/v2/src/app/manifests/v2", a.url))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(&m1), "size": m1.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": sha256(&m2), "size": m2.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ]
    }))
    .unwrap();
    let r = put_manifest(
        &c,
        &a.url,
        "src/app",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    copy(&[
        &format!("{}/src/app:multi", a.url),
        &format!("{}/idx/app:multi", b.url),
    ]);
    let r = c
        .get(format!("{}/v2/idx/app/manifests/multi", b.url))
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), sha256(&index));
    verify_image(&c, &b.url, "idx/app", &v1, &v1, &v1_layers).await;

    // Bad references get a clear error.
    let out = Command::new(bin())
        .args(["copy", "ftp://x/y", &format!("{}/z", b.url)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[http[s]://]HOST"));
    let out = Command::new(bin())
        .args([
            "copy",
            &format!("{}/src/app:nope", a.url),
            &format!("{}/z/z:x", b.url),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // To Distribution and back from it into a third node.
    let Some(dist) = stowage_cluster_tests::tools::Distribution::start() else {
        return;
    };
    copy(&[
        &format!("{}/src/app:v1", a.url),
        &format!("{}/dist/app:v1", dist.url),
    ]);
    let cnode = Node::start(bin());
    copy(&[
        &format!("{}/dist/app:v1", dist.url),
        &format!("{}/back/app:v1", cnode.url),
    ]);
    verify_image(&c, &cnode.url, "back/app", "v1", &v1, &v1_layers).await;
}
