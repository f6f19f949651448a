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
                written_since_ms: 1,
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
        now_ms: 3,
    };
    assert_eq!(sm.apply(&unlink, b"m").unwrap(), Outcome::Done);
    assert!(sm.blob_in_repo(&repo("a/one"), &d).unwrap().is_none());
    assert!(!sm.repo_exists(&repo("a/one")).unwrap());
    assert_eq!(
        sm.apply(&unlink, b"m").unwrap(),
        Outcome::Rejected(Rejection::BlobUnknown(d.clone()))
    );
    // Another repository still links it, so the record and its chunks stay.
    assert!(sm.chunk_referenced(&ChunkId::of(b"layer")).unwrap());
    let last = Command::UnlinkBlob {
        repo: repo("a/two"),
        digest: d.clone(),
        now_ms: 4,
    };
    assert_eq!(sm.apply(&last, b"m").unwrap(), Outcome::Done);
    assert!(sm.blob(&d).unwrap().is_none());
    assert!(!sm.chunk_referenced(&ChunkId::of(b"layer")).unwrap());
    assert_eq!(sm.tombstone(&ChunkId::of(b"layer")).unwrap(), Some(4));
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
        now_ms: 5,
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
fn a_snapshot_lists_each_chunk_it_needs_once_and_checks_its_sum() {
    let (_d, sm) = sm();
    put_blob(&sm, "app", "layer");
    put_blob(&sm, "other", "layer");
    put_blob(&sm, "app", "config");
    let mut snap = Vec::new();
    sm.export(&mut snap).unwrap();
    let mut ids: Vec<ChunkId> = snapshot_chunks(&snap)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    let mut want = vec![ChunkId::of(b"layer"), ChunkId::of(b"config")];
    want.sort();
    assert_eq!(ids, want);
    let n = snap.len();
    snap[n - 6] ^= 1;
    assert!(snapshot_chunks(&snap).is_err());
    assert!(snapshot_chunks(&snap[..n / 2]).is_err());
}

#[test]
fn a_restored_state_forgets_its_cluster_and_lists_its_manifests() {
    let (_d, sm) = sm();
    sm.apply(&Command::SetClusterId { id: "old".into() }, b"m")
        .unwrap();
    let d = put_blob(&sm, "app", "layer");
    let put = Command::PutManifest {
        repo: repo("app"),
        digest: digest("m1"),
        record: Box::new(manifest(vec![d], None)),
        tags: vec![],
        referrer: None,
    };
    assert_eq!(sm.apply(&put, b"m").unwrap(), Outcome::Done);
    assert_eq!(sm.repo_manifests(&repo("app")).unwrap(), vec![digest("m1")]);
    assert!(sm.repo_manifests(&repo("ap")).unwrap().is_empty());
    sm.forget_cluster_id(b"seeded").unwrap();
    assert_eq!(sm.cluster_id().unwrap(), None);
    assert_eq!(sm.applied_mark().unwrap(), Some(b"seeded".to_vec()));
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

fn policy(now_ms: u64, grace_ms: u64, lease_ms: u64) -> GcPolicy {
    GcPolicy {
        now_ms,
        grace_ms,
        lease_ms,
    }
}

fn put_image(sm: &StateMachine, r: &str, layers: &[Digest], name: &str, tag: &str) -> Digest {
    let m = digest(name);
    let cmd = Command::PutManifest {
        repo: repo(r),
        digest: m.clone(),
        record: Box::new(ManifestRecord {
            created_ms: 10,
            ..manifest(layers.to_vec(), None)
        }),
        tags: vec![Tag::parse(tag).unwrap()],
        referrer: None,
    };
    assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    m
}

fn collect_all(sm: &StateMachine, p: GcPolicy) -> GcCandidates {
    let c = sm.gc_candidates(&p, |_| true).unwrap();
    let cmd = Command::CollectBlobs {
        links: c.links.clone(),
        policy: p,
    };
    assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    c
}

#[test]
fn gc_takes_only_blobs_no_manifest_needs_and_keeps_shared_chunks() {
    let (_d, sm) = sm();
    let shared = put_blob(&sm, "app", "shared");
    let only_one = put_blob(&sm, "app", "unique");
    let m1 = put_image(&sm, "app", &[shared.clone(), only_one.clone()], "m1", "one");
    put_image(&sm, "app", &[shared.clone()], "m2", "two");
    // Referenced: nothing to collect, whatever the clock says.
    assert!(collect_all(&sm, policy(1_000_000, 0, 0)).links.is_empty());

    let del = Command::DeleteManifest {
        repo: repo("app"),
        digest: m1,
        now_ms: 100,
    };
    assert_eq!(sm.apply(&del, b"m").unwrap(), Outcome::Done);
    // Within the grace period the unique layer stays.
    assert!(collect_all(&sm, policy(150, 100, 0)).links.is_empty());
    let c = collect_all(&sm, policy(200, 100, 0));
    assert_eq!(c.links, vec![(repo("app"), only_one.clone())]);
    assert_eq!((c.blobs, c.bytes), (1, 6));
    assert!(sm.blob(&only_one).unwrap().is_none());
    assert_eq!(sm.tombstone(&ChunkId::of(b"unique")).unwrap(), Some(200));
    assert!(sm.blob(&shared).unwrap().is_some());
    assert!(sm.chunk_referenced(&ChunkId::of(b"shared")).unwrap());
}

#[test]
fn an_upload_lease_protects_a_blob_until_a_manifest_takes_it() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer"); // linked at 1
                                               // Grace 0: only the lease (100 ms here) holds it.
    assert!(collect_all(&sm, policy(50, 0, 100)).links.is_empty());
    assert_eq!(collect_all(&sm, policy(101, 0, 100)).links.len(), 1);
    assert!(sm.blob(&layer).unwrap().is_none());

    // Pushed again, then referenced: the manifest holds it, lease or not.
    let again = Command::PutBlob {
        repo: repo("app"),
        digest: layer.clone(),
        size: 5,
        chunks: vec![ChunkRef {
            id: ChunkId::of(b"layer"),
            len: 5,
        }],
        holders: vec![],
        now_ms: 5_000,
        written_since_ms: 4_000,
    };
    assert_eq!(sm.apply(&again, b"m").unwrap(), Outcome::Done);
    put_image(&sm, "app", &[layer.clone()], "m", "t");
    assert!(collect_all(&sm, policy(10_000, 0, 100)).links.is_empty());
    assert!(sm.blob_in_repo(&repo("app"), &layer).unwrap().is_some());
}

