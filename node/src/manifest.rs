//! Manifest parsing and validation: decides a manifest's media type, checks
//! it against the OCI image-spec types (oci-spec), and extracts what the
//! state machine needs (referenced blobs, child manifests, subject) so that
//! apply never parses JSON.

use std::collections::BTreeMap;

use oci_spec::image::{ImageIndex, ImageManifest};
use stowage_storage::meta::Descriptor;
use stowage_storage::types::Digest;

use crate::error::{Error, Result};

/// Media types of the manifests the registry stores, OCI and Docker.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const OCI_NONDISTRIBUTABLE_PREFIX: &str =
        "application/vnd.oci.image.layer.nondistributable";

    /// Every manifest media type this registry accepts.
    pub const ALL: [&str; 4] = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];

    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// What a manifest says, as far as the registry cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, its config's
    /// media type (what the referrers API reports).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Parsed {
    /// The descriptor under which this manifest is listed as a referrer.
    pub fn descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Content types some clients send that say nothing about the manifest kind.
fn is_generic(ct: &str) -> bool {
    ct.is_empty() || ct == "application/json" || ct == "application/octet-stream"
}

pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Parsed> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::ManifestInvalid(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Error::ManifestInvalid("not a JSON object".into()))?;
    let body_mt = match obj.get("mediaType") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Error::ManifestInvalid("mediaType must be a string".into())),
    };
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !is_generic(c));
    let media_type = match (ct, body_mt) {
        (Some(ct), Some(body)) if ct != body => {
            return Err(Error::ManifestInvalid(format!(
                "mediaType {body} does not match Content-Type {ct}"
            )))
        }
        (Some(mt), _) | (None, Some(mt)) => mt.to_owned(),
        // Neither says: the shape does (as the image-spec allows).
        (None, None) if obj.contains_key("manifests") => media::OCI_INDEX.to_owned(),
        (None, None) => media::OCI_MANIFEST.to_owned(),
    };
    if obj.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        if media_type == media::DOCKER_SCHEMA1 || media_type == media::DOCKER_SCHEMA1_SIGNED {
            return Err(Error::ManifestInvalid(
                "Docker schema 1 manifests are not supported; push schema 2 or OCI".into(),
            ));
        }
        return Err(Error::ManifestInvalid("schemaVersion must be 2".into()));
    }
    let invalid = |e: serde_json::Error| Error::ManifestInvalid(e.to_string());
    match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => {
            let m: ImageManifest = serde_json::from_slice(bytes).map_err(invalid)?;
            let mut blobs = vec![digest_of(m.config().digest())?];
            for layer in m.layers() {
                let lmt = layer.media_type().to_string();
                let foreign = lmt == media::DOCKER_FOREIGN_LAYER
                    || lmt.starts_with(media::OCI_NONDISTRIBUTABLE_PREFIX);
                // Foreign layers live at their URLs, not in the registry.
                if foreign && layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                blobs.push(digest_of(layer.digest())?);
            }
            blobs.sort();
            blobs.dedup();
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            Ok(Parsed {
                media_type,
                blobs,
                children: vec![],
                subject: m
                    .subject()
                    .as_ref()
                    .map(|s| digest_of(s.digest()))
                    .transpose()?,
                artifact_type,
                annotations: sorted(m.annotations()),
            })
        }
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => {
            let i: ImageIndex = serde_json::from_slice(bytes).map_err(invalid)?;
            let mut children = i
                .manifests()
                .iter()
                .map(|d| digest_of(d.digest()))
                .collect::<Result<Vec<_>>>()?;
            children.sort();
            children.dedup();
            Ok(Parsed {
                media_type,
                blobs: vec![],
                children,
                subject: i
                    .subject()
                    .as_ref()
                    .map(|s| digest_of(s.digest()))
                    .transpose()?,
                artifact_type: i.artifact_type().as_ref().map(|a| a.to_string()),
                annotations: sorted(i.annotations()),
            })
        }
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => Err(Error::ManifestInvalid(
            "Docker schema 1 manifests are not supported; push schema 2 or OCI".into(),
        )),
        other => Err(Error::ManifestInvalid(format!(
            "unsupported manifest media type {other:?}"
        ))),
    }
}

fn digest_of(d: &oci_spec::image::Digest) -> Result<Digest> {
    Digest::parse(d.as_ref()).map_err(|e| Error::ManifestInvalid(format!("descriptor digest: {e}")))
}

fn sorted(
    a: &Option<std::collections::HashMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    a.as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Whether a client that sent `accept` takes a manifest of `media_type`.
/// No Accept header, or a wildcard, takes anything.
pub fn accepts(accept: &[String], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().any(|a| {
            let a = a.split(';').next().unwrap_or("").trim();
            a == media_type || a == "*/*" || a == "application/*"
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_storage::types::DigestAlgorithm;

    fn d(s: &str) -> String {
        Digest::of(DigestAlgorithm::Sha256, s.as_bytes()).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST,
            d("config"),
            d("layer"),
        )
    }

    #[test]
    fn image_manifest_lists_its_blobs() {
        let p = parse(Some(media::OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(p.media_type, media::OCI_MANIFEST);
        assert_eq!(p.blobs.len(), 2);
        assert!(p.children.is_empty() && p.subject.is_none());
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn subject_and_artifact_type_are_extracted() {
        let extra = format!(
            r#","artifactType":"application/example","subject":{{"mediaType":"{}","digest":"{}","size":9}},"annotations":{{"b":"2","a":"1"}}"#,
            media::OCI_MANIFEST,
            d("subject")
        );
        let p = parse(None, image(&extra).as_bytes()).unwrap();
        assert_eq!(p.subject.unwrap().to_string(), d("subject"));
        assert_eq!(p.artifact_type.as_deref(), Some("application/example"));
        assert_eq!(p.annotations.unwrap().len(), 2);
    }

    #[test]
    fn index_lists_its_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            d("child")
        );
        let p = parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(p.children.len(), 1);
        assert!(p.blobs.is_empty());
    }

    #[test]
    fn bad_manifests_are_manifest_invalid() {
        let cases = [
            (Some(media::OCI_MANIFEST), "not json".to_string()),
            (Some(media::OCI_MANIFEST), "[]".to_string()),
            (Some(media::OCI_INDEX), image("")),
            (
                Some("application/x-unknown"),
                image("").replace(media::OCI_MANIFEST, "application/x-unknown"),
            ),
            (
                Some(media::OCI_MANIFEST),
                image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1"),
            ),
            (
                Some(media::OCI_MANIFEST),
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                    .to_string(),
            ),
            (
                Some(media::DOCKER_SCHEMA1),
                r#"{"schemaVersion":1}"#.to_string(),
            ),
        ];
        for (ct, body) in cases {
            let e = parse(ct, body.as_bytes()).unwrap_err();
            assert!(matches!(e, Error::ManifestInvalid(_)), "{body}: {e}");
        }
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&[], media::OCI_INDEX));
        assert!(accepts(&["*/*".into()], media::OCI_INDEX));
        assert!(accepts(
            &[format!("{}; q=0.5", media::OCI_INDEX)],
            media::OCI_INDEX
        ));
        assert!(!accepts(&[media::DOCKER_MANIFEST.into()], media::OCI_INDEX));
    }
}
