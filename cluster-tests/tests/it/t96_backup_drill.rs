//! Backups used as an operator would: the out-of-region drill (all three
//! nodes and their data gone, a new cluster rebuilt from the backup
//! repository alone and grown back to three zones by repair), and backups
//! taken while pushes, deletes and garbage collection run, each restored
//! into a node of its own and read back whole.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use stowage_cluster_tests::cluster::{eventually, free_port, Cluster};
use stowage_cluster_tests::oci::*;
use stowage_cluster_tests::process::{log_tail, stowage_bin, Node};
use stowage_cluster_tests::tools::{skopeo_pull, skopeo_push, tool_available};

const CHUNK: usize = 64 * 1024;
/// Small chunks: every layer is several chunks, so placement and repair
/// have something to spread.
const CHUNK_TOML: &str = "chunk_size_bytes = 65536\n";
/// How long one CLI command (a backup, a restore) may take before the test
/// fails instead of hanging.
const CLI_LIMIT: Duration = Duration::from_secs(180);
/// How long a node gets to become ready, a member, or whole again.
const NODE_LIMIT: Duration = Duration::from_secs(120);

/// Runs `stowage <args>` and returns its stdout, or why it failed (its exit
/// status and stderr, or that it outlived `CLI_LIMIT`, when it is killed).
async fn stowage(args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(stowage_bin());
    cmd.args(args).kill_on_drop(true);
    match tokio::time::timeout(CLI_LIMIT, cmd.output()).await {
        Err(_) => Err(format!(
            "stowage {args:?} still running after {CLI_LIMIT:?}"
        )),
        Ok(Err(e)) => Err(format!("stowage {args:?} did not run: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "stowage {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// `stowage <args> --json`, parsed; fails the test if the command fails.
async fn stowage_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = stowage(&all).await.unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stowage {args:?} printed {out:?}: {e}"))
}

/// Takes a backup into `repo` through `node`; returns the snapshot the job
/// recorded and how long the node's job ran (from its `started_ms` and
/// `finished_ms`; the command takes longer, polling it).
async fn backup_create(repo: &str, node: &str) -> Result<(Value, Duration), String> {
    let started = Instant::now();
    let out = stowage(&["backup", "create", "--to", repo, "--node", node, "--json"]).await;
    let took = started.elapsed();
    let out = out.map_err(|e| format!("after {took:?}: {e}"))?;
    let job: Value =
        serde_json::from_str(&out).map_err(|e| format!("backup create printed {out:?}: {e}"))?;
    if job["state"] != "done" || !job["snapshot"].is_object() {
        return Err(format!("after {took:?} the job is {job}"));
    }
    let ran_ms = job["finished_ms"]
        .as_u64()
        .zip(job["started_ms"].as_u64())
        .map_or(0, |(f, s)| f.saturating_sub(s));
    Ok((job["snapshot"].clone(), Duration::from_millis(ran_ms)))
}

/// The cluster id a node reports, once it has one.
async fn cluster_id_of(url: &str) -> String {
    let c = client();
    let status = format!("{url}/_stowage/status");
    eventually("the node reports a cluster id", NODE_LIMIT, || {
        let (c, status) = (c.clone(), status.clone());
        async move {
            let s: Value = c
                .get(&status)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            s["cluster_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or(format!("cluster_id is {}", s["cluster_id"]))
        }
    })
    .await
}

/// Whether node `via` lists exactly `want` as voters.
async fn voters(cluster: &Cluster, via: u64, want: &[u64]) -> Result<(), String> {
    let s = cluster.status(via).await.ok_or("no status")?;
    let mut v: Vec<u64> = s["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    (v == want).then_some(()).ok_or(format!("voters are {v:?}"))
}

/// Node `id` says every chunk has its copies; if not, what every node's
/// repair reports.
async fn whole_again(cluster: &Cluster, id: u64) -> Result<(), String> {
    let Err(why) = cluster.replication_healthy(id).await else {
        return Ok(());
    };
    let mut out = format!("node {id}: {why}");
    for n in cluster.running() {
        let s = cluster.status(n).await.unwrap_or_default();
        let repair = s["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == "repair")
            .cloned()
            .unwrap_or_default();
        out.push_str(&format!(
            "\nnode {n}: chunks {} repair {repair}",
            s["chunks"]
        ));
    }
    Err(out)
}

/// An image pushed with skopeo from an OCI layout.
struct LayoutImage {
    repo: String,
    layout: std::path::PathBuf,
    digest: String,
}

/// An image pushed over the API: repository, tag, digest, layers.
type ApiImage = (String, String, String, Vec<Vec<u8>>);

/// Node `id` serves every image byte for byte: skopeo pulls compared with
/// the layouts they were pushed from, and the API images read back.
async fn serves_everything(
    cluster: &Cluster,
    id: u64,
    layouts: &[LayoutImage],
    api: &[ApiImage],
    scratch: &Path,
    round: &str,
) {
    for (i, img) in layouts.iter().enumerate() {
        let back = scratch.join(format!("pull-{round}-n{id}-{i}"));
        skopeo_pull(
            &format!("{}/{}:v1", cluster.host(id), img.repo),
            &back,
            "v1",
        );
        assert_same_layout(&img.layout, &back, &img.digest);
    }
    let c = client();
    for (repo, tag, digest, layers) in api {
        verify_image(&c, &cluster.url(id), repo, tag, digest, layers).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_region_drill_rebuilds_three_zones_from_the_repository_alone() {
    if !tool_available("skopeo") {
        return;
    }
    // Layouts, pulls and the backup repository live outside every node's
    // data directory.
    let scratch = tempfile::tempdir().expect("tempdir");
    let repo = scratch.path().join("backup-repo").display().to_string();
    let mut cluster = Cluster::start(&["a", "b", "c"], CHUNK_TOML);
    cluster.wait_all_ready(NODE_LIMIT).await;
    let c = client();

    let mut layouts = Vec::new();
    for i in 0..3u64 {
        let layout = scratch.path().join(format!("layout{i}"));
        let layers = vec![
            data(96_000 + i, 2 * CHUNK + 1234),
            data(96_100 + i, 4_000),
            data(96_200 + i, CHUNK),
        ];
        let digest = write_oci_layout(&layout, &layers);
        let name = format!("drill/skopeo/app{i}");
        skopeo_push(&layout, "v1", &format!("{}/{name}:v1", cluster.host(i + 1)));
        layouts.push(LayoutImage {
            repo: name,
            layout,
            digest,
        });
    }
    let mut api = Vec::new();
    for i in 0..9u64 {
        let repo = format!("drill/api/r{}", i % 3);
        let tag = format!("t{i}");
        let extra = usize::try_from(i).expect("small") * 17;
        let (d, layers) = push_image(
            &c,
            &cluster.url(i % 3 + 1),
            &repo,
            &tag,
            96_500 + i,
            &[CHUNK + extra, 900],
        )
        .await;
        api.push((repo, tag, d, layers));
    }
    let old_id = cluster_id_of(&cluster.url(1)).await;

    // The backup, through a follower or the leader alike.
    let (snap, took) = backup_create(&repo, &cluster.url(2))
        .await
        .unwrap_or_else(|e| panic!("backup through node 2: {e}"));
    eprintln!("backup through node 2 ran {took:?}: {snap}");
    assert_eq!(snap["cluster_id"], old_id.as_str(), "{snap}");
    assert_eq!(snap["node"], 2, "{snap}");
    let snap_id = snap["id"].as_str().expect("snapshot id").to_owned();
    let listing = stowage_json(&["backup", "list", "--repo", &repo]).await;
    assert_eq!(
        listing["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{listing}"
    );
    let verified = stowage(&["backup", "verify", "--repo", &repo, "--read-data"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(verified.contains("no problems found"), "{verified}");

    // The region is lost: every node and every data directory.
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        let dir = cluster.member(id).node.data_dir.clone();
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }

    // Node 1 again, from the repository alone: a new cluster of one.
    let (data1, rpc1) = {
        let m = cluster.member(1);
        (m.node.data_dir.display().to_string(), m.rpc.clone())
    };
    let restored = stowage_json(&[
        "restore",
        "--from",
        &repo,
        "--latest",
        "--data-dir",
        &data1,
        "--node-id",
        "1",
        "--zone",
        "a",
        "--cluster-advertise",
        &rpc1,
    ])
    .await;
    assert_eq!(
        restored["point"]["snapshot"]["id"],
        snap_id.as_str(),
        "{restored}"
    );
    cluster.set_peers(1, &[]);
    cluster.restart(1);
    cluster.wait_ready(1, NODE_LIMIT).await;
    let new_id = cluster_id_of(&cluster.url(1)).await;
    assert_ne!(new_id, old_id, "the restored cluster has a new name");
    let members = cluster.status(1).await.expect("status")["members"].clone();
    assert_eq!(
        members.as_array().map(Vec::len),
        Some(1),
        "a cluster of one: {members}"
    );
    // Alone, it serves everything and takes writes.
    serves_everything(&cluster, 1, &layouts, &api, scratch.path(), "alone").await;
    let (d, layers) = push_image(
        &c,
        &cluster.url(1),
        "drill/after",
        "v1",
        96_900,
        &[CHUNK + 5],
    )
    .await;
    api.push(("drill/after".into(), "v1".into(), d, layers));

    // Two empty nodes in the other zones join it, one at a time: each is
    // added, catches up, and is filled by repair before the next.
    for id in [2, 3] {
        cluster.set_peers(id, &[1]);
        cluster.restart(id);
        let spec = {
            let m = cluster.member(id);
            format!("{id}={}@{}", m.zone, m.rpc)
        };
        let out = stowage(&["members", "add", &spec, "--node", &cluster.url(1)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("is a voter"), "{out}");
        let want: Vec<u64> = (1..=id).collect();
        eventually("the new node is a voter", NODE_LIMIT, || {
            voters(&cluster, 1, &want)
        })
        .await;
        cluster.wait_in_sync(id, NODE_LIMIT).await;
        for via in cluster.running() {
            eventually("every chunk has its copies", NODE_LIMIT, || {
                whole_again(&cluster, via)
            })
            .await;
        }
    }
    for id in [1, 2, 3] {
        assert_eq!(
            cluster_id_of(&cluster.url(id)).await,
            new_id,
            "node {id} is in the new cluster"
        );
        serves_everything(&cluster, id, &layouts, &api, scratch.path(), "three").await;
    }

    // The copies really moved: without node 1 the others serve it all.
    cluster.kill(1);
    for id in [2, 3] {
        cluster.wait_ready(id, NODE_LIMIT).await;
        serves_everything(&cluster, id, &layouts, &api, scratch.path(), "without-1").await;
    }

    // Node 1 was started with no peers; from now on its config lists the
    // two others (with none it would refuse the three-member membership).
    cluster.set_peers(1, &[2, 3]);
    cluster.restart(1);
    cluster.wait_ready(1, NODE_LIMIT).await;
    cluster.wait_in_sync(1, NODE_LIMIT).await;
    let c = client();
    for (repo, tag, digest, layers) in &api {
        verify_image(&c, &cluster.url(1), repo, tag, digest, layers).await;
    }
}

/// Collection delays of the load test: short, so GC collects all the time.
/// A backup must take less than the grace (the documented limit); these
/// take well under a second, and the margin is for a loaded machine.
const GC_GRACE_SECS: u64 = 5;

fn gc_toml() -> String {
    format!(
        "{CHUNK_TOML}gc_grace_secs = {GC_GRACE_SECS}\ngc_interval_secs = 1\ngc_untagged = [\"gcload/**\"]\n"
    )
}

/// One image the load pushed, and what became of it. Indexes are the
/// `Stowage-Log-Index` of the acknowledged manifest put and delete.
#[derive(Debug, Clone)]
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    /// The one layer no other image has.
    unique_layer: String,
    put_index: u64,
    /// A delete was sent (its answer may not have come yet).
    delete_sent: bool,
    delete_index: Option<u64>,
    /// The unique layer answered 404: GC collected it.
    collected: bool,
    worker: u64,
}

#[derive(Default)]
struct Load {
    pushed: Mutex<Vec<Pushed>>,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn counts(&self) -> (usize, usize) {
        let p = self.pushed.lock().unwrap();
        (p.len(), p.iter().filter(|i| i.collected).count())
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

fn log_index(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("stowage-log-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Pushes a config and `layers` as an image tagged `tag`; returns the
/// manifest's digest and the log index of its put.
async fn push_layers(
    c: &Client,
    url: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> Result<(String, u64), String> {
    let cd = try_push_blob(c, url, repo, config).await?;
    let mut descs = Vec::new();
    for l in layers {
        descs.push((try_push_blob(c, url, repo, l).await?, l.len()));
    }
    let m = image_manifest(&(cd, config.len()), &descs);
    let r = try_put_manifest(c, url, repo, tag, OCI_MANIFEST, &m).await?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("put {repo}:{tag}: {}", r.status()));
    }
    let index = log_index(&r).ok_or(format!("put {repo}:{tag}: no log index"))?;
    Ok((sha256(&m), index))
}

/// One client of the load: pushes images (each a layer shared by all its
/// images, in three repositories, and a layer of its own), deletes every
/// other one by digest some pushes later, moves a `latest` tag (the image
/// it leaves is untagged, and collected), and watches deleted images'
/// own layers disappear.
async fn load_worker(w: u64, urls: Vec<String>, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let c = client();
    let shared = data(97_000 + w, CHUNK + 100);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = &urls[usize::try_from((n + w) % 3).expect("small")];
        let repo = format!("gcload/w{w}/r{}", n % 3);
        let tag = format!("t{n}");
        let config = format!("{{\"worker\":{w},\"n\":{n}}}").into_bytes();
        let own = data(
            98_000_000 + w * 1_000_000 + n,
            2 * CHUNK + usize::try_from(n % 1000).expect("small"),
        );
        match push_layers(&c, url, &repo, &tag, &config, &[&shared, &own]).await {
            Ok((digest, put_index)) => load.pushed.lock().unwrap().push(Pushed {
                repo,
                tag,
                digest,
                unique_layer: sha256(&own),
                put_index,
                delete_sent: false,
                delete_index: None,
                collected: false,
                worker: w,
            }),
            Err(e) => load.fail(e),
        }
        if n.is_multiple_of(2) {
            delete_oldest(&c, url, w, &load).await;
        }
        if n.is_multiple_of(4) {
            let moving = format!("gcload/w{w}/moving");
            let config = format!("{{\"worker\":{w},\"latest\":{n}}}").into_bytes();
            let own = data(99_000_000 + w * 1_000_000 + n, CHUNK / 2);
            if let Err(e) = push_layers(&c, url, &moving, "latest", &config, &[&shared, &own]).await
            {
                load.fail(e);
            }
        }
        probe_collected(&c, url, w, &load).await;
    }
}

/// Deletes (by digest) this worker's oldest image still live, keeping a
/// few.
async fn delete_oldest(c: &Client, url: &str, w: u64, load: &Load) {
    let victim = {
        let mut p = load.pushed.lock().unwrap();
        let live: Vec<usize> = (0..p.len())
            .filter(|i| p[*i].worker == w && !p[*i].delete_sent)
            .collect();
        if live.len() < 4 {
            return;
        }
        p[live[0]].delete_sent = true;
        p[live[0]].clone()
    };
    let r = c
        .delete(format!(
            "{url}/v2/{}/manifests/{}",
            victim.repo, victim.digest
        ))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::ACCEPTED => {
            let index = log_index(&r);
            let mut p = load.pushed.lock().unwrap();
            if let Some(i) = p.iter_mut().find(|i| i.digest == victim.digest) {
                i.delete_index = index;
            }
        }
        Ok(r) => load.fail(format!(
            "delete {}@{}: {}",
            victim.repo,
            victim.digest,
            r.status()
        )),
        Err(e) => load.fail(format!("delete {}@{}: {e}", victim.repo, victim.digest)),
    }
}

/// Marks deleted images whose own layer is gone (404) as collected.
async fn probe_collected(c: &Client, url: &str, w: u64, load: &Load) {
    let waiting: Vec<Pushed> = load
        .pushed
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.worker == w && i.delete_index.is_some() && !i.collected)
        .take(3)
        .cloned()
        .collect();
    for i in waiting {
        let Ok(r) = c
            .head(format!("{url}/v2/{}/blobs/{}", i.repo, i.unique_layer))
            .send()
            .await
        else {
            continue;
        };
        if r.status() == StatusCode::NOT_FOUND {
            let mut p = load.pushed.lock().unwrap();
            if let Some(x) = p.iter_mut().find(|x| x.digest == i.digest) {
                x.collected = true;
            }
        }
    }
}

async fn get_ok(
    c: &Client,
    url: &str,
    accept: Option<&str>,
) -> Result<(Vec<u8>, reqwest::header::HeaderMap), String> {
    let mut req = c.get(url);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if r.status() != StatusCode::OK {
        return Err(format!("GET {url}: {}", r.status()));
    }
    let headers = r.headers().clone();
    let body = r.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    Ok((body.to_vec(), headers))
}

/// A JSON listing with every page followed (`Link: <…>; rel="next"`);
/// returns the entries of `field`.
async fn listing(c: &Client, base: &str, first: &str, field: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let (body, headers) = get_ok(c, &format!("{base}{path}"), None).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))?;
        out.extend(
            v[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_owned)),
        );
        next = headers
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(p, _)| p.to_owned());
    }
    Ok(out)
}

/// Reads every tagged manifest of every repository a node lists, and every
/// blob each references: each must answer 200 with bytes matching its
/// digest. Returns how many manifests and blobs were read.
async fn read_everything(c: &Client, url: &str) -> Result<(usize, usize), String> {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    let (mut manifests, mut blobs) = (0, 0);
    for repo in listing(c, url, "/v2/_catalog", "repositories").await? {
        for tag in listing(c, url, &format!("/v2/{repo}/tags/list"), "tags").await? {
            let mut todo = vec![tag.clone()];
            while let Some(reference) = todo.pop() {
                let (body, headers) = get_ok(
                    c,
                    &format!("{url}/v2/{repo}/manifests/{reference}"),
                    Some(&accept),
                )
                .await?;
                let digest = sha256(&body);
                if headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    != Some(digest.as_str())
                {
                    return Err(format!("{repo}:{reference}: digest header is not {digest}"));
                }
                if reference.starts_with("sha256:") && reference != digest {
                    return Err(format!("{repo}@{reference} has the bytes of {digest}"));
                }
                manifests += 1;
                let m: Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("{repo}:{reference}: {e}"))?;
                for child in m["manifests"].as_array().into_iter().flatten() {
                    todo.push(child["digest"].as_str().unwrap_or_default().to_owned());
                }
                let descs = std::iter::once(&m["config"])
                    .filter(|d| d.is_object())
                    .chain(m["layers"].as_array().into_iter().flatten());
                for d in descs {
                    let bd = d["digest"].as_str().unwrap_or_default();
                    let (bytes, _) = get_ok(c, &format!("{url}/v2/{repo}/blobs/{bd}"), None)
                        .await
                        .map_err(|e| format!("{repo}:{tag} needs {bd}: {e}"))?;
                    if sha256(&bytes) != bd || Some(bytes.len() as u64) != d["size"].as_u64() {
                        return Err(format!(
                            "{repo}:{tag}: blob {bd} came back as {} ({} bytes)",
                            sha256(&bytes),
                            bytes.len()
                        ));
                    }
                    blobs += 1;
                }
            }
        }
    }
    Ok((manifests, blobs))
}

/// What the state at log index `at` must hold of the load's images: each
/// put by then and not deleted by then is there under its tag, each put
/// later or deleted by then is not. Images whose delete's answer never
/// came are left out.
async fn holds_the_state_at(c: &Client, url: &str, at: u64, load: &Load) -> Result<usize, String> {
    let pushed: Vec<Pushed> = load.pushed.lock().unwrap().clone();
    let mut checked = 0;
    for i in pushed {
        if i.delete_sent && i.delete_index.is_none() {
            continue;
        }
        let there = i.put_index <= at && i.delete_index.is_none_or(|d| d > at);
        let r = c
            .get(format!("{url}/v2/{}/manifests/{}", i.repo, i.tag))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        match (there, status) {
            (true, StatusCode::OK) if sha256(&body) == i.digest => {}
            (false, StatusCode::NOT_FOUND) => {}
            _ => {
                return Err(format!(
                    "{}:{} (put at {}, deleted at {:?}) answers {status} in the state at {at}",
                    i.repo, i.tag, i.put_index, i.delete_index
                ))
            }
        }
        checked += 1;
    }
    Ok(checked)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether node `url`'s workers `gc` and `chunk-gc` have both ended a step
/// after `after_ms` (Unix ms).
async fn gc_ran_since(c: &Client, url: &str, after_ms: u64) -> Result<(), String> {
    let s: Value = c
        .get(format!("{url}/_stowage/status"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    for name in ["gc", "chunk-gc"] {
        let w = s["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == name)
            .ok_or(format!("no worker {name}"))?;
        if w["last_step_unix_ms"].as_u64().unwrap_or(0) <= after_ms {
            return Err(format!("{name}: {w}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_taken_under_pushes_deletes_and_gc_restore_whole() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let repo = scratch.path().join("backup-repo").display().to_string();
    let cluster = Cluster::start(&["a", "b", "c"], &gc_toml());
    cluster.wait_all_ready(NODE_LIMIT).await;
    let old_id = cluster_id_of(&cluster.url(1)).await;

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = [1, 2, 3].iter().map(|id| cluster.url(*id)).collect();
    let workers: Vec<_> = (0..2u64)
        .map(|w| tokio::spawn(load_worker(w, urls.clone(), load.clone(), stop.clone())))
        .collect();

    // Three backups in a row, each once GC has collected more since the
    // last, through each node in turn.
    let mut snaps = Vec::new();
    let mut seen = (12, 2);
    for via in [2, 3, 1] {
        eventually(
            "the load pushed more and GC collected more",
            NODE_LIMIT,
            || {
                let (pushed, collected) = load.counts();
                async move {
                    (pushed >= seen.0 && collected >= seen.1)
                        .then_some(())
                        .ok_or(format!("{pushed} pushed, {collected} collected"))
                }
            },
        )
        .await;
        let (snap, took) = backup_create(&repo, &cluster.url(via))
            .await
            .unwrap_or_else(|e| {
                panic!("backup through node {via} (gc_grace_secs = {GC_GRACE_SECS}): {e}")
            });
        eprintln!(
            "backup through node {via}: snapshot {} at log index {}, {} chunks ({} new), ran {took:?}",
            snap["id"], snap["log_index"], snap["chunks"], snap["new_chunks"]
        );
        if took >= Duration::from_secs(GC_GRACE_SECS) {
            eprintln!("NOTE: that backup ran longer than gc_grace_secs ({GC_GRACE_SECS} s)");
        }
        snaps.push(snap);
        let (pushed, collected) = load.counts();
        seen = (pushed + 4, collected + 1);
    }

    let listed = stowage_json(&["backup", "list", "--repo", &repo]).await;
    assert_eq!(
        listed["snapshots"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );

    // Each snapshot into a node of its own, while the load goes on.
    let c = client();
    for (k, snap) in snaps.iter().enumerate() {
        let id = snap["id"].as_str().expect("snapshot id");
        let at = snap["log_index"].as_u64().expect("log index");
        let dir = scratch.path().join(format!("restored{k}"));
        let data_dir = dir.join("data");
        let restored = stowage_json(&[
            "restore",
            "--from",
            &repo,
            "--snapshot",
            id,
            "--data-dir",
            &data_dir.display().to_string(),
            "--zone",
            "a",
        ])
        .await;
        assert_eq!(restored["point"]["snapshot"]["id"], id, "{restored}");
        assert_eq!(restored["chunks"], snap["chunks"], "{restored}");
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "node_id = 1\nzone = \"a\"\ndata_dir = \"{}\"\n{}",
                data_dir.display(),
                gc_toml()
            ),
        )
        .expect("config written");
        let log = dir.join("node.log");
        let mut node = Node::launch(
            &stowage_bin(),
            &data_dir,
            vec!["--config".into(), config.display().to_string()],
            &format!("127.0.0.1:{}", free_port()),
            Some(log.clone()),
        );
        let url = node.url.clone();
        eventually("the restored node is ready", NODE_LIMIT, || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let r = c.get(format!("{url}/readyz")).send().await;
                match r {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        assert_ne!(
            cluster_id_of(&url).await,
            old_id,
            "a restore is a new cluster"
        );

        let what = |e: String| {
            format!(
                "snapshot {id} (log index {at}): {e}\nlog:\n{}",
                log_tail(&log)
            )
        };
        let (manifests, blobs) = read_everything(&c, &url)
            .await
            .unwrap_or_else(|e| panic!("{}", what(e)));
        let checked = holds_the_state_at(&c, &url, at, &load)
            .await
            .unwrap_or_else(|e| panic!("{}", what(e)));
        eprintln!("snapshot {id}: {manifests} manifests and {blobs} blobs read whole; {checked} images as of log index {at}");
        assert!(manifests > 0, "snapshot {id} holds no manifest");

        // The restored node's own GC (same short grace) takes only what
        // nothing tagged needs: after it has run past a grace, all is
        // still whole.
        let after_ms = unix_ms() + (GC_GRACE_SECS + 1) * 1000;
        eventually(
            "the restored node's GC ran past a grace",
            NODE_LIMIT,
            || gc_ran_since(&c, &url, after_ms),
        )
        .await;
        let again = read_everything(&c, &url)
            .await
            .unwrap_or_else(|e| panic!("{}", what(e)));
        assert_eq!(
            again.0, manifests,
            "snapshot {id}: the restored node lost manifests to its GC"
        );
        node.kill9();
    }

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(NODE_LIMIT, w)
            .await
            .expect("load worker stops")
            .expect("load worker did not panic");
    }
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "the load's requests failed: {failures:#?}"
    );
    let verified = stowage(&["backup", "verify", "--repo", &repo, "--read-data"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(verified.contains("no problems found"), "{verified}");
    let (pushed, collected) = load.counts();
    eprintln!("the load pushed {pushed} images; GC collected {collected} deleted ones meanwhile");
}

/// A backup through a follower that was behind holds every write the
/// leader acknowledged before the backup began (the backup takes a read
/// barrier first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_a_lagging_follower_misses_no_acknowledged_write() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let f = if leader == 1 { 2 } else { 1 };
    for round in 0..5u64 {
        cluster.pause(f);
        let tag = format!("t{round}");
        push_image(
            &c,
            &cluster.url(leader),
            "gap/r",
            &tag,
            5000 + round,
            &[1000],
        )
        .await;
        let acked = cluster.status(leader).await.unwrap()["last_applied"]
            .as_u64()
            .unwrap();
        cluster.resume(f);
        let r = c
            .post(format!("{}/_stowage/backup", cluster.url(f)))
            .json(&serde_json::json!({ "repo": repo }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let deadline = Instant::now() + Duration::from_secs(60);
        let job = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let v: Value = c
                .get(format!("{}/_stowage/backup", cluster.url(f)))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["job"]["state"] != "running" {
                break v["job"].clone();
            }
            assert!(Instant::now() < deadline, "{v}");
        };
        assert_eq!(job["state"], "done", "{job}");
        let at = job["snapshot"]["log_index"].as_u64().unwrap();
        assert!(
            at >= acked,
            "round {round}: the leader had applied {acked}, the snapshot is at {at}"
        );
    }
}

/// One repository put back into the running cluster as the backup has it:
/// a deleted tag returns (through a follower), another repository that
/// moved on since is not touched, and every node serves the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_repository_is_put_back_into_a_running_cluster() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let repo = repo.to_str().unwrap();
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));
    let (mine, mine_layers) = push_image(&c, &u1, "team/app", "v1", 600, &[200_000]).await;
    push_image(&c, &u1, "other/app", "v1", 601, &[1000]).await;
    cluster.cli(&["backup", "create", "--to", repo, "--node", &u2, "--json"]);
    // The accident, and someone else's work after the backup.
    let r = c
        .delete(format!("{u3}/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (theirs, theirs_layers) = push_image(&c, &u2, "other/app", "v1", 602, &[2000]).await;
    cluster.cli(&[
        "restore",
        "--from",
        repo,
        "--latest",
        "--repository",
        "team/app",
        "--into",
        &u3,
        "--json",
    ]);
    for url in [&u1, &u2, &u3] {
        let r = c
            .get(format!("{url}/v2/team/app/manifests/v1"))
            .header("Stowage-Min-Log-Index", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        verify_image(&c, url, "team/app", "v1", &mine, &mine_layers).await;
        verify_image(&c, url, "other/app", "v1", &theirs, &theirs_layers).await;
    }
}
