//! Network-namespace test hosts: a private network with one namespace per
//! node ("zone"), real `stowage serve` processes inside them, and the
//! faults a real network has (isolation, partitions, one-way loss, packet
//! loss and delay), plus process faults (SIGKILL, SIGSTOP/SIGCONT,
//! restart, a wiped data directory).
//!
//! Layout of one `Net` (prefix `stw<pid>x<n>`, subnet `10.213.<k>.0/24`):
//!
//! ```text
//!  root ns: <prefix> (veth, 10.213.k.1) ──┐
//!  <prefix>-sw: bridge br0 ───────────────┴── p0 ── <prefix>-a: eth0 10.213.k.10
//!                                          ├── p1 ── <prefix>-b: eth0 10.213.k.11
//!                                          └── p2 ── <prefix>-c: eth0 10.213.k.12
//! ```
//!
//! The bridge lives in its own "switch" namespace, not in the root one: a
//! host running Docker has `bridge-nf-call-iptables = 1` and a root FORWARD
//! policy of DROP, which would silently drop bridged traffic, and changing
//! the host's firewall is not something a test may do. Only one veth end
//! (with the `.1` address) is in the root namespace, for the test client.
//!
//! Traffic stays inside: the namespaces have no default route, so nodes
//! reach only each other and the root's `.1`; the clients built here ignore
//! proxy settings and talk only to these addresses and to loopback.
//! Faults are iptables rules in two chains of each node's namespace
//! (`STOWAGE_IN`, `STOWAGE_OUT`, flushed by `heal`), and `tc netem` where
//! the kernel has it (checked once; packet loss falls back to iptables'
//! `statistic` match, delay has no fallback and reports itself unsupported).
//!
//! Everything is torn down on `Drop`; `cleanup_all` does the same from a
//! signal handler, and every new `Net` first removes what crashed test
//! processes left behind (names carry the creating pid).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process::{stowage_bin, Node};

/// Port of every node's HTTP API inside its namespace.
pub const HTTP_PORT: u16 = 5000;
/// Port of every node's cluster RPC inside its namespace.
pub const RPC_PORT: u16 = 7000;
/// Every request a client of this module makes ends within this, so a
/// black-holed node cannot hang a check.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The CLI has no timeout of its own; a membership change through a
/// partitioned cluster must not hang the runner.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Name prefix of everything this module creates; the creating pid follows.
const NAME_PREFIX: &str = "stw";

/// Why network namespaces cannot be used here (not root, no iproute2, no
/// iptables). Callers print one `SKIPPED: ` line and pass.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "network namespaces unavailable: {}", self.0)
    }
}

/// Runs a command, returning its stdout or a message with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// `iptables` inside namespace `ns` (`-w`: wait for the xtables lock that
/// parallel tests share).
fn iptables(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["netns", "exec", ns, "iptables", "-w"];
    full.extend_from_slice(args);
    ip(&full)
}

fn tc(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["netns", "exec", ns, "tc"];
    full.extend_from_slice(args);
    ip(&full)
}

/// Whether namespaces (and iptables inside them) work here; checked once
/// by creating and deleting a probe namespace.
pub fn available() -> Result<(), Unavailable> {
    static CHECK: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            let probe = format!("{NAME_PREFIX}{}probe", std::process::id());
            ip(&["netns", "add", &probe]).map_err(Unavailable)?;
            let ipt = iptables(&probe, &["-L", "-n"]);
            let _ = ip(&["netns", "del", &probe]);
            ipt.map(|_| ()).map_err(Unavailable)
        })
        .clone()
}

/// Whether `tc qdisc ... netem` works (the `sch_netem` module may be
/// missing); checked once in namespace `ns`.
fn netem_available(ns: &str) -> bool {
    static CHECK: OnceLock<bool> = OnceLock::new();
    *CHECK.get_or_init(|| {
        let ok = tc(
            ns,
            &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        )
        .is_ok();
        let _ = tc(ns, &["qdisc", "del", "dev", "lo", "root"]);
        ok
    })
}

/// What `cleanup_all` must remove for one live `Net`.
#[derive(Clone)]
struct Registered {
    host_if: String,
    namespaces: Vec<String>,
}

