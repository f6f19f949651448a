//! Access control against one real node: open until the first user, then
//! every request checked; Basic and the token flow; the attack cases of the
//! security issue (bad tokens, a revoked robot, mount and path tricks, the
//! last admin, failed-login limits, secrets kept out of the log: the walk in
//! `stowage_cluster_tests::attacks`, which cluster-tests t87 runs on three
//! nodes), a token for another service, and the bootstrap admin and CLI.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use stowage_cluster_tests::attacks;
use stowage_cluster_tests::process::free_port;

fn launch(tmp: &std::path::Path, toml: &str) -> (Node, std::path::PathBuf) {
    let log = tmp.join("node.log");
    let data_dir = tmp.join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = tmp.join("node.toml");
    std::fs::write(&config, toml).unwrap();
    let node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        &listen,
        Some(log.clone()),
    );
    (node, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_from_open_to_checked_with_every_attack_case() {
    let tmp = tempfile::tempdir().unwrap();
    // Short tokens, so one can expire within the test.
    let (node, log) = launch(
        tmp.path(),
        "token_ttl_secs = 2\nmax_failed_logins_per_minute = 5\n",
    );
    attacks::every_case(&attacks::Nodes::one(&node.url, log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_service_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, _) = launch(tmp.path(), "token_service = \"registry-a\"\n");
    let c = client();
    let r = c
        .post(format!("{}/_stowage/users", node.url))
        .json(&json!({"name": "root", "password": "root-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!(
            "{}/token?service=registry-a&scope=repository:x:pull",
            node.url
        ))
        .basic_auth("root", Some("root-password-1"))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let probe = async |url: &str| {
        c.get(format!("{url}/v2/x/tags/list"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(
        probe(&node.url).await.status(),
        StatusCode::NOT_FOUND,
        "accepted for its own service"
    );
    // The same node, the same replicated signing key, another service name:
    // the token's audience no longer matches.
    std::fs::write(
        tmp.path().join("node.toml"),
        "token_service = \"registry-b\"\n",
    )
    .unwrap();
    node.restart();
    let r = probe(&node.url).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("service=\"registry-b\""),);
    assert_eq!(json_code(r).await.1, "UNAUTHORIZED");
}

#[test]
fn a_node_on_a_public_address_needs_accounts_or_an_explicit_open_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let listen = format!("0.0.0.0:{}", free_port());
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_password_file")
            && err.contains("--allow-anonymous")
            && err.contains("stowage user add"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_admin_from_a_file_and_the_cli_manage_users_robots_and_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let pw = tmp.path().join("admin.pw");
    std::fs::write(&pw, "bootstrap-pass\n").unwrap();
    let port = free_port();
    // Reachable beyond loopback, which the password file makes allowed.
    let listen = format!("0.0.0.0:{port}");
    let _node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--admin-password-file".into(),
            pw.display().to_string(),
        ],
        &listen,
        None,
    );
    let url = format!("http://127.0.0.1:{port}");
    let c = client();
    assert_eq!(
        c.get(format!("{url}/v2/")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "checked from the first request"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .get(format!("{url}/v2/"))
            .basic_auth("admin", Some("bootstrap-pass"))
            .send()
            .await
            .unwrap()
            .status();
        if s == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin never worked: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("STOWAGE_NODE", &url)
            .env("STOWAGE_USER", "admin")
            .env("STOWAGE_PASSWORD", "bootstrap-pass")
            .env("STOWAGE_NEW_PASSWORD", "dev-password-1")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&["user", "add", "dev"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["user", "list"]);
    assert!(ok && out.contains("admin") && out.contains("dev"), "{out}");
    let (ok, token, err) = cli(&["robot", "create", "builder"]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("stw_"), "{token}");
    let rules = tmp.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\npattern = \"**\"\nsubject = \"admin\"\nactions = \"admin\"\n\n\
         [[rule]]\npattern = \"dev/**\"\nsubject = \"dev\"\nactions = [\"pull\", \"push\"]\n\n\
         [[rule]]\npattern = \"public/*\"\nsubject = \"anonymous\"\nactions = \"pull\"\n\n\
         [[rule]]\npattern = \"ci/**\"\nsubject = \"builder\"\nactions = \"push,pull\"\n",
    )
    .unwrap();
    let (ok, out, err) = cli(&["access", "apply", rules.to_str().unwrap(), "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("+ push on dev/** for dev")
            && out.contains("+ pull on public/* for anonymous"),
        "{out}"
    );
    let (ok, out, _) = cli(&["access", "list"]);
    assert!(
        ok && !out.contains("dev/**"),
        "a dry run changes nothing: {out}"
    );
    let (ok, out, err) = cli(&["access", "apply", rules.to_str().unwrap()]);
    assert!(ok && out.contains("applied"), "{out}{err}");
    let (ok, out, _) = cli(&["access", "apply", rules.to_str().unwrap()]);
    assert!(ok && out.contains("already match"), "{out}");
    // The rules hold: dev pushes to dev/, anyone pulls public/*, the robot
    // pushes to ci/.
    let d = push_blob_as(
        &c,
        &url,
        "dev/app",
        b"dev layer",
        Some(("dev", "dev-password-1")),
    )
    .await;
    assert_eq!(d.0, StatusCode::CREATED);
    assert_eq!(
        push_blob_as(&c, &url, "ci/app", b"ci layer", Some(("builder", &token)))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        push_blob_as(
            &c,
            &url,
            "public/x",
            b"pub",
            Some(("dev", "dev-password-1"))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        push_blob_as(
            &c,
            &url,
            "public/x",
            b"pub",
            Some(("admin", "bootstrap-pass"))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (s, t) = {
        let r = c
            .get(format!(
                "{url}/token?service=stowage&scope=repository:public/x:pull"
            ))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, StatusCode::OK);
    let anon = t["token"].as_str().unwrap();
    let pubd = sha256(b"pub");
    let r = c
        .get(format!("{url}/v2/public/x/blobs/{pubd}"))
        .bearer_auth(anon)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "anonymous pulls with an anonymous token"
    );
    // A password change: the old one stops working.
    let out = std::process::Command::new(bin())
        .args(["user", "passwd", "dev"])
        .env("STOWAGE_NODE", &url)
        .env("STOWAGE_USER", "admin")
        .env("STOWAGE_PASSWORD", "bootstrap-pass")
        .env("STOWAGE_NEW_PASSWORD", "dev-password-2")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        push_blob_as(&c, &url, "dev/app", b"x", Some(("dev", "dev-password-1")))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push_blob_as(&c, &url, "dev/app", b"x", Some(("dev", "dev-password-2")))
            .await
            .0,
        StatusCode::CREATED
    );
    let (ok, _, err) = cli(&["robot", "revoke", "builder"]);
    assert!(ok, "{err}");
    assert_eq!(
        push_blob_as(&c, &url, "ci/app", b"y", Some(("builder", &token)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Without credentials the CLI is refused the admin API.
    let out = std::process::Command::new(bin())
        .args(["user", "list"])
        .env("STOWAGE_NODE", &url)
        .env_remove("STOWAGE_USER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

async fn push_blob_as(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    blob: &[u8],
    user: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let d = sha256(blob);
    let mut r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(blob.to_vec());
    if let Some((u, p)) = user {
        r = r.basic_auth(u, Some(p));
    }
    json_code(r.send().await.unwrap()).await
}
