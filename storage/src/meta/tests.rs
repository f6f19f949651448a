use super::*;
use crate::types::DigestAlgorithm;

fn sm() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let sm = StateMachine::open(&db).unwrap();
    (dir, sm)
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn digest(s: &str) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, s.as_bytes())
}

fn put_blob(sm: &StateMachine, r: &str, content: &str) -> Digest {
    let d = digest(content);
    let out = sm
        .apply(
            &Command::PutBlob {
                repo: repo(r),
                digest: d.clone(),
                size: content.len() as u64,
                chunks: vec![ChunkRef {
                    id: ChunkId::of(content.as_bytes()),
                    len: u32::try_from(content.len()).unwrap(),
                }],
                holders: vec![],
                now_ms: 1,
            },
            b"m",
        )
        .unwrap();
    assert_eq!(out, Outcome::Done);
    d
}

fn manifest(blobs: Vec<Digest>, subject: Option<Digest>) -> ManifestRecord {
    ManifestRecord {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: b"{}".to_vec(),
        blobs,
        children: vec![],
        subject,
        created_ms: 1,
    }
}

#[test]
fn blobs_are_visible_only_where_linked() {
    let (_d, sm) = sm();
    let d = put_blob(&sm, "a/one", "layer");
    assert!(sm.blob_in_repo(&repo("a/one"), &d).unwrap().is_some());
    assert!(sm.blob_in_repo(&repo("a/two"), &d).unwrap().is_none());
    let link = Command::LinkBlob {
        repo: repo("a/two"),
        digest: d.clone(),
        now_ms: 2,
    };
    assert_eq!(sm.apply(&link, b"m").unwrap(), Outcome::Done);
    assert!(sm.blob_in_repo(&repo("a/two"), &d).unwrap().is_some());
    let unlink = Command::UnlinkBlob {
        repo: repo("a/one"),
        digest: d.clone(),
    };
    assert_eq!(sm.apply(&unlink, b"m").unwrap(), Outcome::Done);
    assert!(sm.blob_in_repo(&repo("a/one"), &d).unwrap().is_none());
    assert!(!sm.repo_exists(&repo("a/one")).unwrap());
    assert_eq!(
        sm.apply(&unlink, b"m").unwrap(),
        Outcome::Rejected(Rejection::BlobUnknown(d.clone()))
    );
    // The record and its chunk references stay until garbage collection.
    assert!(sm.chunk_referenced(&ChunkId::of(b"layer")).unwrap());
}

#[test]
fn manifest_requires_its_blobs_in_the_repository() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "other", "layer");
    let m = digest("manifest");
    let cmd = Command::PutManifest {
        repo: repo("app"),
        digest: m.clone(),
        record: Box::new(manifest(vec![layer.clone()], None)),
        tags: vec![Tag::parse("v1").unwrap()],
        referrer: None,
    };
    assert_eq!(
        sm.apply(&cmd, b"m").unwrap(),
        Outcome::Rejected(Rejection::ManifestBlobUnknown(layer.clone()))
    );
    assert!(sm
        .tag(&repo("app"), &Tag::parse("v1").unwrap())
        .unwrap()
        .is_none());
    put_blob(&sm, "app", "layer");
    assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    assert_eq!(
        sm.tag(&repo("app"), &Tag::parse("v1").unwrap()).unwrap(),
        Some(m.clone())
    );
    assert!(sm.manifest_in_repo(&repo("app"), &m).unwrap().is_some());
    assert!(sm.manifest_in_repo(&repo("other"), &m).unwrap().is_none());
}

#[test]
fn deleting_a_manifest_removes_its_tags_and_referrer_entry() {
    let (_d, sm) = sm();
    let subject = digest("subject");
    let m = digest("sig");
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: m.clone(),
        size: 2,
        artifact_type: Some("application/example".into()),
        annotations: None,
    };
    let put = Command::PutManifest {
        repo: repo("app"),
        digest: m.clone(),
        record: Box::new(manifest(vec![], Some(subject.clone()))),
        tags: vec![Tag::parse("a").unwrap(), Tag::parse("b").unwrap()],
        referrer: Some(desc.clone()),
    };
    assert_eq!(sm.apply(&put, b"m").unwrap(), Outcome::Done);
    assert_eq!(sm.referrers(&repo("app"), &subject).unwrap(), vec![desc]);
    let (tags, more) = sm.tags(&repo("app"), None, 10).unwrap();
    assert_eq!(tags.len(), 2);
    assert!(!more);
    let del = Command::DeleteManifest {
        repo: repo("app"),
        digest: m.clone(),
    };
    assert_eq!(sm.apply(&del, b"m").unwrap(), Outcome::Done);
    assert!(sm.referrers(&repo("app"), &subject).unwrap().is_empty());
    assert!(sm.tags(&repo("app"), None, 10).unwrap().0.is_empty());
    assert!(sm.manifest_in_repo(&repo("app"), &m).unwrap().is_none());
    assert_eq!(
        sm.apply(&del, b"m").unwrap(),
        Outcome::Rejected(Rejection::ManifestUnknown)
    );
}

#[test]
fn tag_and_catalog_pages() {
    let (_d, sm) = sm();
    for r in ["b", "a", "c/d"] {
        let m = digest(r);
        let tags = ["z", "x", "y"]
            .iter()
            .map(|t| Tag::parse(t).unwrap())
            .collect();
        let put = Command::PutManifest {
            repo: repo(r),
            digest: m,
            record: Box::new(manifest(vec![], None)),
            tags,
            referrer: None,
        };
        sm.apply(&put, b"m").unwrap();
    }
    let (page, more) = sm.tags(&repo("a"), None, 2).unwrap();
    assert_eq!(
        page,
        vec![Tag::parse("x").unwrap(), Tag::parse("y").unwrap()]
    );
    assert!(more);
    let (page, more) = sm.tags(&repo("a"), Some("y"), 2).unwrap();
    assert_eq!(page, vec![Tag::parse("z").unwrap()]);
    assert!(!more);
    let (repos, _) = sm.repositories(None, 10).unwrap();
    assert_eq!(repos, vec![repo("a"), repo("b"), repo("c/d")]);
    let (repos, _) = sm.repositories(Some("a"), 1).unwrap();
    assert_eq!(repos, vec![repo("b")]);
}

#[test]
fn export_import_round_trip() {
    let (_d, sm) = sm();
    let d = put_blob(&sm, "app", "layer");
    sm.set_mark(b"mark-7").unwrap();
    let mut snap = Vec::new();
    assert_eq!(sm.export(&mut snap).unwrap(), Some(b"mark-7".to_vec()));

    let (_d2, other) = self::sm();
    put_blob(&other, "junk", "junk");
    assert_eq!(
        other.import(&mut snap.as_slice()).unwrap(),
        Some(b"mark-7".to_vec())
    );
    assert!(other.blob_in_repo(&repo("app"), &d).unwrap().is_some());
    assert!(!other.repo_exists(&repo("junk")).unwrap());

    let mut bad = snap.clone();
    let n = bad.len();
    bad[n - 6] ^= 1;
    assert!(other.import(&mut bad.as_slice()).is_err());
    assert!(other.blob_in_repo(&repo("app"), &d).unwrap().is_some());
}

#[test]
fn cluster_id_is_set_once() {
    let (_d, sm) = sm();
    assert_eq!(sm.cluster_id().unwrap(), None);
    for id in ["first", "second"] {
        let cmd = Command::SetClusterId { id: id.into() };
        assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    }
    assert_eq!(sm.cluster_id().unwrap().as_deref(), Some("first"));
}