fn live() -> &'static Mutex<Vec<Registered>> {
    static LIVE: OnceLock<Mutex<Vec<Registered>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Kills every process in `ns` and deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

fn remove(r: &Registered) {
    let _ = ip(&["link", "del", &r.host_if]);
    for ns in &r.namespaces {
        remove_namespace(ns);
    }
}

/// Data directories of live clusters, for `cleanup_all`.
fn live_dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes `path` with a detached `rm -rf`: removing thousands of chunk
/// files takes minutes where the filesystem discards on delete.
fn remove_dir_detached(path: &Path) {
    // Not waited for on purpose: init reaps it if this process ends.
    #[allow(clippy::zombie_processes)]
    let spawned = Command::new("rm")
        .arg("-rf")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Removes every network this process created, kills their nodes and
/// removes their data; for a Ctrl-C handler, which then exits.
pub fn cleanup_all() {
    let all: Vec<Registered> =
        std::mem::take(&mut *live().lock().unwrap_or_else(|p| p.into_inner()));
    for r in &all {
        remove(r);
    }
    let dirs: Vec<PathBuf> =
        std::mem::take(&mut *live_dirs().lock().unwrap_or_else(|p| p.into_inner()));
    for d in &dirs {
        remove_dir_detached(d);
    }
}

fn forget_dir(path: &Path) {
    live_dirs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != path);
}

/// The pid a name of ours was created by, if it is one of ours.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if !(after.starts_with('x') || after.starts_with("probe")) {
        return None;
    }
    digits.parse().ok()
}

/// Removes namespaces and links left by test processes that no longer run
/// (killed before their `Drop` ran).
fn reap_stale() {
    let dead = |name: &str| {
        creator_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            // "12: stw123x0@if11: <...>"
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if dead(name) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    if let Ok(list) = ip(&["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if dead(name) {
                remove_namespace(name);
            }
        }
    }
}

/// One node's namespace.
pub struct Host {
    /// The zone name, also the namespace suffix.
    pub zone: String,
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// A private network of namespaces, removed on drop.
pub struct Net {
    pub hosts: Vec<Host>,
    /// The root namespace's address on the network (the test client's).
    pub client_addr: Ipv4Addr,
    host_if: String,
    switch_ns: String,
    netem: bool,
}

impl Net {
    /// Builds the network with one namespace per zone.
    pub fn new(zones: &[&str]) -> Result<Net, Unavailable> {
        available()?;
        // One network at a time per process, so two tests in one binary
        // never pick the same subnet or names.
        static CREATE: Mutex<u32> = Mutex::new(0);
        let mut n = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        reap_stale();
        let pid = std::process::id();
        let prefix = format!("{NAME_PREFIX}{pid}x{}", *n);
        *n += 1;
        let subnet = pick_subnet(pid, *n).map_err(Unavailable)?;
        let base = |host: u8| Ipv4Addr::new(10, 213, subnet, host);
        let mut net = Net {
            hosts: Vec::new(),
            client_addr: base(1),
            host_if: prefix.clone(),
            switch_ns: format!("{prefix}-sw"),
            netem: false,
        };
        let mut registered = Registered {
            host_if: net.host_if.clone(),
            namespaces: vec![net.switch_ns.clone()],
        };
        for z in zones {
            registered.namespaces.push(format!("{prefix}-{z}"));
        }
        live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(registered);
        // From here on `Drop` removes whatever was made.
        net.build(zones, &prefix, base).map_err(Unavailable)?;
        net.netem = net.hosts.first().is_some_and(|h| netem_available(&h.ns));
        Ok(net)
    }

    fn build(
        &mut self,
        zones: &[&str],
        prefix: &str,
        base: impl Fn(u8) -> Ipv4Addr,
    ) -> Result<(), String> {
        let sw = self.switch_ns.clone();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &sw,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.client_addr),
            "dev",
            &self.host_if,
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        ip(&["-n", &sw, "link", "set", "up0", "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", "up0", "up"])?;
        for (i, z) in zones.iter().enumerate() {
            let ns = format!("{prefix}-{z}");
            let port = format!("p{i}");
            let offset = u8::try_from(i).map_err(|_| "too many zones".to_string())?;
            let addr = base(10 + offset);
            ip(&["netns", "add", &ns])?;
            // Register before configuring, so a failure below still removes it.
            self.hosts.push(Host {
                zone: z.to_string(),
                ns: ns.clone(),
                addr,
            });
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for (chain, hook) in [("STOWAGE_IN", "INPUT"), ("STOWAGE_OUT", "OUTPUT")] {
                iptables(&ns, &["-N", chain])?;
                iptables(&ns, &["-A", hook, "-j", chain])?;
            }
        }
        Ok(())
    }

