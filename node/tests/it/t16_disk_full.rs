//! A full disk: on a small tmpfs, pushes fill the disk to the reserve and
//! then answer 507 with the OCI error JSON (uploads, their bodies, mounts,
//! manifests), while reads of what was pushed, listings and deletes keep
//! working; a node restarted on a disk filled to the last byte starts (it
//! releases its ballast), serves reads and refuses pushes; once the filler
//! is removed, pushes succeed again without a restart and the ballast is
//! made again. Needs root for the mount; without it the test says
//! `SKIPPED` and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use stowage_cluster_tests::process::free_port;

const MIB: usize = 1 << 20;
/// Small enough to fill in a few seconds, large enough for the node's own
/// files (sled, the log) beside the reserve, the ballast and the pushes.
const DISK: &str = "96m";
const MIN_FREE_BYTES: u64 = 16 << 20;
const BALLAST_BYTES: u64 = 8 << 20;
/// Every wait for a condition gives up after this.
const PATIENCE: Duration = Duration::from_secs(30);

/// A tmpfs mounted for the test, unmounted when dropped (declared before
/// the node, so the node is stopped first).
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn new(path: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            // One line, so the SKIPPED notice stays one line.
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(why.trim().lines().collect::<Vec<_>>().join(" "));
        }
        Ok(Mount { path: path.into() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it anyway, so no
            // mount outlives the test.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes zeros to `path` until the filesystem refuses, and returns how
/// many bytes it took.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler file");
    let zeros = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&zeros) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever the page cache still holds must land too (tmpfs has none,
    // but a flush failing with ENOSPC is the disk being full, as wanted).
    let _ = f.sync_all();
    written
}

async fn status(c: &reqwest::Client, url: &str) -> Value {
    c.get(format!("{url}/_stowage/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts `r` is a 507 with an OCI error body that says the disk is full.
async fn assert_disk_full(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE, "{what}");
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "{what}: content type"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["code"], "INSUFFICIENT_STORAGE",
        "{what}: {v}"
    );
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("disk full"), "{what}: {message}");
}

/// Every kind of push request, on a node that must refuse them all.
async fn assert_pushes_refused(c: &reqwest::Client, url: &str, layer_digest: &str) {
    let r = c
        .post(format!("{url}/v2/late/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_disk_full(r, "opening an upload").await;
    let small = data(77, 1000);
    let r = c
        .post(format!(
            "{url}/v2/late/blobs/uploads/?digest={}",
            sha256(&small)
        ))
        .body(small)
        .send()
        .await
        .unwrap();
    assert_disk_full(r, "a monolithic push").await;
    let r = c
        .post(format!(
            "{url}/v2/late/blobs/uploads/?mount={layer_digest}&from=app"
        ))
        .send()
        .await
        .unwrap();
    assert_disk_full(r, "a mount").await;
    let m = image_manifest(&(layer_digest.to_owned(), 1), &[]);
    let r = try_put_manifest(c, url, "app", "late", OCI_MANIFEST, &m)
        .await
        .unwrap();
    assert_disk_full(r, "a manifest push").await;
}

#[tokio::test]
async fn a_full_disk_refuses_pushes_with_507_serves_reads_restarts_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = match Mount::new(&tmp.path().join("disk")) {
        Ok(m) => m,
        Err(e) => {
            println!("SKIPPED: t16_disk_full needs to mount a tmpfs (run as root): {e}");
            return;
        }
    };
    let data_dir = mount.path.join("data");
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        // Deleted blobs' chunk files go at the next collection pass (a
        // grace and a lease of 0 and 1 s instead of a day).
        format!(
            "min_free_bytes = {MIN_FREE_BYTES}\nballast_bytes = {BALLAST_BYTES}\n\
             gc_grace_secs = 0\nupload_expiry_secs = 1\n"
        ),
    )
    .unwrap();
    let log = tmp.path().join("node.log");
    let mut node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        &format!("127.0.0.1:{}", free_port()),
        Some(log.clone()),
    );
    let c = client();
    let url = node.url.clone();
    let _log = LogOnFailure(log);

    // With room, the ballast is made and pushes work.
    let s = status(&c, &url).await;
    assert_eq!(s["disk"]["read_only"], false, "{s}");
    assert_eq!(s["disk"]["ballast_bytes"], BALLAST_BYTES, "{s}");
    assert_eq!(s["disk"]["min_free_bytes"], MIN_FREE_BYTES, "{s}");
    let (app, app_layers) = push_image(&c, &url, "app", "v1", 1, &[MIB, 3 * MIB]).await;
    // A session opened while there is room, to be continued when full.
    let r = c
        .post(format!("{url}/v2/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let session = format!("{url}{}", r.headers()["location"].to_str().unwrap());

    // Push 6 MiB blobs until the node refuses: it must say 507, never 400
    // or 500, whether it refuses before the body or in the middle of it.
    // The disk holds fewer than 96 / 6 of them.
    let mut pushed = Vec::new();
    let mut refused = false;
    for i in 0..16u64 {
        let blob = data(1000 + i, 6 * MIB);
        let d = sha256(&blob);
        let r = c
            .post(format!("{url}/v2/fill/blobs/uploads/?digest={d}"))
            .body(blob)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => pushed.push(d),
            Ok(r) => {
                assert_disk_full(r, &format!("push {i} onto a filling disk")).await;
                refused = true;
                break;
            }
            // A refused body is read to its end first (it is under the
            // node's bound for that), so the answer always arrives.
            Err(e) => panic!("push {i} onto a filling disk got no answer: {e}"),
        }
    }
    assert!(refused, "the disk never filled");
    assert!(!pushed.is_empty(), "no push fitted at all");

    // Full: every push is refused, before any byte or log entry is taken.
    let s = status(&c, &url).await;
    assert_eq!(s["disk"]["read_only"], true, "{s}");
    let free = s["disk"]["free_bytes"].as_u64().unwrap();
    assert!(free < MIN_FREE_BYTES, "{s}");
    assert_pushes_refused(&c, &url, &sha256(&app_layers[0])).await;
    let r = c
        .patch(&session)
        .header("Content-Type", "application/octet-stream")
        .body(data(5, 1000))
        .send()
        .await
        .unwrap();
    assert_disk_full(r, "a PATCH to a session opened before").await;

    // Reads keep working: manifests, blobs, tags, catalog.
    verify_image(&c, &url, "app", "v1", &app, &app_layers).await;
    let r = c
        .head(format!("{url}/v2/fill/blobs/{}", pushed[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{url}/v2/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{url}/v2/_catalog")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Deletes are how space is freed, and are taken.
    let r = c
        .delete(format!("{url}/v2/fill/blobs/{}", pushed[pushed.len() - 1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Restart on a disk filled to the last byte: the node gives its
    // ballast back, starts, serves reads, refuses pushes.
    node.terminate();
    let filler = mount.path.join("filler");
    fill(&filler);
    if let Err(e) = node.try_restart() {
        panic!("the node did not start on a full disk: {e}");
    }
    let url = node.url.clone();
    // The old process's pooled connections are gone.
    let c = client();
    let s = status(&c, &url).await;
    assert_eq!(s["disk"]["read_only"], true, "{s}");
    assert_eq!(
        s["disk"]["ballast_bytes"], 0,
        "the ballast was released: {s}"
    );
    assert!(!data_dir.join("ballast").exists());
    verify_image(&c, &url, "app", "v1", &app, &app_layers).await;
    assert_pushes_refused(&c, &url, &sha256(&app_layers[0])).await;

    // Space back: pushes are taken again at once, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let (later, later_layers) = push_image(&c, &url, "app", "v2", 2, &[2 * MIB]).await;
    verify_image(&c, &url, "app", "v2", &later, &later_layers).await;
    let s = status(&c, &url).await;
    assert_eq!(s["disk"]["read_only"], false, "{s}");

    // Deleting what filled the disk frees it (a collection pass removes
    // the chunk files), and then the ballast is made again.
    for d in &pushed[..pushed.len() - 1] {
        let r = c
            .delete(format!("{url}/v2/fill/blobs/{d}"))
            .send()
            .await
            .unwrap();
        // 404: the collection pass at restart took it already (its lease
        // is 1 s and no manifest needs it).
        assert!(
            [StatusCode::ACCEPTED, StatusCode::NOT_FOUND].contains(&r.status()),
            "{}",
            r.status()
        );
    }
    wait_for("the ballast to be made again", async || {
        let r = c.post(format!("{url}/_stowage/gc")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        status(&c, &url).await["disk"]["ballast_bytes"] == BALLAST_BYTES
    })
    .await;
    verify_image(&c, &url, "app", "v1", &app, &app_layers).await;
    verify_image(&c, &url, "app", "v2", &later, &later_layers).await;
    drop(node);
    drop(mount);
}

/// Prints the node's log if the test fails.
struct LogOnFailure(PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("the node's log:\n{log}");
        }
    }
}