#[test]
fn a_collection_decided_before_a_push_does_not_take_it() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer");
    let p = policy(500, 0, 100);
    let decided = sm.gc_candidates(&p, |_| true).unwrap();
    assert_eq!(decided.links.len(), 1);
    // The same layer is pushed again (renewing its lease) before the
    // collection is applied: apply checks again and keeps it.
    let again = Command::PutBlob {
        repo: repo("app"),
        digest: layer.clone(),
        size: 5,
        chunks: vec![],
        holders: vec![],
        now_ms: 450,
        written_since_ms: 440,
    };
    assert_eq!(sm.apply(&again, b"m").unwrap(), Outcome::Done);
    let cmd = Command::CollectBlobs {
        links: decided.links,
        policy: p,
    };
    assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    assert!(sm.blob_in_repo(&repo("app"), &layer).unwrap().is_some());
}

#[test]
fn a_new_blob_whose_chunk_was_tombstoned_while_uploading_is_refused() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer");
    collect_all(&sm, policy(10_000, 0, 0)); // tombstone at 10 s
    let chunk = ChunkRef {
        id: ChunkId::of(b"layer"),
        len: 5,
    };
    let put = |written_since_ms| Command::PutBlob {
        repo: repo("app"),
        digest: layer.clone(),
        size: 5,
        chunks: vec![chunk],
        holders: vec![],
        now_ms: 20_000,
        written_since_ms,
    };
    assert_eq!(
        sm.apply(&put(9_000), b"m").unwrap(),
        Outcome::Rejected(Rejection::ChunksCollected(chunk.id))
    );
    assert!(sm.blob(&layer).unwrap().is_none());
    // Written well after the tombstone: every copy is newer than it.
    assert_eq!(sm.apply(&put(15_000), b"m").unwrap(), Outcome::Done);
    assert_eq!(sm.tombstone(&chunk.id).unwrap(), None);
    assert!(sm.chunk_referenced(&chunk.id).unwrap());
}

