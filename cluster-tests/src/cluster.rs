//! A cluster of `stowage` processes on loopback: one generated TOML config
//! per node (id, zone, addresses, peers, fast Raft timing), each node's
//! stderr in a log file next to its data, and waits on the nodes' own HTTP
//! answers (`/readyz`, `/_stowage/status`), never on fixed sleeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::oci::client;
pub use crate::process::free_port;
use crate::process::{stowage_bin, Node};

/// Raft timing for tests: failures are detected in a few hundred ms.
const FAST_RAFT_TOML: &str = "raft_heartbeat_ms = 50\nraft_election_timeout_ms = 600\n";

pub struct Member {
    pub id: u64,
    pub zone: String,
    pub http: String,
    pub rpc: String,
    pub node: Node,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub struct Cluster {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn peer_list(specs: &[(u64, String, String)], except: u64) -> String {
    specs
        .iter()
        .filter(|(id, _, _)| *id != except)
        .map(|(id, zone, rpc)| format!("\"{id}={zone}@{rpc}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_config(
    path: &Path,
    id: u64,
    zone: &str,
    rpc: &str,
    peers: &str,
    data: &Path,
    extra: &str,
) {
    let text = format!(
        "node_id = {id}\nzone = \"{zone}\"\ncluster_listen = \"{rpc}\"\npeers = [{peers}]\ndata_dir = \"{}\"\n{FAST_RAFT_TOML}{extra}\n",
        data.display()
    );
    std::fs::write(path, text).expect("config written");
}

impl Cluster {
    /// Starts one node per zone (ids 1, 2, …), each listing all the others.
    pub fn start(zones: &[&str], extra_toml: &str) -> Cluster {
        Self::start_each(zones, |_| extra_toml.to_owned())
    }

    /// Like `start`, with each node's extra TOML made from its id (its own
    /// certificate, say).
    pub fn start_each(zones: &[&str], extra_toml: impl Fn(u64) -> String) -> Cluster {
        Self::launch(zones, extra_toml, false)
    }

    /// Like `start`, with the same `peers` list, every node in it, given to
    /// every node (each finds itself by its id).
    pub fn start_one_peer_list(zones: &[&str]) -> Cluster {
        Self::launch(zones, |_| String::new(), true)
    }

    fn launch(zones: &[&str], extra_toml: impl Fn(u64) -> String, one_list: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = stowage_bin();
        let specs: Vec<(u64, String, String)> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let id = u64::try_from(i).expect("small") + 1;
                (id, z.to_string(), format!("127.0.0.1:{}", free_port()))
            })
            .collect();
        let mut members = Vec::new();
        for (id, zone, rpc) in &specs {
            let http = format!("127.0.0.1:{}", free_port());
            let data = dir.path().join(format!("n{id}"));
            let config = dir.path().join(format!("n{id}.toml"));
            let log = dir.path().join(format!("n{id}.log"));
            write_config(
                &config,
                *id,
                zone,
                rpc,
                &peer_list(&specs, if one_list { 0 } else { *id }),
                &data,
                &extra_toml(*id),
            );
            let node = Node::launch(
                &bin,
                &data,
                vec!["--config".into(), config.display().to_string()],
                &http,
                Some(log.clone()),
            );
            members.push(Member {
                id: *id,
                zone: zone.clone(),
                http,
                rpc: rpc.clone(),
                node,
                config,
                log,
            });
        }
        Cluster { members, dir, bin }
    }

    /// Starts a new node that lists the current members as peers: it finds
    /// an existing cluster and waits to be added with `stowage members add`.
    /// Returns its id and its `ID=ZONE@ADDR` spec.
    pub fn start_joiner(&mut self, zone: &str, extra_toml: &str) -> (u64, String) {
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let rpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let specs: Vec<(u64, String, String)> = self
            .members
            .iter()
            .map(|m| (m.id, m.zone.clone(), m.rpc.clone()))
            .collect();
        let data = self.dir.path().join(format!("n{id}"));
        let config = self.dir.path().join(format!("n{id}.toml"));
        let log = self.dir.path().join(format!("n{id}.log"));
        write_config(
            &config,
            id,
            zone,
            &rpc,
            &peer_list(&specs, id),
            &data,
            extra_toml,
        );
        let node = Node::launch(
            &self.bin,
            &data,
            vec!["--config".into(), config.display().to_string()],
            &http,
            Some(log.clone()),
        );
        self.members.push(Member {
            id,
            zone: zone.into(),
            http,
            rpc: rpc.clone(),
            node,
            config,
            log,
        });
        (id, format!("{id}={zone}@{rpc}"))
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .expect("member exists")
    }

    pub fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member exists")
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.member(id).http)
    }