    /// Whether `tc netem` works here (delay faults need it).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    fn host(&self, i: usize) -> Result<&Host, String> {
        self.hosts.get(i).ok_or_else(|| format!("no host {i}"))
    }

    /// Drops everything on host `i`'s link, both ways, for peers and
    /// clients alike; loopback still works (a zone that vanished).
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        let ns = &self.host(i)?.ns;
        iptables(ns, &["-A", "STOWAGE_IN", "-i", "eth0", "-j", "DROP"])?;
        iptables(ns, &["-A", "STOWAGE_OUT", "-o", "eth0", "-j", "DROP"])?;
        Ok(())
    }

    /// Drops traffic between every host of `a` and every host of `b`, both
    /// ways; the test client still reaches everyone.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), String> {
        self.one_way(a, b)?;
        self.one_way(b, a)
    }

    /// Drops packets from hosts `from` to hosts `to` only (an asymmetric
    /// partition: `to` still reaches `from`, but hears nothing back).
    pub fn one_way(&self, from: &[usize], to: &[usize]) -> Result<(), String> {
        for &f in from {
            for &t in to {
                let (src, dst) = (self.host(f)?, self.host(t)?);
                let d = dst.addr.to_string();
                let s = src.addr.to_string();
                iptables(&src.ns, &["-A", "STOWAGE_OUT", "-d", &d, "-j", "DROP"])?;
                iptables(&dst.ns, &["-A", "STOWAGE_IN", "-s", &s, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Loses `percent` of the packets host `i` sends and receives: netem
    /// where available, else iptables' random `statistic` match.
    pub fn loss(&self, i: usize, percent: u32) -> Result<(), String> {
        let ns = &self.host(i)?.ns;
        if self.netem {
            let p = format!("{percent}%");
            tc(
                ns,
                &["qdisc", "add", "dev", "eth0", "root", "netem", "loss", &p],
            )?;
            return Ok(());
        }
        // Each direction loses `percent`, as netem's egress loss on both ends would.
        let p = format!("{:.3}", f64::from(percent.min(100)) / 100.0);
        for (chain, dir) in [("STOWAGE_IN", "-i"), ("STOWAGE_OUT", "-o")] {
            iptables(
                ns,
                &[
                    "-A",
                    chain,
                    dir,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Delays what host `i` sends by `ms` ± `jitter_ms` (netem only).
    pub fn delay(&self, i: usize, ms: u32, jitter_ms: u32) -> Result<(), String> {
        if !self.netem {
            return Err("tc netem is not available in this kernel".into());
        }
        let ns = &self.host(i)?.ns;
        let (d, j) = (format!("{ms}ms"), format!("{jitter_ms}ms"));
        tc(
            ns,
            &[
                "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &d, &j,
            ],
        )?;
        Ok(())
    }

    /// Removes every network fault on host `i`.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        let ns = &self.host(i)?.ns;
        iptables(ns, &["-F", "STOWAGE_IN"])?;
        iptables(ns, &["-F", "STOWAGE_OUT"])?;
        // No qdisc to delete is the usual case, not an error.
        let _ = tc(ns, &["qdisc", "del", "dev", "eth0", "root"]);
        Ok(())
    }

    pub fn heal_all(&self) -> Result<(), String> {
        for i in 0..self.hosts.len() {
            self.heal(i)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut g = live().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = g.iter().position(|r| r.host_if == self.host_if) {
            let r = g.remove(pos);
            drop(g);
            remove(&r);
        }
    }
}

/// A third octet for `10.213.<k>.0/24` that no interface here uses yet.
fn pick_subnet(pid: u32, n: u32) -> Result<u8, String> {
    let used = ip(&["-o", "-4", "addr", "show"])?;
    for attempt in 0..250u32 {
        let k = (pid.wrapping_mul(7) + n * 31 + attempt) % 250 + 2;
        let k = u8::try_from(k).map_err(|e| e.to_string())?;
        if !used.contains(&format!("10.213.{k}.")) {
            return Ok(k);
        }
    }
    Err("no free 10.213.x.0/24 subnet".into())
}

/// A reqwest client for this module's networks: never a proxy, always a
/// timeout.
pub fn client(timeout: Duration) -> reqwest::Client {
    crate::oci::install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .pool_max_idle_per_host(16)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// One node of an `NsCluster`.
pub struct NsNode {
    pub id: u64,
    pub zone: String,
    /// Index of its host in `Net::hosts`.
    pub host: usize,
    pub addr: Ipv4Addr,
    pub url: String,
    pub rpc: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    pub process: Option<Node>,
    pub paused: bool,
    /// Highest `VmHWM` seen over all of this node's processes.
    pub peak_rss_bytes: u64,
}

impl NsNode {
    fn sample_rss(&mut self) {
        if let Some(rss) = self.process.as_ref().and_then(Node::try_peak_rss_bytes) {
            self.peak_rss_bytes = self.peak_rss_bytes.max(rss);
        }
    }
}

/// Real `stowage serve` processes, one per namespace.
pub struct NsCluster {
    pub nodes: Vec<NsNode>,
    pub net: Net,
    bin: PathBuf,
    /// Configs, data and logs; `None` once kept or handed to `rm`.
    dir: Option<tempfile::TempDir>,
}

/// The TOML of one node (keys as in `cluster.rs`). Nodes listen on their
/// namespace's address, so they run open on purpose unless the test sets
/// up access control itself.
fn node_config(n: &NsNode, peers: &str, extra_toml: &str) -> String {
    let open =
        if extra_toml.contains("allow_anonymous") || extra_toml.contains("admin_password_file") {
            ""
        } else {
            "allow_anonymous = true\n"
        };
    format!(
        "node_id = {}\nzone = \"{}\"\nlisten = \"{}:{HTTP_PORT}\"\ncluster_listen = \"{}\"\n\
         peers = [{peers}]\ndata_dir = \"{}\"\n{open}{extra_toml}\n",
        n.id,
        n.zone,
        n.addr,
        n.rpc,
        n.data_dir.display()
    )
}

impl NsCluster {
    /// Builds the network and starts one node per zone (ids 1, 2, …),
    /// each listing all the others. `extra_toml` is appended to every
    /// node's config (Raft timing, chunk size, …).
    pub fn start(zones: &[&str], extra_toml: &str) -> Result<NsCluster, String> {
        let net = Net::new(zones).map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        live_dirs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir.path().to_path_buf());
        let mut nodes = Vec::new();
        for (i, h) in net.hosts.iter().enumerate() {
            let id = u64::try_from(i).map_err(|e| e.to_string())? + 1;
            nodes.push(NsNode {
                id,
                zone: h.zone.clone(),
                host: i,
                addr: h.addr,
                url: format!("http://{}:{HTTP_PORT}", h.addr),
                rpc: format!("{}:{RPC_PORT}", h.addr),
                config: dir.path().join(format!("n{id}.toml")),
                log: dir.path().join(format!("n{id}.log")),
                data_dir: dir.path().join(format!("n{id}")),
                process: None,
                paused: false,
                peak_rss_bytes: 0,
            });
        }
        for n in &nodes {
            let peers = nodes
                .iter()
                .filter(|p| p.id != n.id)
                .map(|p| format!("\"{}={}@{}\"", p.id, p.zone, p.rpc))
                .collect::<Vec<_>>()
                .join(", ");
            std::fs::write(&n.config, node_config(n, &peers, extra_toml))
                .map_err(|e| e.to_string())?;
        }
        let mut c = NsCluster {
            nodes,
            net,
            bin: stowage_bin(),
            dir: Some(dir),
        };
        for id in c.ids() {
            c.start_node(id)?;
        }
        Ok(c)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The directory holding configs and logs (kept by `keep_dir`).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    pub fn node(&self, id: u64) -> Result<&NsNode, String> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| format!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NsNode, String> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| format!("no node {id}"))
    }

    pub fn url(&self, id: u64) -> String {
        self.node(id).map(|n| n.url.clone()).unwrap_or_default()
    }

    pub fn urls(&self) -> Vec<(u64, String)> {
        self.nodes.iter().map(|n| (n.id, n.url.clone())).collect()
    }

    /// The index of node `id`'s host in `net.hosts`.
    pub fn host(&self, id: u64) -> Result<usize, String> {
        self.node(id).map(|n| n.host)
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.process.as_ref().is_some_and(Node::is_running))
            .map(|n| n.id)
            .collect()
    }

    /// Starts node `id`'s process inside its namespace (blocking: it waits
    /// for the node to print its address).
    pub fn start_node(&mut self, id: u64) -> Result<(), String> {
        let bin = self.bin.clone();
        let ns = self_ns(&self.net, self.host(id)?)?;
        let n = self.node_mut(id)?;
        let prefix = vec!["ip".into(), "netns".into(), "exec".into(), ns];
        let node = Node::try_launch(
            &bin,
            prefix,
            &n.data_dir,
            vec!["--config".into(), n.config.display().to_string()],
            &format!("{}:{HTTP_PORT}", n.addr),
            Some(n.log.clone()),
        )?;
        n.process = Some(node);
        n.paused = false;
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) -> Result<(), String> {
        let n = self.node_mut(id)?;
        n.sample_rss();
        if let Some(mut p) = n.process.take() {
            p.kill9();
        }
        n.paused = false;
        Ok(())
    }

    /// Kills (if running) and starts again on the same data.
    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        self.kill(id)?;
        self.start_node(id)
    }

    /// SIGSTOP: the process stays, silent, holding its sockets open.
    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        let n = self.node_mut(id)?;
        n.sample_rss();
        if n.process.as_ref().is_some_and(|p| p.signal("STOP")) {
            n.paused = true;
            Ok(())
        } else {
            Err(format!("node {id} is not running"))
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        let n = self.node_mut(id)?;
        if n.process.as_ref().is_some_and(|p| p.signal("CONT")) {
            n.paused = false;
            Ok(())
        } else {
            Err(format!("node {id} is not running"))
        }
    }

    /// Kills the node and removes its data directory (a replaced disk).
    pub fn wipe(&mut self, id: u64) -> Result<(), String> {
        self.kill(id)?;
        let dir = self.node(id)?.data_dir.clone();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("wiping {}: {e}", dir.display())),
        }
    }

    /// Samples every running node's peak RSS.
    pub fn sample_rss(&mut self) {
        for n in &mut self.nodes {
            n.sample_rss();
        }
    }

    /// The last lines of node `id`'s log.
    pub fn log_tail(&self, id: u64) -> String {
        self.node(id)
            .map(|n| crate::process::log_tail(&n.log))
            .unwrap_or_default()
    }

    /// `GET /_stowage/status` of node `id`, if it answers in time.
    pub async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let c = client(STATUS_TIMEOUT);
        let r = c
            .get(format!("{}/_stowage/status", self.url(id)))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Whether `/readyz` on node `id` answers 200.
    pub async fn is_ready(&self, id: u64) -> bool {
        let c = client(STATUS_TIMEOUT);
        match c.get(format!("{}/readyz", self.url(id))).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// The leader that the nodes in `among` that answer agree on: one node
    /// says it is the leader and no answering node names another.
    pub async fn leader_among(&self, among: &[u64]) -> Option<(u64, u64)> {
        let mut leaders = Vec::new();
        let mut named = Vec::new();
        for &id in among {
            if let Some(s) = self.status(id).await {
                if s["role"] == "leader" {
                    leaders.push((id, s["term"].as_u64().unwrap_or(0)));
                }
                if let Some(l) = s["leader"].as_u64() {
                    named.push(l);
                }
            }
        }
        match leaders.as_slice() {
            [(id, term)] if named.iter().all(|l| l == id) => Some((*id, *term)),
            _ => None,
        }
    }

    /// The agreed leader and its term among the running nodes.
    pub async fn leader(&self) -> Option<(u64, u64)> {
        self.leader_among(&self.running()).await
    }

    /// Waits until the nodes in `among` agree on a leader.
    pub async fn wait_leader_among(
        &self,
        among: &[u64],
        limit: Duration,
    ) -> Result<(u64, u64), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.leader_among(among).await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader among {among:?} after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node in the membership runs, answers `/readyz`,
    /// one leader is agreed and every member has applied the leader's log.
    pub async fn wait_healthy(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.healthy_now().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("cluster not healthy after {limit:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn healthy_now(&self) -> Result<(), String> {
        let ids = self.ids();
        if self.running().len() != ids.len() {
            return Err("not every node runs".into());
        }
        for &id in &ids {
            if !self.is_ready(id).await {
                return Err(format!("node {id} is not ready"));
            }
        }
        let (leader, _) = self
            .leader_among(&ids)
            .await
            .ok_or_else(|| "no agreed leader".to_string())?;
        let l = self
            .status(leader)
            .await
            .ok_or_else(|| "leader status".to_string())?;
        let leader_log = l["last_log_index"].as_u64();
        for &id in &ids {
            let n = self
                .status(id)
                .await
                .ok_or_else(|| format!("node {id} status"))?;
            if n["last_applied"].as_u64() < leader_log {
                return Err(format!("node {id} has not applied the leader's log"));
            }
        }
        // Asked again, so entries written meanwhile (the workload may still
        // run) do not keep `matched` forever behind the index asked for.
        let l = self
            .status(leader)
            .await
            .ok_or_else(|| "leader status".to_string())?;
        let members = l["members"].as_array().cloned().unwrap_or_default();
        for &id in &ids {
            let m = members.iter().find(|m| m["id"] == id);
            if !m.is_some_and(|m| m["voter"] == true) {
                return Err(format!("node {id} is not a voter"));
            }
            let matched = m.and_then(|m| m["matched"].as_u64());
            if id != leader && matched < leader_log {
                return Err(format!("node {id} has not caught up"));
            }
        }
        Ok(())
    }

    /// Runs `stowage <args>` (from the root namespace, against a node's
    /// URL) with a timeout; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut child = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("stowage {args:?}: {e}"))?;
        let deadline = Instant::now() + CLI_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "stowage {args:?} did not finish in {CLI_TIMEOUT:?}"
                    ));
                }
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("stowage {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "stowage {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The `ID=ZONE@ADDR` spec `stowage members add` takes for node `id`.
    pub fn member_spec(&self, id: u64) -> Result<String, String> {
        let n = self.node(id)?;
        Ok(format!("{}={}@{}", n.id, n.zone, n.rpc))
    }

    /// Replaces node `id`'s disk with an empty one, by the documented
    /// procedure: wipe, start it fresh (its new incarnation keeps it from
    /// voting), then `stowage members replace ID` through a survivor, which
    /// makes it a learner until caught up and then a voter again.
    pub async fn replace_wiped(&mut self, id: u64, via: u64) -> Result<(), String> {
        let via_url = self.url(via);
        tokio::task::block_in_place(|| self.wipe(id))?;
        tokio::task::block_in_place(|| self.start_node(id))?;
        let out = tokio::task::block_in_place(|| {
            self.cli(&["members", "replace", &id.to_string(), "--node", &via_url])
        })?;
        if !out.contains("is a voter") {
            return Err(format!("members replace said: {out}"));
        }
        Ok(())
    }

    /// Keeps the directory with configs, data and logs after drop (for a
    /// failed run worth reading); returns its path.
    pub fn keep_dir(mut self) -> Result<PathBuf, String> {
        for n in &mut self.nodes {
            if let Some(mut p) = n.process.take() {
                p.kill9();
            }
        }
        let dir = self.dir.take().ok_or_else(|| "already kept".to_string())?;
        let path = dir.keep();
        forget_dir(&path);
        Ok(path)
    }
}

fn self_ns(net: &Net, host: usize) -> Result<String, String> {
    net.hosts
        .get(host)
        .map(|h| h.ns.clone())
        .ok_or_else(|| format!("no host {host}"))
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        // Processes first: a namespace with processes in it outlives `ip
        // netns del`.
        for n in &mut self.nodes {
            if let Some(mut p) = n.process.take() {
                p.kill9();
            }
        }
        // Removing thousands of chunk files takes minutes where the
        // filesystem discards on delete; a detached `rm` does it while the
        // run ends (falling back to removing it here).
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            forget_dir(&path);
            remove_dir_detached(&path);
        }
    }
}