#[test]
fn untagged_manifests_go_only_where_asked_and_not_while_an_index_needs_them() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer");
    let child = put_image(&sm, "app", &[layer.clone()], "child", "c");
    let index = digest("index");
    let put_index = Command::PutManifest {
        repo: repo("app"),
        digest: index.clone(),
        record: Box::new(ManifestRecord {
            children: vec![child.clone()],
            created_ms: 20,
            ..manifest(vec![], None)
        }),
        tags: vec![Tag::parse("i").unwrap()],
        referrer: None,
    };
    assert_eq!(sm.apply(&put_index, b"m").unwrap(), Outcome::Done);
    let untag = |t: &str, now_ms| Command::DeleteTag {
        repo: repo("app"),
        tag: Tag::parse(t).unwrap(),
        now_ms,
    };
    sm.apply(&untag("c", 30), b"m").unwrap();
    let p = policy(1_000, 0, 0);
    // The child is untagged but listed by a tagged index.
    assert!(sm.gc_candidates(&p, |_| true).unwrap().manifests.is_empty());
    sm.apply(&untag("i", 40), b"m").unwrap();
    assert_eq!(
        sm.gc_candidates(&p, |_| true).unwrap().manifests,
        vec![(repo("app"), index.clone())]
    );
    assert!(sm
        .gc_candidates(&p, |_| false)
        .unwrap()
        .manifests
        .is_empty());
    let collect = Command::CollectManifests {
        repo: repo("app"),
        digests: vec![index.clone()],
        policy: p,
    };
    sm.apply(&collect, b"m").unwrap();
    assert!(sm.manifest_in_repo(&repo("app"), &index).unwrap().is_none());
    // Now the child is free too, and after it its layer.
    let c = sm.gc_candidates(&p, |_| true).unwrap();
    assert_eq!(c.manifests, vec![(repo("app"), child.clone())]);
    let collect = Command::CollectManifests {
        repo: repo("app"),
        digests: vec![child],
        policy: p,
    };
    sm.apply(&collect, b"m").unwrap();
    collect_all(&sm, p);
    assert!(sm.blob(&layer).unwrap().is_none());
    assert!(!sm.repo_exists(&repo("app")).unwrap());
}

#[test]
fn tombstones_are_forgotten_after_grace_and_lease() {
    let (_d, sm) = sm();
    put_blob(&sm, "app", "layer");
    collect_all(&sm, policy(100, 0, 0));
    let id = ChunkId::of(b"layer");
    let early = policy(150, 10, 100);
    assert!(sm
        .gc_candidates(&early, |_| true)
        .unwrap()
        .tombstones
        .is_empty());
    let late = policy(210, 10, 100);
    let c = sm.gc_candidates(&late, |_| true).unwrap();
    assert_eq!(c.tombstones, vec![id]);
    let cmd = Command::ForgetTombstones {
        chunks: c.tombstones,
        policy: late,
    };
    sm.apply(&cmd, b"m").unwrap();
    assert_eq!(sm.tombstone(&id).unwrap(), None);
}

#[test]
fn dependents_name_blobs_manifests_tags_and_repositories() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer");
    let m = put_image(&sm, "app", &[layer.clone()], "m", "latest");
    let d = sm.dependents(&ChunkId::of(b"layer")).unwrap();
    assert_eq!(d.blobs, vec![layer]);
    assert_eq!(d.manifests, vec![(repo("app"), m)]);
    assert_eq!(d.tags, vec![(repo("app"), Tag::parse("latest").unwrap())]);
    assert_eq!(d.repositories, vec![repo("app")]);
}

mod access_state {
    use super::*;
    use crate::meta::access::{AccessRule, Account, AccountKind, Actions, SigningKey, Subject};
    use crate::types::AccountName;

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn account(n: &str, kind: AccountKind) -> Account {
        Account {
            name: name(n),
            kind,
            secret_hash: format!("hash-of-{n}"),
            created_ms: 1,
            expires_ms: None,
            generation: 0,
        }
    }

    fn apply(sm: &StateMachine, cmd: Command) -> Outcome {
        sm.apply(&cmd, b"m").unwrap()
    }

    fn add(sm: &StateMachine, n: &str, kind: AccountKind) -> Outcome {
        apply(
            sm,
            Command::PutAccount {
                account: account(n, kind),
                replace: false,
            },
        )
    }

    fn rule(p: &str, s: Subject, a: &str) -> AccessRule {
        AccessRule::new(p, s, Actions::parse(a).unwrap()).unwrap()
    }

