//! Retention rules, replicated and evaluated by GC passes: the newest N
//! tags, tags matching a glob and immutable tags stay, the others go on
//! every node together with their then-untagged manifests; a dry run only
//! says what would go; repositories outside the rule are untouched.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

fn stowage(cluster: &Cluster, args: &[&str]) -> Value {
    let out = std::process::Command::new(cluster.bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stowage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn tags(c: &reqwest::Client, url: &str, repo: &str) -> Vec<String> {
    let v: Value = c
        .get(format!("{url}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_its_rule_says_and_removes_the_rest_everywhere() {
    // The rule's untagged delay (0 s) cannot undercut GC's own grace.
    let cluster = Cluster::start(&["a", "b", "c"], "gc_grace_secs = 0\n");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    stowage(
        &cluster,
        &[
            "retention",
            "set",
            "ret/**",
            "--keep-last",
            "2",
            "--keep-tags",
            "release-*",
            "--untagged-after",
            "0s",
            "--node",
            &u2,
            "--json",
        ],
    );
    stowage(
        &cluster,
        &["immutable", "add", "ret/*", "t1", "--node", &u3, "--json"],
    );
    let mut digests = std::collections::BTreeMap::new();
    for (i, tag) in ["release-1", "t1", "t2", "t3", "t4", "t5"]
        .iter()
        .enumerate()
    {
        let (d, _) = push_image(&c, &u1, "ret/app", tag, 8000 + i as u64, &[500]).await;
        digests.insert(*tag, d);
        push_image(&c, &u1, "other/app", tag, 8100 + i as u64, &[500]).await;
        // Distinct push times.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rule is replicated state: every node has it.
    for url in [&u1, &u2, &u3] {
        let v: Value = c
            .get(format!("{url}/_stowage/retention"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["rules"][0]["repositories"], "ret/**", "{v}");
        assert_eq!(v["rules"][0]["keep_last"], 2);
    }

    let dry = stowage(
        &cluster,
        &["gc", "run", "--dry-run", "--node", &u3, "--json"],
    );
    let mut expired: Vec<String> = dry["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    expired.sort();
    assert_eq!(expired, ["ret/app:t2", "ret/app:t3"], "{dry}");
    assert_eq!(
        tags(&c, &u1, "ret/app").await.len(),
        6,
        "a dry run removes nothing"
    );

    let done = stowage(&cluster, &["gc", "run", "--node", &u2, "--json"]);
    assert_eq!(done["expired_tags"], 2, "{done}");
    let want = ["release-1", "t1", "t4", "t5"];
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in [&u1, &u2, &u3] {
        loop {
            let now = tags(&c, url, "ret/app").await;
            if now == want {
                break;
            }
            assert!(Instant::now() < deadline, "{url}: {now:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The expired tags' manifests were collected too (untagged after 0 s).
        for gone in ["t2", "t3"] {
            loop {
                let r = c
                    .get(format!("{url}/v2/ret/app/manifests/{}", digests[gone]))
                    .header("Accept", OCI_MANIFEST)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::NOT_FOUND {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{url}: {gone}'s manifest is still there"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(
            tags(&c, url, "other/app").await.len(),
            6,
            "outside the rule"
        );
    }
    // A pushed-again tag is the newest: t2 comes back and t4 is now third.
    push_image(&c, &u3, "ret/app", "t2", 8200, &[500]).await;
    let dry = stowage(
        &cluster,
        &["gc", "run", "--dry-run", "--node", &u1, "--json"],
    );
    assert_eq!(dry["expired"], serde_json::json!(["ret/app:t4"]), "{dry}");
    stowage(
        &cluster,
        &["retention", "remove", "ret/**", "--node", &u1, "--json"],
    );
    let dry = stowage(
        &cluster,
        &["gc", "run", "--dry-run", "--node", &u2, "--json"],
    );
    assert_eq!(dry["expired_tags"], 0, "{dry}");
}
