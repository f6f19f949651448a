use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciImageManifest, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

use crate::common::*;

fn oci(monolithic: bool) -> Client {
    install_crypto();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

#[tokio::test]
async fn push_pull_tags_and_referrers_with_oci_client() {
    let node = Node::start_with(bin(), &["--chunk-size-bytes", "65536"]);
    let auth = RegistryAuth::Anonymous;
    for (monolithic, repo) in [(false, "oci/chunked"), (true, "oci/mono")] {
        let client = oci(monolithic);
        let layers = vec![
            ImageLayer::oci_v1(data(1, 300_000), None),
            ImageLayer::oci_v1(data(2, 10), None),
        ];
        let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
        for tag in ["v1", "v2"] {
            let reference: Reference = format!("{}/{repo}:{tag}", node.host).parse().unwrap();
            client
                .push(&reference, &layers, config.clone(), &auth, None)
                .await
                .unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}"));
        }

        let reference: Reference = format!("{}/{repo}:v1", node.host).parse().unwrap();
        let image = client
            .pull(&reference, &auth, vec![IMAGE_LAYER_MEDIA_TYPE])
            .await
            .unwrap();
        let mut got: Vec<String> = image.layers.iter().map(|l| sha256(&l.data)).collect();
        let mut want: Vec<String> = layers.iter().map(|l| sha256(&l.data)).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every layer comes back byte for byte");
        let tags = client
            .list_tags(&reference, &auth, None, None)
            .await
            .unwrap();
        assert_eq!(tags.tags, vec!["v1", "v2"]);
        let page = client
            .list_tags(&reference, &auth, Some(1), Some("v1"))
            .await
            .unwrap();
        assert_eq!(page.tags, vec!["v2"]);

        // An artifact that refers to the image.
        let subject_digest = image.digest.clone().unwrap();
        let (manifest_bytes, _) = client
            .pull_manifest_raw(&reference, &auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .unwrap();
        let empty = b"{}".to_vec();
        let sig = ImageLayer::new(
            b"signature".to_vec(),
            "application/vnd.example.sig".into(),
            None,
        );
        let artifact: OciImageManifest = serde_json::from_value(json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(&empty), "size": 2},
            "layers": [{"mediaType": "application/vnd.example.sig", "digest": sha256(b"signature"), "size": 9}],
            "subject": {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": subject_digest, "size": manifest_bytes.len()},
        }))
        .unwrap();
        let art_ref: Reference = format!("{}/{repo}:sig", node.host).parse().unwrap();
        client
            .push(
                &art_ref,
                &[sig],
                Config::new(empty, "application/vnd.oci.empty.v1+json".into(), None),
                &auth,
                Some(artifact),
            )
            .await
            .unwrap();
        let subject_ref: Reference = format!("{}/{repo}@{subject_digest}", node.host)
            .parse()
            .unwrap();
        let index = client.pull_referrers(&subject_ref, None).await.unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(
            index.manifests[0].artifact_type.as_deref(),
            Some("application/vnd.example.signature")
        );
        let filtered = client
            .pull_referrers(&subject_ref, Some("application/vnd.other"))
            .await
            .unwrap();
        assert!(filtered.manifests.is_empty());
    }
}

/// oci-client unmodified against a node with access control: it follows
/// the Bearer challenge to the token endpoint with Basic credentials, and
/// without credentials it is refused.
#[tokio::test]
async fn oci_client_pushes_and_pulls_through_the_token_flow() {
    let node = Node::start(bin());
    let r = client()
        .post(format!("{}/_stowage/users", node.url))
        .json(&json!({"name": "oci-user", "password": "oci-user-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let auth = RegistryAuth::Basic("oci-user".into(), "oci-user-pass".into());
    let c = oci(false);
    let layers = vec![ImageLayer::oci_v1(data(9, 50_000), None)];
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    let reference: Reference = format!("{}/secure/app:v1", node.host).parse().unwrap();
    c.push(&reference, &layers, config, &auth, None)
        .await
        .unwrap_or_else(|e| panic!("push with credentials: {e}"));
    let image = c
        .pull(&reference, &auth, vec![IMAGE_LAYER_MEDIA_TYPE])
        .await
        .unwrap();
    assert_eq!(sha256(&image.layers[0].data), sha256(&layers[0].data));
    let anonymous = oci(false);
    assert!(
        anonymous
            .pull(
                &reference,
                &RegistryAuth::Anonymous,
                vec![IMAGE_LAYER_MEDIA_TYPE]
            )
            .await
            .is_err(),
        "an anonymous pull is refused"
    );
}
