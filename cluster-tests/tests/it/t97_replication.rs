//! Push replication rules: a 3-node cluster pushes to a Stowage node and a
//! Distribution registry; what the repositories held is copied first, new
//! pushes, tag moves and (per rule) deletes follow; a target that is down
//! holds back only its rule and catches up when it returns; the cursor
//! survives a restart of every source node (nothing is copied again).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::oci::*;
use stowage_cluster_tests::process::Node;
use stowage_cluster_tests::tools::Distribution;

const LIMIT: Duration = Duration::from_secs(60);

async fn digest_of(url: &str, repo: &str, tag: &str) -> Option<String> {
    let r = client()
        .get(format!("{url}/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::OK).then(|| sha256(&futures_block(r)))
}

fn futures_block(r: reqwest::Response) -> Vec<u8> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(async { r.bytes().await.unwrap_or_default().to_vec() })
    })
}

async fn shows(url: &str, repo: &str, tag: &str, want: &str) {
    eventually(&format!("{url}/{repo}:{tag} is {want}"), LIMIT, || async {
        match digest_of(url, repo, tag).await {
            Some(d) if d == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn gone(url: &str, repo: &str, tag: &str) {
    eventually(&format!("{url}/{repo}:{tag} is gone"), LIMIT, || async {
        match digest_of(url, repo, tag).await {
            None => Ok(()),
            Some(d) => Err(d),
        }
    })
    .await;
}

async fn status(c: &reqwest::Client, url: &str, name: &str) -> Value {
    let v: Value = c
        .get(format!("{url}/_stowage/replication"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no rule {name}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_tag_moves_and_deletes_reach_the_targets_and_the_cursor_survives_restarts() {
    let mut cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(LIMIT).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Node::spawn(cluster.bin(), &target_dir.path().join("data"), &[]);
    let dist = Distribution::start();

    // Before any rule: copied when the rule is added.
    let (one, _) = push_image(&c, &u1, "app/one", "v1", 1, &[300_000]).await;
    let creds = target_dir.path().join("creds");
    std::fs::write(&creds, "robot:secret-password\n").unwrap();
    cluster.cli(&[
        "replication",
        "add",
        "to-stowage",
        "--target",
        &target.url,
        "--repositories",
        "app/**",
        "--deletes",
        "--creds-file",
        creds.to_str().unwrap(),
        "--node",
        &u2,
    ]);
    if let Some(d) = &dist {
        cluster.cli(&[
            "replication",
            "add",
            "to-dist",
            "--target",
            &d.url,
            "--repositories",
            "app/**",
            "--tags",
            "v.*",
            "--prefix",
            "mirror/",
            "--node",
            &u3,
        ]);
    }
    // The secret is kept, and shown masked, on every node.
    for url in [&u1, &u2, &u3] {
        let s = status(&c, url, "to-stowage").await;
        assert_eq!(s["rule"]["password"], "********", "{s}");
        assert_eq!(s["rule"]["username"], "robot");
    }
    shows(&target.url, "app/one", "v1", &one).await;

    // New pushes through another node, with a tag the second rule skips.
    let (two, _) = push_image(&c, &u3, "app/two", "v1", 2, &[5 << 20]).await;
    let (latest, _) = push_image(&c, &u3, "app/two", "latest", 3, &[1000]).await;
    let (other, _) = push_image(&c, &u1, "other/x", "v1", 4, &[1000]).await;
    shows(&target.url, "app/two", "v1", &two).await;
    shows(&target.url, "app/two", "latest", &latest).await;
    if let Some(d) = &dist {
        shows(&d.url, "mirror/app/one", "v1", &one).await;
        shows(&d.url, "mirror/app/two", "v1", &two).await;
        assert!(
            digest_of(&d.url, "mirror/app/two", "latest")
                .await
                .is_none(),
            "tags v.* only"
        );
    }
    assert!(
        digest_of(&target.url, "other/x", "v1").await.is_none(),
        "outside the rule: {other}"
    );

    // A tag moves; a manifest is deleted (the first rule follows deletes,
    // the second does not).
    let (two_b, _) = push_image(&c, &u2, "app/two", "v1", 5, &[2000]).await;
    shows(&target.url, "app/two", "v1", &two_b).await;
    let r = c
        .delete(format!("{u1}/v2/app/one/manifests/{one}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    gone(&target.url, "app/one", "v1").await;
    if let Some(d) = &dist {
        shows(&d.url, "mirror/app/two", "v1", &two_b).await;
        assert_eq!(
            digest_of(&d.url, "mirror/app/one", "v1").await.as_deref(),
            Some(one.as_str())
        );
    }

    // A layer the target already holds in another repository is mounted
    // there, not sent again.
    let worker = status(&c, &u1, "to-stowage").await["worker_node"]
        .as_u64()
        .unwrap();
    let (sa, _) = push_image(&c, &u1, "app/shared-a", "v1", 50, &[3 << 20]).await;
    shows(&target.url, "app/shared-a", "v1", &sa).await;
    let copied = status(&c, &cluster.url(worker), "to-stowage").await["bytes_copied"]
        .as_u64()
        .unwrap();
    let (sb, _) = push_image(&c, &u1, "app/shared-b", "v1", 50, &[3 << 20]).await;
    shows(&target.url, "app/shared-b", "v1", &sb).await;
    let more = status(&c, &cluster.url(worker), "to-stowage").await["bytes_copied"]
        .as_u64()
        .unwrap()
        - copied;
    assert!(
        more < 1 << 20,
        "the shared layer was sent again ({more} bytes)"
    );

    // A change the target refuses for good (Distribution deletes no tags)
    // is recorded and skipped: the rule does not stall behind it.
    if let Some(d) = &dist {
        cluster.cli(&[
            "replication",
            "add",
            "dist-del",
            "--target",
            &d.url,
            "--repositories",
            "app/tagdel",
            "--deletes",
            "--prefix",
            "del/",
            "--node",
            &u1,
        ]);
        let (a, _) = push_image(&c, &u1, "app/tagdel", "a", 60, &[1000]).await;
        shows(&d.url, "del/app/tagdel", "a", &a).await;
        let r = c
            .delete(format!("{u1}/v2/app/tagdel/manifests/a"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let (b, _) = push_image(&c, &u1, "app/tagdel", "b", 61, &[1000]).await;
        shows(&d.url, "del/app/tagdel", "b", &b).await;
        let s = status(&c, &cluster.url(worker), "dist-del").await;
        assert!(s["failures"]["app/tagdel:a"].is_string(), "{s}");
    }

    // The target goes away: pushes to the cluster go on; the rule says
    // what is wrong and catches up when the target is back.
    target.kill9();
    let (three, _) = push_image(&c, &u1, "app/three", "v1", 6, &[1000]).await;
    // The leader replicates, and its status has the errors.
    let worker = status(&c, &u1, "to-stowage").await["worker_node"]
        .as_u64()
        .unwrap();
    let wurl = cluster.url(worker);
    eventually("the rule reports its target down", LIMIT, || async {
        let s = status(&c, &wurl, "to-stowage").await;
        if s["last_error"].is_string() && s["lag_entries"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    target.restart();
    shows(&target.url, "app/three", "v1", &three).await;

    // Every source node restarts: the cursor is where it was. A tag
    // removed on the target behind the rule's back stays removed (nothing
    // is copied again); new pushes still arrive.
    let before = status(&c, &u2, "to-stowage").await["cursor"]
        .as_u64()
        .unwrap();
    let r = c
        .delete(format!("{}/v2/app/two/manifests/latest", target.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_all_ready(LIMIT).await;
    let after = status(&c, &u3, "to-stowage").await["cursor"]
        .as_u64()
        .unwrap();
    assert!(after >= before, "cursor {before} -> {after}");
    let (four, _) = push_image(&c, &cluster.url(2), "app/four", "v1", 7, &[1000]).await;
    shows(&target.url, "app/four", "v1", &four).await;
    assert!(
        digest_of(&target.url, "app/two", "latest").await.is_none(),
        "copied again after the restart"
    );

    // resync copies everything again (HEAD first); remove stops the rule.
    cluster.cli(&[
        "replication",
        "resync",
        "to-stowage",
        "--node",
        &cluster.url(1),
    ]);
    shows(&target.url, "app/two", "latest", &latest).await;
    cluster.cli(&[
        "replication",
        "remove",
        "to-stowage",
        "--node",
        &cluster.url(1),
    ]);
    let (five, _) = push_image(&c, &cluster.url(1), "app/five", "v1", 8, &[1000]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        digest_of(&target.url, "app/five", "v1").await.is_none(),
        "a removed rule copies nothing: {five}"
    );
}

/// The target's count of request body bytes it has read since it started.
async fn received(url: &str) -> u64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = "stowage_http_received_bytes_total";
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A 2 GiB layer on its way to the target when the target is killed:
/// the source goes on taking pushes, and when the target is back the
/// upload resumes from the offset it reports; only what the target had
/// not yet made durable is sent again (counted by the target's own
/// received-bytes counter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_layer_resumes_after_the_target_restarts_without_resending_finished_pieces() {
    use futures_util::stream;
    use sha2::{Digest as _, Sha256};
    const PIECE: usize = 1 << 20;
    const PIECES: u64 = 2048;
    const SIZE: u64 = PIECES * PIECE as u64;
    let cluster = Cluster::start(&["a"], "");
    cluster.wait_all_ready(LIMIT).await;
    let c = client();
    let u = cluster.url(1);
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Node::spawn(cluster.bin(), &target_dir.path().join("data"), &[]);

    // The big layer, streamed (never whole in memory), and its image.
    let base = data(99, PIECE);
    let piece = move |i: u64| {
        let mut p = base.clone();
        p[..8].copy_from_slice(&i.to_le_bytes());
        p
    };
    let mut h = Sha256::new();
    for i in 0..PIECES {
        h.update(piece(i));
    }
    let layer = format!("sha256:{}", hex(&h.finalize()));
    let r = c
        .post(format!("{u}/v2/big/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = format!("{u}{}", r.headers()["location"].to_str().unwrap());
    let p2 = piece.clone();
    let body = stream::iter((0..PIECES).map(move |i| Ok::<_, std::io::Error>(p2(i))));
    let r = c
        .patch(&loc)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.put(format!("{loc}?digest={layer}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let config = b"{\"big\":true}".to_vec();
    let cd = push_blob(&c, &u, "big/app", &config).await;
    let m = image_manifest(&(cd, config.len()), &[(layer.clone(), SIZE as usize)]);
    let r = put_manifest(&c, &u, "big/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    cluster.cli(&[
        "replication",
        "add",
        "big",
        "--target",
        &target.url,
        "--repositories",
        "big/**",
        "--node",
        &u,
    ]);
    // Kill the target about halfway through the layer.
    let before_kill = eventually(
        "the target has a good part of the layer",
        Duration::from_secs(300),
        || async {
            let n = received(&target.url).await;
            if n >= SIZE / 3 {
                Ok(n)
            } else {
                Err(n.to_string())
            }
        },
    )
    .await;
    target.kill9();
    // The source takes pushes while its target is down.
    let mut while_down = Vec::new();
    for i in 0..3u64 {
        let (d, _) = push_image(&c, &u, "big/small", &format!("t{i}"), 300 + i, &[1000]).await;
        while_down.push((format!("t{i}"), d));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    target.restart();
    shows(&target.url, "big/app", "v1", &sha256(&m)).await;
    for (t, d) in &while_down {
        shows(&target.url, "big/small", t, d).await;
    }
    let after = received(&target.url).await;
    let total = before_kill + after;
    // The upload resumes at the offset the target reports: what it had
    // made durable. Only the tail it had read but not yet recorded is sent
    // again (its pipeline's worth, tens of MiB); a restart from zero would
    // send the whole layer again.
    eprintln!(
        "the target read {before_kill} bytes before it was killed, {after} after ({} sent again)",
        total.saturating_sub(SIZE)
    );
    assert!(
        total < SIZE + before_kill / 2 && after < SIZE - before_kill / 2,
        "the target read {before_kill} bytes before it was killed and {after} after: \
         {total} in all for a {SIZE}-byte layer (finished pieces sent again); source log:\n{}",
        cluster.log_tail(1)
    );
    let r = c
        .head(format!("{}/v2/big/app/blobs/{layer}", target.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        SIZE.to_string()
    );
}
