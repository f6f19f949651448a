//! The README's "Three nodes with TLS and access control, from nothing",
//! step by step: a CA and one certificate per node from `stowage cert`, a
//! bootstrap admin password file, HTTPS on the registry port and mTLS on the
//! cluster port, then users, a rule and a robot made with the CLI through
//! different nodes, and skopeo pushing with a user's password to node 1 and
//! pulling with the robot's token from node 3, trusting only the CA.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stowage_cluster_tests::cluster::{eventually, Cluster};
use stowage_cluster_tests::oci::{assert_same_layout, data, install_crypto, write_oci_layout};
use stowage_cluster_tests::process::stowage_bin;
use stowage_cluster_tests::tools::{skopeo, tool_available};

const ADMIN_PW: &str = "admin-from-a-file";
const ALICE_PW: &str = "alice-password-1";

fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("stowage runs");
    assert!(
        out.status.success(),
        "stowage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_tls_and_access_control_from_nothing() {
    if !tool_available("skopeo") {
        return;
    }
    let bin = stowage_bin();
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let d = pki.to_str().unwrap();

    // 1. The cluster CA and one certificate per node.
    run(&bin, &["cert", "init", "--dir", d], &[]);
    for id in ["1", "2", "3"] {
        run(
            &bin,
            &[
                "cert",
                "node",
                "--dir",
                d,
                "--id",
                id,
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
            ],
            &[],
        );
    }
    // 2. The first admin's password, in a file only the node reads.
    let pw = tmp.path().join("admin.pw");
    std::fs::write(&pw, format!("{ADMIN_PW}\n")).unwrap();

    // 3. Each node's config: HTTPS and mTLS with its own pair, the CA, the
    // bootstrap admin.
    let cluster = Cluster::start_each(&["a", "b", "c"], |id| {
        format!(
            "tls_cert_file = \"{d}/node-{id}.pem\"\ntls_key_file = \"{d}/node-{id}-key.pem\"\n\
             cluster_tls_ca_file = \"{d}/ca.pem\"\ncluster_tls_cert_file = \"{d}/node-{id}.pem\"\n\
             cluster_tls_key_file = \"{d}/node-{id}-key.pem\"\nadmin_password_file = \"{}\"\n",
            pw.display()
        )
    });
    let url = |id: u64| cluster.url(id).replacen("http://", "https://", 1);
    let ca = pki.join("ca.pem");
    install_crypto();
    let pem = std::fs::read(&ca).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    for id in 1..=3 {
        eventually(
            &format!("node {id} ready over HTTPS"),
            Duration::from_secs(60),
            || {
                let (c, u) = (c.clone(), url(id));
                async move {
                    let r = c
                        .get(format!("{u}/readyz"))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        Err(r.status().to_string())
                    }
                }
            },
        )
        .await;
    }
    // Closed from the start: the password file made the admin.
    let r = c.get(format!("{}/v2/", url(2))).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);

    // 4. Accounts and a rule with the CLI, each through another node.
    let ca_s = ca.to_str().unwrap();
    let admin = |node: u64, args: &[&str], extra: &[(&str, &str)]| {
        let u = url(node);
        let mut env = vec![
            ("STOWAGE_NODE", u.as_str()),
            ("STOWAGE_CA_FILE", ca_s),
            ("STOWAGE_USER", "admin"),
            ("STOWAGE_PASSWORD", ADMIN_PW),
        ];
        env.extend_from_slice(extra);
        run(&bin, args, &env)
    };
    admin(
        1,
        &["user", "add", "alice"],
        &[("STOWAGE_NEW_PASSWORD", ALICE_PW)],
    );
    admin(
        2,
        &["access", "grant", "team-a/**", "alice", "pull,push"],
        &[],
    );
    let robot = admin(3, &["robot", "create", "ci"], &[]).trim().to_owned();
    assert!(robot.starts_with("stw_"), "{robot}");
    admin(1, &["access", "grant", "team-a/**", "ci", "pull"], &[]);
    let list = admin(2, &["access", "list"], &[]);
    assert!(
        list.contains("team-a/**") && list.contains("alice"),
        "{list}"
    );

    // 5. skopeo trusts the CA (a directory holding ca.crt): alice pushes to
    // node 1, the robot pulls from node 3.
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let certs = certs.to_str().unwrap();
    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    let digest = write_oci_layout(&src, &[data(31, 1_500_000), data(32, 400)]);
    let host = |id: u64| url(id).trim_start_matches("https://").to_owned();
    eventually("alice pushes to node 1", Duration::from_secs(20), || {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--preserve-digests",
                "--dest-cert-dir",
                certs,
                "--dest-creds",
                &format!("alice:{ALICE_PW}"),
                &format!("oci:{}:v1", src.display()),
                &format!("docker://{}/team-a/app:v1", host(1)),
            ])
            .output()
            .unwrap();
        async move {
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        }
    })
    .await;
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-cert-dir",
        certs,
        "--src-creds",
        &format!("ci:{robot}"),
        &format!("docker://{}/team-a/app:v1", host(3)),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_same_layout(&src, &back, &digest);

    // Nobody else gets in: no credentials, the robot pushing, alice outside
    // her rule.
    let refused = |args: &[&str]| {
        let out = Command::new("skopeo").args(args).output().unwrap();
        assert!(!out.status.success(), "skopeo {args:?} was let in");
    };
    refused(&[
        "inspect",
        "--raw",
        "--cert-dir",
        certs,
        &format!("docker://{}/team-a/app:v1", host(2)),
    ]);
    refused(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &format!("ci:{robot}"),
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/team-a/other:v1", host(2)),
    ]);
    refused(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        &format!("alice:{ALICE_PW}"),
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/team-b/app:v1", host(3)),
    ]);
}