    pub fn host(&self, id: u64) -> &str {
        &self.member(id).http
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.node.is_running())
            .map(|m| m.id)
            .collect()
    }

    pub fn kill(&mut self, id: u64) {
        self.member_mut(id).node.kill9();
    }

    pub fn restart(&mut self, id: u64) {
        self.member_mut(id).node.restart();
    }

    pub fn pause(&self, id: u64) {
        self.member(id).node.pause();
    }

    pub fn resume(&self, id: u64) {
        self.member(id).node.resume();
    }

    /// Kills node `id`, empties its data directory, and starts it again
    /// under the same id and addresses: a node whose disk was replaced.
    pub fn restart_empty(&mut self, id: u64) {
        let m = self.member_mut(id);
        m.node.kill9();
        match std::fs::remove_dir_all(&m.node.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("emptying {}: {e}", m.node.data_dir.display()),
        }
        m.node.restart();
    }

    /// Rewrites node `id`'s config so that its `peers` are exactly the
    /// members `peers` (their zones and cluster addresses); it takes effect
    /// at the node's next start. A node restored from a backup starts with
    /// none, and nodes that join it list only it.
    pub fn set_peers(&self, id: u64, peers: &[u64]) {
        let specs: Vec<(u64, String, String)> = peers
            .iter()
            .map(|p| {
                let m = self.member(*p);
                (m.id, m.zone.clone(), m.rpc.clone())
            })
            .collect();
        let path = &self.member(id).config;
        let text = std::fs::read_to_string(path).expect("config readable");
        let line = format!("peers = [{}]", peer_list(&specs, id));
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("peers = [") {
                    line.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(path, text.join("\n") + "\n").expect("config written");
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        crate::process::log_tail(&self.member(id).log)
    }

    /// Waits until `/readyz` answers 200 on node `id`.
    pub async fn wait_ready(&self, id: u64, limit: Duration) {
        let c = client();
        let url = format!("{}/readyz", self.url(id));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = c.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not ready after {limit:?}; log:\n{}",
                self.log_tail(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_all_ready(&self, limit: Duration) {
        for id in self.running() {
            self.wait_ready(id, limit).await;
        }
    }

    pub async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let r = client()
            .get(format!("{}/_stowage/status", self.url(id)))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader as the running nodes report it, once they agree.
    pub async fn leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let mut seen = Vec::new();
            for id in self.running() {
                if let Some(s) = self.status(id).await {
                    if s["role"] == "leader" {
                        seen.push(id);
                    }
                }
            }
            if seen.len() == 1 {
                return seen[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single leader after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied everything the leader has.
    pub async fn wait_in_sync(&self, id: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let leader = self.leader(limit).await;
            if let (Some(l), Some(n)) = (self.status(leader).await, self.status(id).await) {
                let matched = l["members"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["id"] == id))
                    .and_then(|m| m["matched"].as_u64());
                let leader_log = l["last_log_index"].as_u64();
                if leader_log.is_some()
                    && n["last_applied"].as_u64() >= leader_log
                    && (leader == id || matched >= leader_log)
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not catch up within {limit:?}; log:\n{}",
                self.log_tail(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `stowage <args>` against the cluster and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(&self.bin)
            .args(args)
            .output()
            .expect("stowage runs");
        assert!(
            out.status.success(),
            "stowage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Polls `check` until it returns `Some`, or fails the test after `limit`
/// saying what was awaited and what `check` last saw.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not reached within {limit:?}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Cluster {
    /// Node `id`'s report of its own chunk copies (`chunks` in its status).
    pub async fn chunk_health(&self, id: u64) -> Option<serde_json::Value> {
        Some(self.status(id).await?["chunks"].clone())
    }

    /// Whether node `id` says every member answered and no copy is missing,
    /// misplaced or lost anywhere, after every node has swept.
    pub async fn replication_healthy(&self, id: u64) -> Result<(), String> {
        let s = self.status(id).await.ok_or("no status")?;
        let r = &s["replication"];
        let summary = r["summary"].as_str().unwrap_or("").to_owned();
        if summary.starts_with("every chunk has") && r["misplaced_chunks"] == 0 {
            Ok(())
        } else {
            Err(format!("{summary} (misplaced {})", r["misplaced_chunks"]))
        }
    }
}
