//! HTTPS on the registry port with certificates from `stowage cert`:
//! clients trusting the cluster CA get in over HTTP/2 and HTTP/1.1, others
//! fail the handshake; skopeo pushes and pulls trusting the CA through a
//! cert dir; SIGHUP swaps the certificate for new connections while an
//! open one keeps working, and bad files on SIGHUP keep the old one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{StatusCode, Version};
use stowage_cluster_tests::cluster::eventually;
use stowage_cluster_tests::process::{free_port, log_tail};

use crate::common::*;

/// Long enough for a loaded machine, short enough to fail a hung test.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `stowage cert ...`, failing the test with its output if it fails.
fn cert(args: &[&str]) -> String {
    let out = Command::new(bin()).arg("cert").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "stowage cert {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA in `dir` and node 1's certificate for 127.0.0.1 and localhost.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let d = dir.to_str().unwrap();
    cert(&["init", "--dir", d]);
    cert(&[
        "node",
        "--dir",
        d,
        "--id",
        "1",
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
    ]);
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("node-1.pem"),
        key: dir.join("node-1-key.pem"),
    }
}

/// A client trusting only `ca`; `h2` forces HTTP/2, else HTTP/1.1 only.
fn client_trusting(ca: &Path, h2: bool) -> reqwest::Client {
    install_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10));
    let b = if h2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

/// A node serving HTTPS with `pki`'s node certificate, its log in `log`.
fn tls_node(tmp: &Path, pki: &Pki, extra: &[&str]) -> (Node, PathBuf) {
    let log = tmp.join("node.log");
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        tmp.join("data").display().to_string(),
        "--tls-cert-file".into(),
        pki.cert.display().to_string(),
        "--tls-key-file".into(),
        pki.key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let listen = format!("127.0.0.1:{}", free_port());
    let node = Node::launch(bin(), &tmp.join("data"), args, &listen, Some(log.clone()));
    (node, log)
}

async fn get(c: &reqwest::Client, url: &str) -> Result<reqwest::Response, String> {
    c.get(url).send().await.map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn clients_trusting_the_ca_get_in_over_h2_and_http1_others_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let other = pki(&tmp.path().join("other"));
    let (node, _log) = tls_node(tmp.path(), &a, &[]);
    let url = format!("https://{}/v2/", node.host);

    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let r = get(&client_trusting(&a.ca, h2), &url).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), version);
    }
    // The DNS name on the certificate works too.
    let port = node.host.rsplit(':').next().unwrap();
    let r = get(
        &client_trusting(&a.ca, false),
        &format!("https://localhost:{port}/v2/"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A client trusting another CA fails the handshake, and the node keeps
    // accepting afterwards.
    let e = get(&client_trusting(&other.ca, true), &url)
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // So does plain HTTP against the TLS port.
    assert!(get(&client(), &format!("http://{}/v2/", node.host))
        .await
        .is_err());
    let r = get(&client_trusting(&a.ca, true), &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_token_realm_says_https() {
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let pw = tmp.path().join("admin-pw");
    std::fs::write(&pw, "tls-admin-password\n").unwrap();
    let (node, _log) = tls_node(
        tmp.path(),
        &a,
        &["--admin-password-file", pw.to_str().unwrap()],
    );
    let r = get(
        &client_trusting(&a.ca, false),
        &format!("https://{}/v2/", node.host),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!("realm=\"https://{}/token\"", node.host)),
        "{challenge}"
    );
}

#[test]
fn skopeo_pushes_and_pulls_trusting_the_ca_from_a_cert_dir() {
    if !tool_available("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let (node, _log) = tls_node(tmp.path(), &a, &["--chunk-size-bytes", "1048576"]);
    // skopeo (containers/image) reads CAs from `*.crt` files in the dir.
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&a.ca, certs.join("ca.crt")).unwrap();
    let certs = certs.to_str().unwrap();

    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    let digest = write_oci_layout(&src, &[data(11, 2 * 1024 * 1024 + 5), data(12, 300)]);
    let remote = format!("docker://{}/tls/app:v1", node.host);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        &format!("oci:{}:v1", src.display()),
        &remote,
    ]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-cert-dir",
        certs,
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_same_layout(&src, &back, &digest);

    // Without the CA skopeo refuses the node's certificate.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", &remote])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an untrusted certificate is refused");
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let b = pki(&tmp.path().join("next"));
    let (node, log) = tls_node(tmp.path(), &a, &[]);
    let url = format!("https://{}/v2/", node.host);

    // One HTTP/2 connection, opened before the reload and kept alive in
    // this client's pool.
    let old = client_trusting(&a.ca, true);
    assert_eq!(get(&old, &url).await.unwrap().status(), StatusCode::OK);

    std::fs::copy(&b.cert, &a.cert).unwrap();
    std::fs::copy(&b.key, &a.key).unwrap();
    assert!(node.signal("HUP"));
    eventually(
        "a new connection trusting only the new CA",
        LIMIT,
        || async {
            // A fresh client each time: a fresh connection, a fresh handshake.
            let r = get(&client_trusting(&b.ca, true), &url).await?;
            if r.status() == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("status {}", r.status()))
            }
        },
    )
    .await;
    assert!(node.is_running(), "SIGHUP did not stop the node");

    // New connections trusting only the old CA now fail, so this request
    // can only have gone over the connection opened before the reload.
    assert!(get(&client_trusting(&a.ca, true), &url).await.is_err());
    let r = get(&old, &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", log_tail(&log));
}

