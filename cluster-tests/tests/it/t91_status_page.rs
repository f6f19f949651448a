//! The status page of a three-node cluster in a real browser: headless
//! Chromium loads `/_stowage/` from a follower, and its DOM shows the three
//! zones, every member, and the leader the cluster agrees on. Screenshots
//! at laptop and phone width are saved as test artifacts
//! (`target/test-artifacts/status-page-*.png`). And the same report as
//! `stowage status`: a table, `--json`, and `--watch`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::oci::{client, push_image};
use stowage_cluster_tests::tools::tool_available;

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_three_zones_and_the_leader() {
    if !tool_available("chromium") {
        return;
    }
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    push_image(&client(), &cluster.url(1), "page/app", "v1", 9, &[100_000]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let url = format!("{}/_stowage/", cluster.url(follower));
    let profile = tempfile::tempdir().unwrap();

    // The page renders what the node knows; right after start-up a member
    // may not have greeted yet, so look until all three are there.
    let dom = eventually(
        "the page shows three zones",
        Duration::from_secs(30),
        || {
            let out = chromium(profile.path(), &["--dump-dom", &url]);
            async move {
                let dom = String::from_utf8_lossy(&out.stdout).into_owned();
                let zones = ["a", "b", "c"]
                    .iter()
                    .filter(|z| dom.contains(&format!("class=\"zone\" data-zone=\"{z}\"")))
                    .count();
                if zones == 3 && dom.matches("class=\"member\"").count() == 3 {
                    Ok(dom)
                } else {
                    Err(format!(
                        "{zones} zones; stderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
            }
        },
    )
    .await;
    assert!(
        dom.contains(&format!("data-node=\"{leader}\" data-role=\"leader\"")),
        "the leader (node {leader}) is not marked:\n{dom}"
    );
    assert!(dom.contains(&format!("data-leader=\"{leader}\"")), "{dom}");
    assert_eq!(dom.matches("data-role=\"leader\"").count(), 1, "{dom}");
    for section in [
        "id=\"replicas\"",
        "id=\"workers\"",
        "id=\"errors\"",
        "id=\"disk\"",
    ] {
        assert!(dom.contains(section), "{section} missing:\n{dom}");
    }

    for (name, size) in [("laptop", "1280,1000"), ("phone", "390,1400")] {
        let file = artifacts().join(format!("status-page-{name}.png"));
        let _ = std::fs::remove_file(&file);
        let out = chromium(
            profile.path(),
            &[
                &format!("--screenshot={}", file.display()),
                &format!("--window-size={size}"),
                &url,
            ],
        );
        let png = std::fs::read(&file).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG"),
            "no screenshot at {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("screenshot: {}", file.display());
    }

    // The CLI: the table by zone with health and lag, JSON, and a watch.
    let bin = stowage_cluster_tests::process::stowage_bin();
    let node = cluster.url(follower);
    let table = eventually(
        "three members up in the table",
        Duration::from_secs(20),
        || {
            let out = Command::new(&bin)
                .args(["status", "--node", &node])
                .output()
                .unwrap();
            async move {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let up = text
                    .lines()
                    .filter(|l| l.split_whitespace().nth(2) == Some("up"))
                    .count();
                if up == 3 {
                    Ok(text)
                } else {
                    Err(text)
                }
            }
        },
    )
    .await;
    assert!(
        table.contains("HEALTH") && table.contains("LAG") && table.contains(&format!("{leader}*")),
        "{table}"
    );
    let out = Command::new(&bin)
        .args(["status", "--json", "--node", &node])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["leader"], leader);
    let mut watch = Command::new(&bin)
        .args(["status", "--watch", "1", "--node", &node])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two refreshes, read as they come (bounded: the reader gives up when
    // the watch is killed at the deadline).
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = 0;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Ctrl-C to stop") {
                seen += 1;
                if seen == 2 {
                    let _ = tx.send(());
                }
            }
        }
    });
    let refreshed = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        refreshed.is_ok(),
        "stowage status --watch 1 did not refresh twice"
    );

    // The leader's metrics show the followers' lag and every peer's
    // contact; a follower's show the same members.
    let text = client()
        .get(format!("{}/metrics", cluster.url(leader)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text.matches("stowage_raft_replication_lag_entries{")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("stowage_peer_last_contact_milliseconds{")
            .count(),
        2
    );
    assert!(text.contains("stowage_members 3"), "{text}");
    assert!(text.contains("stowage_raft_is_leader 1"), "{text}");
}