    #[test]
    fn the_first_user_administers_and_the_last_admin_stays() {
        let (_d, sm) = sm();
        assert!(!sm.has_accounts().unwrap());
        assert_eq!(add(&sm, "root", AccountKind::User), Outcome::Done);
        assert!(sm.has_accounts().unwrap());
        let rules = sm.access_rules().unwrap();
        assert_eq!(
            rules,
            vec![rule("**", Subject::Account(name("root")), "admin")]
        );
        assert_eq!(
            add(&sm, "root", AccountKind::User),
            Outcome::Rejected(Rejection::AccountExists)
        );
        // A second user gets nothing by default.
        assert_eq!(add(&sm, "bob", AccountKind::User), Outcome::Done);
        assert_eq!(sm.access_rules().unwrap().len(), 1);
        let last_admin = Outcome::Rejected(Rejection::LastAdmin);
        assert_eq!(
            apply(&sm, Command::RemoveAccount { name: name("root") }),
            last_admin
        );
        assert_eq!(
            apply(
                &sm,
                Command::Revoke {
                    rule: rule("**", Subject::Account(name("root")), "admin")
                }
            ),
            last_admin
        );
        assert_eq!(apply(&sm, Command::SetRules { rules: vec![] }), last_admin);
        // Hand over, then the old admin may go, and its rules with it.
        let bob_admin = rule("**", Subject::Account(name("bob")), "admin");
        assert_eq!(
            apply(
                &sm,
                Command::Grant {
                    rule: bob_admin.clone()
                }
            ),
            Outcome::Done
        );
        assert_eq!(
            apply(&sm, Command::RemoveAccount { name: name("root") }),
            Outcome::Done
        );
        assert_eq!(sm.access_rules().unwrap(), vec![bob_admin]);
        // Removing every account switches access control off again.
        assert_eq!(
            apply(&sm, Command::RemoveAccount { name: name("bob") }),
            Outcome::Done
        );
        assert!(!sm.has_accounts().unwrap());
    }

    #[test]
    fn grants_merge_and_revokes_subtract() {
        let (_d, sm) = sm();
        add(&sm, "root", AccountKind::User);
        add(&sm, "ci", AccountKind::Robot);
        let ci = || Subject::Account(name("ci"));
        apply(
            &sm,
            Command::Grant {
                rule: rule("team/**", ci(), "pull"),
            },
        );
        apply(
            &sm,
            Command::Grant {
                rule: rule("team/**", ci(), "push"),
            },
        );
        let has = |sm: &StateMachine| {
            sm.access_rules()
                .unwrap()
                .into_iter()
                .find(|r| r.subject == ci())
                .map(|r| r.actions)
        };
        assert_eq!(has(&sm), Some(Actions::parse("pull,push").unwrap()));
        apply(
            &sm,
            Command::Revoke {
                rule: rule("team/**", ci(), "pull,push"),
            },
        );
        assert_eq!(has(&sm), None);
        assert_eq!(
            apply(
                &sm,
                Command::Revoke {
                    rule: rule("team/**", ci(), "pull")
                }
            ),
            Outcome::Rejected(Rejection::RuleUnknown)
        );
        assert_eq!(
            apply(
                &sm,
                Command::Grant {
                    rule: rule("x", Subject::Account(name("ghost")), "pull")
                }
            ),
            Outcome::Rejected(Rejection::AccountUnknown)
        );
    }

    #[test]
    fn a_recreated_account_gets_a_new_generation() {
        let (_d, sm) = sm();
        add(&sm, "root", AccountKind::User);
        add(&sm, "ci", AccountKind::Robot);
        let gen = |sm: &StateMachine| sm.account(&name("ci")).unwrap().map(|a| a.generation);
        assert_eq!(gen(&sm), Some(1));
        apply(
            &sm,
            Command::PutAccount {
                account: account("ci", AccountKind::Robot),
                replace: true,
            },
        );
        assert_eq!(gen(&sm), Some(2));
        apply(&sm, Command::RemoveAccount { name: name("ci") });
        assert_eq!(gen(&sm), None);
        add(&sm, "ci", AccountKind::Robot);
        assert_eq!(
            gen(&sm),
            Some(3),
            "tokens of the removed account stay invalid"
        );
        // A robot cannot be turned into a user by replacing it.
        assert_eq!(
            apply(
                &sm,
                Command::PutAccount {
                    account: account("ci", AccountKind::User),
                    replace: true,
                }
            ),
            Outcome::Rejected(Rejection::AccountUnknown)
        );
    }

