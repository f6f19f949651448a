//! Backups through a running node into a repository (a directory, and an
//! S3 server the test starts), restored with the `stowage` CLI alone into
//! fresh nodes: each snapshot's moment exactly, incremental bytes, the
//! archive's point in time, one repository put back, verify and prune,
//! encryption, and the bad inputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const MIB: usize = 1 << 20;
const BUCKET: &str = "stowage-backups";

/// A backup repository and what the CLI and the node need to reach it.
struct Repo {
    location: String,
    /// `KEY=VALUE` for the processes (the S3 settings).
    env: Vec<String>,
    /// The directory behind a directory repository.
    dir: Option<PathBuf>,
    s3: Option<S3Server>,
    _tmp: tempfile::TempDir,
}

/// An S3-compatible server (moto's, from PyPI) on a loopback port.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    fn start() -> Option<S3Server> {
        let port = stowage_cluster_tests::process::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = S3Server { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // moto takes unsigned requests: make the bucket.
        let url = format!("{}/{BUCKET}", server.endpoint);
        let made = blocking(|| {
            reqwest::blocking::Client::new()
                .put(url)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        made.then_some(server)
    }
}

fn dir_repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    Repo {
        location: dir.display().to_string(),
        env: Vec::new(),
        dir: Some(dir),
        s3: None,
        _tmp: tmp,
    }
}

/// A repository in a fresh S3 server, or `None` (said loudly) without one.
fn s3_repo(prefix: &str) -> Option<Repo> {
    let Some(server) = S3Server::start() else {
        println!("SKIPPED: no S3-compatible server (moto_server, `pip install 'moto[server]'`): S3 backup test not run");
        return None;
    };
    let env = vec![
        "AWS_ACCESS_KEY_ID=stowage-test".to_owned(),
        "AWS_SECRET_ACCESS_KEY=stowage-test".to_owned(),
        "AWS_REGION=us-east-1".to_owned(),
        format!("AWS_ENDPOINT={}", server.endpoint),
        "AWS_ALLOW_HTTP=true".to_owned(),
    ];
    Some(Repo {
        location: format!("s3://{BUCKET}/{prefix}"),
        env,
        dir: None,
        s3: Some(server),
        _tmp: tempfile::tempdir().unwrap(),
    })
}