#[tokio::test]
async fn bad_files_on_sighup_keep_the_old_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let b = pki(&tmp.path().join("next"));
    let (node, log) = tls_node(tmp.path(), &a, &[]);
    let url = format!("https://{}/v2/", node.host);

    // A rotation caught half way: the new certificate with the old key.
    std::fs::copy(&b.cert, &a.cert).unwrap();
    assert!(node.signal("HUP"));
    eventually("the node to log the refused reload", LIMIT, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("still serving the previous certificate") {
            Ok(())
        } else {
            Err(log_tail(&log))
        }
    })
    .await;
    // Fresh clients, fresh connections: the old pair is still served.
    let r = get(&client_trusting(&a.ca, true), &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(get(&client_trusting(&b.ca, true), &url).await.is_err());

    // Garbage in both files: the same.
    std::fs::write(&a.cert, "garbage\n").unwrap();
    std::fs::write(&a.key, "garbage\n").unwrap();
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("still serving")
        .count();
    assert!(node.signal("HUP"));
    eventually("the second refused reload", LIMIT, || async {
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("still serving")
            .count();
        if n > before {
            Ok(())
        } else {
            Err(format!("{n} refusals logged"))
        }
    })
    .await;
    let r = get(&client_trusting(&a.ca, false), &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn a_node_with_half_a_pair_or_bad_files_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(&tmp.path().join("pki"));
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--tls-cert-file", a.cert.to_str().unwrap()]);
    assert!(e.contains("tls_key_file"), "{e}");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "garbage\n").unwrap();
    let e = run(&[
        "--tls-cert-file",
        garbage.to_str().unwrap(),
        "--tls-key-file",
        a.key.to_str().unwrap(),
    ]);
    assert!(e.contains("garbage.pem"), "{e}");
}

/// Three nodes with HTTPS on the registry port and mTLS between them: an
/// upload opened on node 1, continued through node 2 and finished through
/// node 3 (both forward to the owner over HTTPS, trusting the cluster CA)
/// is whole everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_forwards_uploads_to_their_owner_over_https() {
    use stowage_cluster_tests::cluster::Cluster;
    let tmp = tempfile::tempdir().unwrap();
    let a = pki(tmp.path());
    let extra = format!(
        "tls_cert_file = \"{c}\"\ntls_key_file = \"{k}\"\ncluster_tls_ca_file = \"{ca}\"\n\
         cluster_tls_cert_file = \"{c}\"\ncluster_tls_key_file = \"{k}\"\n",
        c = a.cert.display(),
        k = a.key.display(),
        ca = a.ca.display()
    );
    let cluster = Cluster::start(&["a", "b", "c"], &extra);
    let c = client_trusting(&a.ca, false);
    let url = |id: u64| cluster.url(id).replacen("http://", "https://", 1);
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
    let blob = data(21, 300_000);
    let digest = sha256(&blob);
    let r = c
        .post(format!("{}/v2/tls/app/blobs/uploads/", url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = c
        .patch(format!("{}{location}", url(2)))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", blob.len() - 1))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{location}{sep}digest={digest}", url(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    for id in 1..=3 {
        let got = c
            .get(format!("{}/v2/tls/app/blobs/{digest}", url(id)))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&got), digest, "node {id}");
    }
    // The admin CLI reaches an HTTPS node trusting the CA, and is refused
    // without it.
    let cli = |ca: Option<&Path>| {
        let mut cmd = Command::new(bin());
        cmd.args(["status", "--node", &url(2)])
            .env_remove("STOWAGE_CA_FILE");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = cli(Some(&a.ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("leader"));
    assert!(
        !cli(None).status.success(),
        "a CLI without the CA trusted an unknown certificate"
    );
}