    #[test]
    fn rotation_retires_then_drops_keys_and_snapshots_carry_access() {
        let (_d, sm) = sm();
        let k = |kid: &str, at: u64| SigningKey {
            kid: kid.into(),
            secret: vec![7; 32],
            created_ms: at,
            retired_ms: None,
        };
        let rotate = |key: SigningKey, drop: u64| Command::AddSigningKey {
            key,
            drop_retired_before_ms: drop,
        };
        apply(&sm, rotate(k("k1", 100), 0));
        apply(&sm, rotate(k("k2", 200), 0));
        let keys = sm.signing_keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].kid.as_str(), keys[0].retired_ms), ("k2", None));
        assert_eq!(
            (keys[1].kid.as_str(), keys[1].retired_ms),
            ("k1", Some(200))
        );
        apply(&sm, rotate(k("k3", 300), 250));
        let kids: Vec<String> = sm
            .signing_keys()
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(kids, vec!["k3", "k2"]);

        add(&sm, "root", AccountKind::User);
        let v = sm.access_version().unwrap();
        let mut snap = Vec::new();
        sm.export(&mut snap).unwrap();
        let (_d2, other) = super::sm();
        other.import(&mut snap.as_slice()).unwrap();
        assert_eq!(other.accounts().unwrap(), sm.accounts().unwrap());
        assert_eq!(other.access_rules().unwrap(), sm.access_rules().unwrap());
        assert_eq!(other.signing_keys().unwrap(), sm.signing_keys().unwrap());
        assert_eq!(other.access_version().unwrap(), v);
    }
}

#[test]
fn a_conditional_tag_update_applies_only_while_its_expectation_holds() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "app", "layer");
    let v1 = Tag::parse("v1").unwrap();
    let put = |m: &Digest| {
        Box::new(Command::PutManifest {
            repo: repo("app"),
            digest: m.clone(),
            record: Box::new(manifest(vec![layer.clone()], None)),
            tags: vec![v1.clone()],
            referrer: None,
        })
    };
    let (a, b, c) = (digest("a"), digest("b"), digest("c"));
    let create = |m: &Digest| Command::PutManifestIf {
        tag: v1.clone(),
        expect: TagExpect::Absent,
        put: put(m),
    };
    assert_eq!(sm.apply(&create(&a), b"m").unwrap(), Outcome::Done);
    assert_eq!(
        sm.apply(&create(&b), b"m").unwrap(),
        Outcome::Rejected(Rejection::TagPrecondition {
            current: Some(a.clone())
        })
    );
    // Two writers that both saw `a`: the first wins, the second finds `b`.
    let swap = |from: &Digest, to: &Digest| Command::PutManifestIf {
        tag: v1.clone(),
        expect: TagExpect::At(from.clone()),
        put: put(to),
    };
    assert_eq!(sm.apply(&swap(&a, &b), b"m").unwrap(), Outcome::Done);
    assert_eq!(
        sm.apply(&swap(&a, &c), b"m").unwrap(),
        Outcome::Rejected(Rejection::TagPrecondition {
            current: Some(b.clone())
        })
    );
    assert_eq!(sm.tag(&repo("app"), &v1).unwrap(), Some(b.clone()));
    assert!(
        sm.manifest_in_repo(&repo("app"), &c).unwrap().is_none(),
        "a refused update stores nothing"
    );
    let wrapped_wrong = Command::PutManifestIf {
        tag: v1.clone(),
        expect: TagExpect::Absent,
        put: Box::new(Command::SetClusterId { id: "x".into() }),
    };
    assert_eq!(
        sm.apply(&wrapped_wrong, b"m").unwrap(),
        Outcome::Rejected(Rejection::Malformed)
    );
}