impl Repo {
    /// `stowage ARGS` with the repository's environment; (ok, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().filter_map(|kv| kv.split_once('=')))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.run(args);
        assert!(ok, "stowage {args:?} failed: {err}{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// A node whose processes see the repository's environment.
    fn node(&self, data_dir: &Path, extra: &[&str]) -> Node {
        let mut prefix = vec!["env".to_owned()];
        prefix.extend(self.env.iter().cloned());
        let mut args = vec!["--data-dir".to_owned(), data_dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let listen = format!("127.0.0.1:{}", stowage_cluster_tests::process::free_port());
        Node::try_launch(bin(), prefix, data_dir, args, &listen, None).unwrap()
    }

    fn backup(&self, node: &Node) -> Value {
        let v = self.json(&[
            "backup",
            "create",
            "--to",
            &self.location,
            "--node",
            &node.url,
            "--json",
        ]);
        assert_eq!(v["state"], "done", "{v}");
        v["snapshot"].clone()
    }

    fn restore_dir(&self, args: &[&str], dir: &Path) -> Value {
        let mut a = vec!["restore", "--from", &self.location];
        a.extend_from_slice(args);
        let d = dir.display().to_string();
        a.extend_from_slice(&["--data-dir", &d, "--json"]);
        self.json(&a)
    }

    /// An object store client of the repository's S3 bucket.
    fn s3_client(&self) -> object_store::aws::AmazonS3 {
        let s3 = self.s3.as_ref().unwrap();
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(&s3.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("stowage-test")
            .with_secret_access_key("stowage-test")
            .build()
            .unwrap()
    }

    /// Every chunk object's key.
    async fn chunk_objects(&self) -> Vec<String> {
        use futures_util::TryStreamExt;
        use object_store::ObjectStore;
        match &self.dir {
            Some(dir) => walk(&dir.join("chunks"))
                .into_iter()
                .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                .collect(),
            None => {
                let prefix = self
                    .location
                    .trim_start_matches(&format!("s3://{BUCKET}/"))
                    .to_owned();
                let path = object_store::path::Path::from(format!("{prefix}/chunks"));
                let metas: Vec<_> = self
                    .s3_client()
                    .list(Some(&path))
                    .try_collect()
                    .await
                    .unwrap();
                metas.into_iter().map(|m| m.location.to_string()).collect()
            }
        }
    }

    async fn read_object(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        match &self.dir {
            Some(dir) => std::fs::read(dir.join(key)).unwrap(),
            None => {
                let path = object_store::path::Path::from(key);
                let r = self.s3_client().get(&path).await.unwrap();
                r.bytes().await.unwrap().to_vec()
            }
        }
    }

    async fn write_object(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        match &self.dir {
            Some(dir) => std::fs::write(dir.join(key), bytes).unwrap(),
            None => {
                let path = object_store::path::Path::from(key);
                self.s3_client().put(&path, bytes.into()).await.unwrap();
            }
        }
    }

    async fn delete_object(&self, key: &str) {
        use object_store::ObjectStoreExt;
        match &self.dir {
            Some(dir) => std::fs::remove_file(dir.join(key)).unwrap(),
            None => {
                let path = object_store::path::Path::from(key);
                self.s3_client().delete(&path).await.unwrap();
            }
        }
    }
}

/// Runs blocking HTTP off the test's async runtime (reqwest's blocking
/// client must not run inside one).
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A fresh node on a data directory a restore built.
fn start_restored(dir: &Path) -> Node {
    Node::spawn(bin(), dir, &[])
}

async fn manifest_status(url: &str, repo: &str, tag: &str) -> StatusCode {
    client()
        .get(format!("{url}/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
}

async fn catalog(url: &str) -> Vec<String> {
    let v: Value = client()
        .get(format!("{url}/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// The cluster's name, once its first leader has given it one.
async fn cluster_id(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client()
            .get(format!("{url}/_stowage/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["cluster_id"].as_str() {
            Some(id) if !id.is_empty() => return id.to_owned(),
            _ if Instant::now() > deadline => panic!("no cluster id: {v}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Push; back up; push more, delete one tag, overwrite another; back up
/// again. The second backup writes about what was new; each snapshot
/// restores into a fresh node as exactly its moment, blobs byte-identical.
async fn two_backups(repo: Repo) {
    let tmp = tempfile::tempdir().unwrap();
    let node = repo.node(&tmp.path().join("data"), &["--chunk-size-bytes", "1048576"]);
    let c = client();
    let u = &node.url;
    let (a, a_layers) = push_image(&c, u, "team/a", "v1", 1, &[3 * MIB + 17, 1000]).await;
    let (b, b_layers) = push_image(&c, u, "team/b", "v1", 2, &[2 * MIB]).await;
    let (c1, c1_layers) = push_image(&c, u, "team/c", "v1", 3, &[MIB + 5]).await;
    let skopeo = tool_available("skopeo");
    let layout = tmp.path().join("layout");
    let layout_digest = write_oci_layout(&layout, &[data(9, 2 * MIB + 3), data(10, 500)]);
    if skopeo {
        skopeo_push(&layout, "v1", &format!("{}/sk/img:v1", node.host));
    }
    let s1 = repo.backup(&node);
    let first_data = (3 * MIB + 17 + 1000 + 2 * MIB + MIB + 5) as u64;
    assert!(s1["new_bytes"].as_u64().unwrap() >= first_data, "{s1}");

    let (d, d_layers) = push_image(&c, u, "team/d", "v1", 4, &[2 * MIB]).await;
    let r = c
        .delete(format!("{u}/v2/team/b/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (c2, c2_layers) = push_image(&c, u, "team/c", "v1", 5, &[MIB]).await;
    let s2 = repo.backup(&node);
    // What was new: two layers, two configs, two manifests.
    let new_data = (2 * MIB + MIB) as u64;
    let written = s2["new_bytes"].as_u64().unwrap();
    assert!(
        written >= new_data,
        "second backup wrote {written}, new data {new_data}"
    );
    assert!(
        written <= new_data + new_data / 20 + 256 * 1024,
        "second backup wrote {written} bytes for {new_data} new: not incremental"
    );
    // d's layer (two chunks), c's new layer, and the two configs.
    assert_eq!(s2["new_chunks"], 5, "{s2}");
    let listed = repo.json(&["backup", "list", "--repo", &repo.location, "--json"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 2, "{listed}");
    let old_cluster = cluster_id(u).await;
    drop(node);

    // The first moment: a, b, c as first pushed; no d.
    let r1 = tmp.path().join("r1");
    let done = repo.restore_dir(&["--snapshot", s1["id"].as_str().unwrap()], &r1);
    assert_eq!(done["point"]["log_index"], s1["log_index"]);
    let n1 = start_restored(&r1);
    verify_image(&c, &n1.url, "team/a", "v1", &a, &a_layers).await;
    verify_image(&c, &n1.url, "team/b", "v1", &b, &b_layers).await;
    verify_image(&c, &n1.url, "team/c", "v1", &c1, &c1_layers).await;
    assert_eq!(
        manifest_status(&n1.url, "team/d", "v1").await,
        StatusCode::NOT_FOUND
    );
    let mut want = vec!["team/a", "team/b", "team/c"];
    if skopeo {
        want.insert(0, "sk/img");
        let back = tmp.path().join("back1");
        skopeo_pull(&format!("{}/sk/img:v1", n1.host), &back, "v1");
        assert_same_layout(&layout, &back, &layout_digest);
    }
    assert_eq!(catalog(&n1.url).await, want);
    let new_cluster = cluster_id(&n1.url).await;
    assert!(
        !new_cluster.is_empty() && new_cluster != old_cluster,
        "a restore is a new cluster"
    );
    // The restored node takes writes.
    push_image(&c, &n1.url, "team/e", "v1", 6, &[1000]).await;
    drop(n1);

    // The second: b's tag gone, c overwritten, d there.
    let r2 = tmp.path().join("r2");
    repo.restore_dir(&["--latest"], &r2);
    let n2 = start_restored(&r2);
    verify_image(&c, &n2.url, "team/a", "v1", &a, &a_layers).await;
    verify_image(&c, &n2.url, "team/c", "v1", &c2, &c2_layers).await;
    verify_image(&c, &n2.url, "team/d", "v1", &d, &d_layers).await;
    assert_eq!(
        manifest_status(&n2.url, "team/b", "v1").await,
        StatusCode::NOT_FOUND
    );
    if skopeo {
        let back = tmp.path().join("back2");
        skopeo_pull(&format!("{}/sk/img:v1", n2.host), &back, "v1");
        assert_same_layout(&layout, &back, &layout_digest);
    }
}

#[tokio::test]
async fn two_backups_restore_each_moment_and_the_second_writes_only_new_chunks() {
    two_backups(dir_repo()).await;
}

#[tokio::test]
async fn two_backups_in_s3_restore_each_moment() {
    if let Some(repo) = s3_repo("two-backups") {
        two_backups(repo).await;
    }
}

/// `verify --read-data` finds a flipped byte and a missing chunk; prune
/// keeps what retained snapshots need (verify passes after it) and removes
/// what only a forgotten one needed.
async fn verify_and_prune(repo: Repo) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        "gc_grace_secs = 0\nupload_expiry_secs = 0\nchunk_size_bytes = 1048576\n",
    )
    .unwrap();
    let node = repo.node(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = client();
    let u = &node.url;
    let (gone, _) = push_image(&c, u, "p/gone", "v1", 11, &[2 * MIB]).await;
    let (kept, kept_layers) = push_image(&c, u, "p/kept", "v1", 12, &[MIB + 1]).await;
    repo.backup(&node);
    let ok = repo.json(&[
        "backup",
        "verify",
        "--repo",
        &repo.location,
        "--read-data",
        "--json",
    ]);
    assert_eq!(ok["problems"].as_array().unwrap().len(), 0, "{ok}");
    assert_eq!(ok["chunks_read"], ok["chunks_needed"]);

    // p/gone goes from the cluster (and its blobs, through GC).
    let r = c
        .delete(format!("{u}/v2/p/gone/manifests/{gone}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.post(format!("{u}/_stowage/gc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    repo.backup(&node);

    // Damage: one chunk object gets a flipped byte, another goes.
    let mut objects = repo.chunk_objects().await;
    objects.sort();
    assert!(objects.len() >= 4, "{objects:?}");
    let flipped = objects[0].clone();
    let mut bytes = repo.read_object(&flipped).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let good = repo.read_object(&flipped).await;
    repo.write_object(&flipped, bytes).await;
    let missing = objects[1].clone();
    let missing_bytes = repo.read_object(&missing).await;
    repo.delete_object(&missing).await;
    let (ok, out, err) = repo.run(&[
        "backup",
        "verify",
        "--repo",
        &repo.location,
        "--read-data",
        "--json",
    ]);
    assert!(!ok, "verify must fail: {out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("missing")),
        "{problems:?}"
    );
    let flipped_name = flipped.rsplit('/').next().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("corrupt") && p.contains(flipped_name)),
        "{problems:?} {err}"
    );
    // Without --read-data only the missing chunk shows.
    let (_, out, _) = repo.run(&["backup", "verify", "--repo", &repo.location, "--json"]);
    let quick: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(quick["problems"].as_array().unwrap().len(), 1, "{quick}");
    repo.write_object(&flipped, good).await;
    repo.write_object(&missing, missing_bytes).await;

    // Keep the last snapshot: p/gone's chunks go, p/kept's stay.
    let before = repo.chunk_objects().await.len();
    let dry = repo.json(&[
        "backup",
        "prune",
        "--repo",
        &repo.location,
        "--keep-last",
        "1",
        "--grace-secs",
        "0",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(
        repo.chunk_objects().await.len(),
        before,
        "a dry run removes nothing"
    );
    let pruned = repo.json(&[
        "backup",
        "prune",
        "--repo",
        &repo.location,
        "--keep-last",
        "1",
        "--grace-secs",
        "0",
        "--json",
    ]);
    assert_eq!(pruned["chunks_removed"], dry["chunks_removed"]);
    assert_eq!(pruned["forgotten"].as_array().unwrap().len(), 1, "{pruned}");
    assert_eq!(
        pruned["chunks_removed"], 3,
        "p/gone's config and two layer chunks: {pruned}"
    );
    assert_eq!(repo.chunk_objects().await.len(), before - 3);
    let ok = repo.json(&[
        "backup",
        "verify",
        "--repo",
        &repo.location,
        "--read-data",
        "--json",
    ]);
    assert_eq!(ok["problems"].as_array().unwrap().len(), 0, "{ok}");
    let (refused, _, err) = repo.run(&["backup", "prune", "--repo", &repo.location]);
    assert!(!refused && err.contains("--keep-last"), "{err}");
    drop(node);
    let r = tmp.path().join("r");
    repo.restore_dir(&["--latest"], &r);
    let n = start_restored(&r);
    verify_image(&c, &n.url, "p/kept", "v1", &kept, &kept_layers).await;
    assert_eq!(
        manifest_status(&n.url, "p/gone", "v1").await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn verify_finds_damage_and_prune_keeps_what_snapshots_need() {
    verify_and_prune(dir_repo()).await;
}

#[tokio::test]
async fn verify_and_prune_in_s3() {
    if let Some(repo) = s3_repo("prune") {
        verify_and_prune(repo).await;
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Waits until the archive covers log index `index`.
fn wait_archived(repo: &Repo, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = repo.json(&["backup", "list", "--repo", &repo.location, "--json"]);
        if v["archive_last_index"].as_u64().unwrap_or(0) >= index {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the archive never reached {index}: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

async fn log_index_of_put(c: &reqwest::Client, u: &str, repo: &str, tag: &str, m: &[u8]) -> u64 {
    let r = put_manifest(c, u, repo, tag, OCI_MANIFEST, m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.headers()["stowage-log-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// With the continuous archive on, `restore --at` a time between two
/// snapshots rebuilds that moment: a blob and tag pushed after the first
/// snapshot are there, and a tag overwritten later still shows its old
/// target; a later time shows the new one.
async fn point_in_time(repo: Repo) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "backup_repo = {:?}\nbackup_archive = true\nbackup_archive_interval_secs = 1\n",
            repo.location
        ),
    )
    .unwrap();
    let node = repo.node(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = client();
    let u = &node.url;
    let (old, old_layers) = push_image(&c, u, "pit/app", "latest", 21, &[MIB + 3]).await;
    repo.backup(&node);
    // After the snapshot: a new image (in the archive only).
    let (extra, extra_layers) = push_image(&c, u, "pit/extra", "v1", 22, &[MIB / 2]).await;
    let config = push_blob(&c, u, "pit/app", b"{\"new\":1}").await;
    let layer = data(23, 700_000);
    let ld = push_blob(&c, u, "pit/app", &layer).await;
    let m = image_manifest(&(config, 9), &[(ld, layer.len())]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_overwrite = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let index = log_index_of_put(&c, u, "pit/app", "latest", &m).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after_overwrite = now_rfc3339();
    wait_archived(&repo, index);
    repo.backup(&node);
    drop(node);

    let r = tmp.path().join("r-before");
    let done = repo.restore_dir(&["--at", &before_overwrite], &r);
    assert!(
        done["point"]["rolled_forward"].as_u64().unwrap() > 0,
        "{done}"
    );
    let n = start_restored(&r);
    verify_image(&c, &n.url, "pit/app", "latest", &old, &old_layers).await;
    verify_image(&c, &n.url, "pit/extra", "v1", &extra, &extra_layers).await;
    drop(n);

    let r = tmp.path().join("r-after");
    repo.restore_dir(&["--at", &after_overwrite], &r);
    let n = start_restored(&r);
    verify_image(
        &c,
        &n.url,
        "pit/app",
        "latest",
        &sha256(&m),
        &[layer.clone()],
    )
    .await;
}

#[tokio::test]
async fn restore_at_a_time_between_snapshots_rolls_the_archive_forward() {
    point_in_time(dir_repo()).await;
}

#[tokio::test]
async fn restore_at_a_time_from_an_s3_archive() {
    if let Some(repo) = s3_repo("archive") {
        point_in_time(repo).await;
    }
}

/// One repository put back into the running node as it was: a deleted tag
/// (whose blobs GC took) comes back, an overwritten one points back, and
/// another repository changed since is left alone.
async fn one_repository_back(repo: Repo) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        "gc_grace_secs = 0\nupload_expiry_secs = 0\nchunk_size_bytes = 1048576\n",
    )
    .unwrap();
    let node = repo.node(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = client();
    let u = &node.url;
    let (v1, v1_layers) = push_image(&c, u, "mine/app", "v1", 31, &[2 * MIB + 1]).await;
    let (v2, v2_layers) = push_image(&c, u, "mine/app", "v2", 32, &[MIB]).await;
    let (other, other_layers) = push_image(&c, u, "theirs/app", "v1", 33, &[1000]).await;
    repo.backup(&node);
    // The accident: v1 deleted (and collected), v2 overwritten; meanwhile
    // someone else moves on.
    let r = c
        .delete(format!("{u}/v2/mine/app/manifests/{v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.post(format!("{u}/_stowage/gc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    push_image(&c, u, "mine/app", "v2", 34, &[1000]).await;
    let (other2, other2_layers) = push_image(&c, u, "theirs/app", "v1", 35, &[2000]).await;
    assert_eq!(
        manifest_status(u, "mine/app", "v1").await,
        StatusCode::NOT_FOUND
    );

    let done = repo.json(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--repository",
        "mine/app",
        "--into",
        u,
        "--json",
    ]);
    assert!(
        done["blobs_uploaded"].as_u64().unwrap() >= 1,
        "v1's blobs were collected: {done}"
    );
    verify_image(&c, u, "mine/app", "v1", &v1, &v1_layers).await;
    verify_image(&c, u, "mine/app", "v2", &v2, &v2_layers).await;
    verify_image(&c, u, "theirs/app", "v1", &other2, &other2_layers).await;
    // Under another name, next to the original.
    repo.json(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--repository",
        "theirs/app",
        "--as",
        "theirs/app-then",
        "--into",
        u,
        "--json",
    ]);
    verify_image(&c, u, "theirs/app-then", "v1", &other, &other_layers).await;
    verify_image(&c, u, "theirs/app", "v1", &other2, &other2_layers).await;
}

#[tokio::test]
async fn one_repository_is_put_back_into_a_running_node() {
    one_repository_back(dir_repo()).await;
}

#[tokio::test]
async fn one_repository_is_put_back_from_s3() {
    if let Some(repo) = s3_repo("one-repo") {
        one_repository_back(repo).await;
    }
}

/// With a key, nothing in the repository shows names or contents; the
/// repository says it is encrypted, refuses no key and another key, and a
/// repository without one says so in list and verify.
#[tokio::test]
async fn an_encrypted_repository_reveals_nothing_and_needs_its_key() {
    let repo = dir_repo();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("backup.key");
    let other = tmp.path().join("other.key");
    for k in [&key, &other] {
        let (ok, _, err) = repo.run(&["backup", "keygen", k.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = repo.run(&["backup", "keygen", key.to_str().unwrap()]);
    assert!(
        !ok && err.contains("exists"),
        "keygen never overwrites a key: {err}"
    );
    let node = Node::start(bin());
    let c = client();
    let layer = data(41, 300_000);
    let marker = &layer[1000..1064];
    let config = push_blob(&c, &node.url, "secret-project/app", b"{\"x\":1}").await;
    let ld = push_blob(&c, &node.url, "secret-project/app", &layer).await;
    let m = image_manifest(&(config, 7), &[(ld, layer.len())]);
    let r = put_manifest(&c, &node.url, "secret-project/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = repo.json(&[
        "backup",
        "create",
        "--to",
        &repo.location,
        "--key-file",
        key.to_str().unwrap(),
        "--node",
        &node.url,
        "--json",
    ]);
    assert_eq!(v["state"], "done", "{v}");
    for f in walk(repo.dir.as_ref().unwrap()) {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.display().to_string();
        assert!(!name.contains("secret-project"), "{name}");
        assert!(
            !bytes.windows(14).any(|w| w == b"secret-project"),
            "{name} shows a repository name"
        );
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "{name} shows layer bytes"
        );
    }
    let (ok, _, err) = repo.run(&["backup", "list", "--repo", &repo.location]);
    assert!(!ok && err.contains("encrypted"), "{err}");
    let (ok, _, err) = repo.run(&[
        "backup",
        "list",
        "--repo",
        &repo.location,
        "--key-file",
        other.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("another key"), "{err}");
    let listed = repo.json(&[
        "backup",
        "list",
        "--repo",
        &repo.location,
        "--key-file",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(listed["encrypted"], true);
    let verified = repo.json(&[
        "backup",
        "verify",
        "--repo",
        &repo.location,
        "--key-file",
        key.to_str().unwrap(),
        "--read-data",
        "--json",
    ]);
    assert_eq!(verified["encrypted"], true);
    assert_eq!(
        verified["problems"].as_array().unwrap().len(),
        0,
        "{verified}"
    );
    let r = tmp.path().join("r");
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--data-dir",
        r.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("encrypted") && !r.exists(), "{err}");
    repo.json(&[
        "restore",
        "--from",
        &repo.location,
        "--key-file",
        key.to_str().unwrap(),
        "--latest",
        "--data-dir",
        r.to_str().unwrap(),
        "--json",
    ]);
    let n = start_restored(&r);
    verify_image(
        &c,
        &n.url,
        "secret-project/app",
        "v1",
        &sha256(&m),
        &[layer.clone()],
    )
    .await;

    // Without a key: said in every list and verify.
    let plain = dir_repo();
    plain.backup(&node);
    for cmd in ["list", "verify"] {
        let (ok, _, err) = plain.run(&["backup", cmd, "--repo", &plain.location]);
        assert!(ok, "{err}");
        assert!(err.contains("NOT ENCRYPTED"), "{cmd}: {err}");
    }
    let v = plain.json(&["backup", "list", "--repo", &plain.location, "--json"]);
    assert_eq!(v["encrypted"], false);
}

/// A corrupt, truncated or foreign repository gets an error naming what is
/// wrong, and a restore never leaves a half-built data directory.
#[tokio::test]
async fn bad_repositories_get_clear_errors_and_no_half_built_directory() {
    let repo = dir_repo();
    let node = Node::start(bin());
    let c = client();
    push_image(&c, &node.url, "bad/app", "v1", 51, &[10_000]).await;
    let snap = repo.backup(&node);
    let dir = repo.dir.clone().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let not_repo = tmp.path().join("empty");
    std::fs::create_dir_all(&not_repo).unwrap();
    let (ok, _, err) = repo.run(&["backup", "list", "--repo", not_repo.to_str().unwrap()]);
    assert!(!ok && err.contains("not a backup repository"), "{err}");

    // Into a directory that has something in it: refused, left alone.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep-me"), b"x").unwrap();
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--data-dir",
        busy.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // A truncated state: named, and no data directory appears.
    let state = dir.join(format!("states/{}", snap["id"].as_str().unwrap()));
    let whole = std::fs::read(&state).unwrap();
    std::fs::write(&state, &whole[..whole.len() / 2]).unwrap();
    let target = tmp.path().join("restored");
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("states/"), "{err}");
    assert!(!target.exists(), "no half-built data directory");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "the temp directory is removed");
    std::fs::write(&state, &whole).unwrap();

    // A missing chunk fails the restore, with the chunk named.
    let chunk = walk(&dir.join("chunks")).pop().unwrap();
    let chunk_bytes = std::fs::read(&chunk).unwrap();
    std::fs::remove_file(&chunk).unwrap();
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--latest",
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("chunks/") && err.contains("missing"),
        "{err}"
    );
    assert!(!target.exists());
    std::fs::write(&chunk, chunk_bytes).unwrap();

    // Another format version.
    let config = dir.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let (ok, _, err) = repo.run(&["backup", "list", "--repo", &repo.location]);
    assert!(!ok && err.contains("version 99"), "{err}");
    std::fs::write(&config, text).unwrap();

    // Bad flags: a time that is not RFC 3339, a snapshot that is not there.
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--at",
        "yesterday",
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--snapshot",
        "ffffffff",
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no snapshot"), "{err}");
    let (ok, _, err) = repo.run(&[
        "restore",
        "--from",
        &repo.location,
        "--at",
        "2001-01-01T00:00:00Z",
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("oldest"), "{err}");
    // A second backup while one runs is refused with 409 by the node;
    // a repository URL the node cannot use is a 400 naming it.
    let r = c
        .post(format!("{}/_stowage/backup", node.url))
        .json(&serde_json::json!({"repo": "ftp://nowhere/x"}))
        .send()
        .await
        .unwrap();
    let (status, code) = json_code(r).await;
    // The job starts, then fails on the repository: the answer to the POST
    // is the job; its status says why.
    assert_eq!(status, StatusCode::OK, "{code}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = c
            .get(format!("{}/_stowage/backup", node.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["job"]["state"] == "failed" {
            assert!(
                v["job"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("ftp://nowhere/x"),
                "{v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `backup_interval_secs` makes the leader take snapshots on its own.
#[tokio::test]
async fn the_leader_takes_scheduled_backups() {
    let repo = dir_repo();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "backup_repo = {:?}\nbackup_interval_secs = 1\n",
            repo.location
        ),
    )
    .unwrap();
    let node = Node::spawn(
        bin(),
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = client();
    push_image(&c, &node.url, "sched/app", "v1", 61, &[10_000]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = repo.run(&["backup", "list", "--repo", &repo.location, "--json"]);
        let n = if ok {
            serde_json::from_str::<Value>(&out).unwrap()["snapshots"]
                .as_array()
                .unwrap()
                .len()
        } else {
            0
        };
        if n >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled backups: {out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The job shows in the node's status like every background job.
    let v: Value = c
        .get(format!("{}/_stowage/status", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs = v["workers"].as_array().unwrap();
    assert!(jobs.iter().any(|j| j["name"] == "backup"), "{v}");
}