#[test]
fn immutable_tags_never_move_or_go_and_snapshots_carry_the_rules() {
    let (_d, sm) = sm();
    let layer = put_blob(&sm, "prod/app", "layer");
    let put = |m: &Digest, tag: &str| Command::PutManifest {
        repo: repo("prod/app"),
        digest: m.clone(),
        record: Box::new(manifest(vec![layer.clone()], None)),
        tags: vec![Tag::parse(tag).unwrap()],
        referrer: None,
    };
    let (a, b) = (digest("a"), digest("b"));
    let rule = policy::ImmutableTags::new("prod/**", "v*").unwrap();
    assert_eq!(
        sm.apply(&Command::AddImmutableTags { rule: rule.clone() }, b"m")
            .unwrap(),
        Outcome::Done
    );
    // Created once, then never moved, deleted, or taken with its manifest.
    assert_eq!(sm.apply(&put(&a, "v1"), b"m").unwrap(), Outcome::Done);
    assert_eq!(
        sm.apply(&put(&a, "v1"), b"m").unwrap(),
        Outcome::Done,
        "same target"
    );
    let refused = Outcome::Rejected(Rejection::TagImmutable {
        tag: Tag::parse("v1").unwrap(),
        rule: rule.clone(),
    });
    assert_eq!(sm.apply(&put(&b, "v1"), b"m").unwrap(), refused);
    let untag = Command::DeleteTag {
        repo: repo("prod/app"),
        tag: Tag::parse("v1").unwrap(),
        now_ms: 2,
    };
    assert_eq!(sm.apply(&untag, b"m").unwrap(), refused);
    let delete = Command::DeleteManifest {
        repo: repo("prod/app"),
        digest: a.clone(),
        now_ms: 2,
    };
    assert_eq!(sm.apply(&delete, b"m").unwrap(), refused);
    assert_eq!(
        sm.tag(&repo("prod/app"), &Tag::parse("v1").unwrap())
            .unwrap(),
        Some(a.clone())
    );
    // Other tags move freely.
    assert_eq!(sm.apply(&put(&a, "latest"), b"m").unwrap(), Outcome::Done);
    assert_eq!(sm.apply(&put(&b, "latest"), b"m").unwrap(), Outcome::Done);

    let mut snap = Vec::new();
    sm.export(&mut snap).unwrap();
    let (_d2, other) = self::sm();
    other.import(&mut snap.as_slice()).unwrap();
    assert_eq!(other.immutable_tags().unwrap(), vec![rule.clone()]);

    assert_eq!(
        sm.apply(&Command::RemoveImmutableTags { rule: rule.clone() }, b"m")
            .unwrap(),
        Outcome::Done
    );
    assert_eq!(sm.apply(&put(&b, "v1"), b"m").unwrap(), Outcome::Done);
    assert_eq!(
        sm.apply(&Command::RemoveImmutableTags { rule }, b"m")
            .unwrap(),
        Outcome::Rejected(Rejection::RuleUnknown)
    );
}

#[test]
fn quotas_count_a_blob_once_per_namespace_and_refuse_what_does_not_fit() {
    use super::quota::{Quota, QuotaKind};
    let (_d, sm) = sm();
    put_blob(&sm, "team/old", "0123456789"); // 10 bytes before the quota
    let set = Command::SetQuota {
        quota: Quota::new("team", Some(25), Some(3)).unwrap(),
    };
    assert_eq!(sm.apply(&set, b"m").unwrap(), Outcome::Done);
    let used = |sm: &StateMachine| {
        let q = sm.quotas().unwrap();
        (q[0].bytes, q[0].repositories)
    };
    assert_eq!(used(&sm), (10, 1));
    // The same blob in another repository of the namespace: counted once.
    let link = Command::LinkBlob {
        repo: repo("team/two"),
        digest: digest("0123456789"),
        now_ms: 1,
    };
    assert_eq!(sm.apply(&link, b"m").unwrap(), Outcome::Done);
    assert_eq!(used(&sm), (10, 2));
    put_blob(&sm, "team/two", "abcdefghijklmno"); // 15: exactly full
    assert_eq!(used(&sm), (25, 2));
    let one_more = Command::PutBlob {
        repo: repo("team/two"),
        digest: digest("x"),
        size: 1,
        chunks: vec![ChunkRef {
            id: ChunkId::of(b"x"),
            len: 1,
        }],
        holders: vec![],
        now_ms: 1,
        written_since_ms: 1,
    };
    match sm.apply(&one_more, b"m").unwrap() {
        Outcome::Rejected(Rejection::QuotaExceeded {
            namespace,
            kind: QuotaKind::Bytes,
            limit: 25,
            used: 25,
            adding: 1,
        }) => {
            assert_eq!(namespace, "team")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        sm.blob(&digest("x")).unwrap().is_none(),
        "a refused blob leaves nothing"
    );
    // Outside the namespace nothing is counted or refused.
    put_blob(&sm, "teams/x", "x");
    put_blob(&sm, "other", "x");
    assert_eq!(used(&sm), (25, 2));
    // Unlinking from one repository keeps the bytes (still held by the
    // other); from both frees them.
    let unlink = |r: &str| Command::UnlinkBlob {
        repo: repo(r),
        digest: digest("0123456789"),
        now_ms: 2,
    };
    sm.apply(&unlink("team/old"), b"m").unwrap();
    assert_eq!(used(&sm).0, 25);
    sm.apply(&unlink("team/two"), b"m").unwrap();
    assert_eq!(used(&sm).0, 15);
    // A third repository fits the repository count; a fourth does not.
    put_blob(&sm, "team/three", "y");
    put_blob(&sm, "team/four", "z");
    let fifth = Command::LinkBlob {
        repo: repo("team/five"),
        digest: digest("y"),
        now_ms: 3,
    };
    assert!(
        matches!(
            sm.apply(&fifth, b"m").unwrap(),
            Outcome::Rejected(Rejection::QuotaExceeded {
                kind: QuotaKind::Repositories,
                limit: 3,
                ..
            })
        ),
        "{:?}",
        sm.quotas()
    );
    // Gone with its bookkeeping; and in a snapshot.
    let mut snap = Vec::new();
    sm.export(&mut snap).unwrap();
    let (_d2, other) = self::sm();
    other.import(&mut snap.as_slice()).unwrap();
    assert_eq!(other.quotas().unwrap(), sm.quotas().unwrap());
    let rm = Command::RemoveQuota {
        namespace: "team".into(),
    };
    assert_eq!(sm.apply(&rm, b"m").unwrap(), Outcome::Done);
    assert!(sm.quotas().unwrap().is_empty());
    assert_eq!(sm.apply(&fifth, b"m").unwrap(), Outcome::Done);
}

#[test]
fn retention_keeps_the_newest_the_recent_and_the_named_and_rechecks_in_apply() {
    use super::retention::RetentionRule;
    let (_d, sm) = sm();
    let d = put_blob(&sm, "ret/app", "layer");
    // t1 (oldest) .. t5 (newest), release-1 oldest of all, one manifest each.
    let push_as = |tag: &str, name: &str, at: u64| {
        let mut m = manifest(vec![d.clone()], None);
        m.created_ms = at;
        m.bytes = name.as_bytes().to_vec();
        let cmd = Command::PutManifest {
            repo: repo("ret/app"),
            digest: digest(name),
            record: Box::new(m),
            tags: vec![Tag::parse(tag).unwrap()],
            referrer: None,
        };
        assert_eq!(sm.apply(&cmd, b"m").unwrap(), Outcome::Done);
    };
    let push = |tag: &str, at: u64| push_as(tag, tag, at);
    push("release-1", 10);
    for i in 1..=5u64 {
        push(&format!("t{i}"), 100 * i);
    }
    let rule = RetentionRule {
        repositories: "ret/**".into(),
        keep_last: Some(2),
        keep_within_secs: None,
        keep_tags: Some("release-*".into()),
        untagged_after_secs: Some(0),
    };
    assert_eq!(
        sm.apply(&Command::SetRetention { rule: rule.clone() }, b"m")
            .unwrap(),
        Outcome::Done
    );
    let imm = super::policy::ImmutableTags::new("ret/*", "t1").unwrap();
    sm.apply(&Command::AddImmutableTags { rule: imm }, b"m")
        .unwrap();
    let c = sm.retention_candidates(1_000).unwrap();
    let names: Vec<&str> = c.tags[&repo("ret/app")]
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        names,
        ["t3", "t2"],
        "t4, t5 newest; release-1 named; t1 immutable"
    );
    // keep_within: everything pushed in the last 0.25 s of a clock at 0.6 s.
    let within = RetentionRule {
        keep_last: None,
        keep_within_secs: Some(0),
        ..rule.clone()
    };
    assert!(within.check().is_ok());
    // t2 moved meanwhile: the expiry leaves it; t3 goes.
    let expire = Command::ExpireTags {
        repo: repo("ret/app"),
        tags: c.tags[&repo("ret/app")].clone(),
        now_ms: 1_000,
    };
    push_as("t2", "t2-again", 900);
    assert_eq!(sm.apply(&expire, b"m").unwrap(), Outcome::Done);
    assert!(sm
        .tag(&repo("ret/app"), &Tag::parse("t3").unwrap())
        .unwrap()
        .is_none());
    assert!(sm
        .tag(&repo("ret/app"), &Tag::parse("t2").unwrap())
        .unwrap()
        .is_some());
    // t3's manifest, and t2's old one, are untagged now: past their
    // rule's delay (0 s).
    let c = sm.retention_candidates(2_000).unwrap();
    let mut untagged: Vec<Digest> = c.manifests.iter().map(|(_, d, _)| d.clone()).collect();
    untagged.sort();
    let mut want = vec![digest("t2"), digest("t3")];
    want.sort();
    assert_eq!(untagged, want);
    // Rules are replicated state (in snapshots) and can be removed.
    let mut snap = Vec::new();
    sm.export(&mut snap).unwrap();
    let (_d2, other) = self::sm();
    other.import(&mut snap.as_slice()).unwrap();
    assert_eq!(other.retention_rules().unwrap(), vec![rule]);
    let rm = Command::RemoveRetention {
        repositories: "ret/**".into(),
    };
    assert_eq!(sm.apply(&rm, b"m").unwrap(), Outcome::Done);
    assert!(sm.retention_candidates(2_000).unwrap().tags.is_empty());
    let bad = RetentionRule {
        repositories: "x".into(),
        keep_last: None,
        keep_within_secs: None,
        keep_tags: None,
        untagged_after_secs: None,
    };
    assert!(bad.check().is_err());
}

#[test]
fn replication_rules_and_mirrors_are_replicated_state_with_a_forward_cursor() {
    use super::replication::{MirrorRule, ReplicationRule};
    let (_d, sm) = sm();
    let rule = ReplicationRule {
        name: "to-eu".into(),
        target: "https://eu.example".into(),
        repositories: "prod/**".into(),
        tags: Some("v.*".into()),
        prefix: "mirror/".into(),
        deletes: true,
        username: Some("robot".into()),
        password: Some("secret".into()),
    };
    let put = Command::PutReplication {
        rule: rule.clone(),
        cursor: 0,
    };
    assert_eq!(sm.apply(&put, b"m").unwrap(), Outcome::Done);
    let advance = |index, reset| Command::AdvanceReplication {
        name: "to-eu".into(),
        index,
        reset,
        from: None,
    };
    sm.apply(&advance(40, false), b"m").unwrap();
    sm.apply(&advance(30, false), b"m").unwrap();
    assert_eq!(
        sm.replication_rules().unwrap(),
        vec![(rule.clone(), 40)],
        "never backwards"
    );
    sm.apply(&advance(0, true), b"m").unwrap();
    assert_eq!(
        sm.replication_rules().unwrap()[0].1,
        0,
        "a resync resets it"
    );
    assert_eq!(rule.masked().password.as_deref(), Some("********"));
    let bad = ReplicationRule {
        target: "ftp://x".into(),
        ..rule.clone()
    };
    assert_eq!(
        sm.apply(
            &Command::PutReplication {
                rule: bad,
                cursor: 0
            },
            b"m"
        )
        .unwrap(),
        Outcome::Rejected(Rejection::Malformed),
        "a bad rule is refused in apply, never an apply failure"
    );
    let mirror = MirrorRule {
        name: "hub".into(),
        upstream: "https://registry-1.docker.io".into(),
        prefix: "hub/".into(),
        upstream_prefix: "library/".into(),
        username: None,
        password: None,
        interval_secs: 300,
    };
    assert_eq!(
        mirror.upstream_repo("hub/alpine").as_deref(),
        Some("library/alpine")
    );
    assert_eq!(mirror.upstream_repo("hubx/alpine"), None);
    assert_eq!(mirror.upstream_repo("hub/"), None);
    sm.apply(
        &Command::PutMirror {
            rule: mirror.clone(),
        },
        b"m",
    )
    .unwrap();
    sm.apply(&advance(12, false), b"m").unwrap();
    let mut snap = Vec::new();
    sm.export(&mut snap).unwrap();
    let (_d2, other) = self::sm();
    other.import(&mut snap.as_slice()).unwrap();
    assert_eq!(other.replication_rules().unwrap(), vec![(rule, 12)]);
    assert_eq!(other.mirrors().unwrap(), vec![mirror]);
    assert_eq!(
        sm.apply(
            &Command::RemoveReplication {
                name: "to-eu".into()
            },
            b"m"
        )
        .unwrap(),
        Outcome::Done
    );
    assert!(matches!(
        sm.apply(&advance(50, false), b"m").unwrap(),
        Outcome::Rejected(Rejection::RuleUnknown)
    ));
}
