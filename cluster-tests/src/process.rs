//! One `stowage serve` process: started on its own data directory, killed
//! (SIGKILL) or stopped (SIGTERM), paused and resumed (SIGSTOP, SIGCONT:
//! a node that is cut off without closing its connections), restarted on
//! the same data and port.
//! The node prints `listening on ADDR` as its first stdout line; that is how
//! a node started on port 0 is found. A node may be started under a command
//! prefix (`ip netns exec NS`), which must exec the binary in place so the
//! child's pid is the node's own (signals and `/proc` then reach it).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long a node gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port for a node to listen on. Ports come from below the
/// kernel's ephemeral range (where outgoing connections take theirs), each
/// handed out once per test process, so a node restarted on its port does
/// not find it taken by another test's node or connection.
pub fn free_port() -> u16 {
    // Test processes run side by side; the pid spreads their ranges apart.
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        AtomicU16::new(20_000 + u16::try_from(std::process::id() % 8_000).unwrap_or(0))
    });
    loop {
        let port = next.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "ran out of test ports");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The last lines of a node's log file, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The `stowage` binary: `$STOWAGE_BIN`, else the one beside this test
/// executable's profile directory, built first so it is current. Built as
/// `cargo test --workspace --no-run` builds it, so under `cargo test
/// --workspace` this finds the binary already built, with the same
/// features (a `cargo build -p stowage-node` resolves features without the
/// dev-dependencies and would rebuild half the graph, and overwrite the
/// binary the node's own tests use).
pub fn stowage_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STOWAGE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>/stowage
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["test", "--quiet", "--workspace", "--no-run"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the stowage binary failed");
        profile_dir.join("stowage")
    })
    .clone()
}

/// A running `stowage serve`, killed when dropped.
pub struct Node {
    bin: PathBuf,
    /// A command the binary runs under (e.g. `ip netns exec NS`); empty for
    /// a plain process.
    prefix: Vec<String>,
    child: Option<Child>,
    args: Vec<String>,
    log: Option<PathBuf>,
    pub url: String,
    pub host: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// A fresh node on a free port with a temporary data directory.
    pub fn start(bin: &Path) -> Node {
        Self::start_with(bin, &[])
    }

    pub fn start_with(bin: &Path, extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut n = Self::spawn(bin, &dir, extra);
        n._tmp = Some(tmp);
        n
    }

    /// A node on a free port with the given data directory and extra flags.
    pub fn spawn(bin: &Path, data_dir: &Path, extra: &[&str]) -> Node {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let listen = format!("127.0.0.1:{}", free_port());
        Self::launch(bin, data_dir, args, &listen, None)
    }

    /// A node with exactly these `serve` arguments (plus `--listen`), its
    /// stderr appended to `log` if given.
    pub fn launch(
        bin: &Path,
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
        log: Option<PathBuf>,
    ) -> Node {
        let mut n = Self::unstarted(bin, Vec::new(), data_dir, args, listen, log);
        n.start_process(listen);
        n
    }

    /// Like `launch`, but run under `prefix` and returning an error instead
    /// of panicking when the node does not start: the chaos runner records
    /// a node that fails to come back as a finding, it does not abort.
    pub fn try_launch(
        bin: &Path,
        prefix: Vec<String>,
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
        log: Option<PathBuf>,
    ) -> Result<Node, String> {
        let mut n = Self::unstarted(bin, prefix, data_dir, args, listen, log);
        n.try_start_process(listen)?;
        Ok(n)
    }

    fn unstarted(
        bin: &Path,
        prefix: Vec<String>,
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
        log: Option<PathBuf>,
    ) -> Node {
        Node {
            bin: bin.to_path_buf(),
            prefix,
            child: None,
            args,
            log,
            url: String::new(),
            host: listen.to_owned(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    fn start_process(&mut self, listen: &str) {
        if let Err(e) = self.try_start_process(listen) {
            panic!("{e}");
        }
    }

    fn try_start_process(&mut self, listen: &str) -> Result<(), String> {
        // A restarted node may find its port briefly held; retry a while.
        for attempt in 0..20 {
            let stderr = match &self.log {
                Some(path) => Stdio::from(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("node log opens"),
                ),
                None => Stdio::inherit(),
            };
            let mut cmd = match self.prefix.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&self.bin);
                    c
                }
                None => Command::new(&self.bin),
            };
            // Quiet by default; STOWAGE_TEST_LOG (a level or a tracing
            // filter) shows more of a failing test's nodes, and a test that
            // reads the log passes its own `--log-level`.
            let level = std::env::var("STOWAGE_TEST_LOG").unwrap_or_else(|_| "warn".into());
            cmd.args(["serve", "--listen", listen]);
            if !self.args.iter().any(|a| a == "--log-level") {
                cmd.args(["--log-level", &level]);
            }
            let mut child = cmd
                .args(&self.args)
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .map_err(|e| format!("cannot spawn {}: {e}", self.bin.display()))?;
            let Some(stdout) = child.stdout.take() else {
                return Err("stdout was not piped".into());
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                for _ in lines {}
            });
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(line) => {
                    let Some(addr) = line.strip_prefix("listening on ") else {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("unexpected first stdout line: {line}"));
                    };
                    self.url = format!("http://{addr}");
                    self.host = addr.to_string();
                    self.child = Some(child);
                    return Ok(());
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
                    if attempt == 19 {
                        let tail = self.log.as_deref().map(log_tail).unwrap_or_default();
                        return Err(format!(
                            "stowage did not start: {status}; its log ends:\n{tail}"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        Err("stowage did not start".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait")
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`, …) to the process
    /// without reaping it; false if it is not running.
    pub fn signal(&self, name: &str) -> bool {
        let Some(c) = &self.child else {
            return false;
        };
        Command::new("kill")
            .args([&format!("-{name}"), &c.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the node again on the same data directory and address,
    /// reporting a failure to start instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill9();
        let host = self.host.clone();
        self.try_start_process(&host)?;
        if self.host != host {
            return Err(format!("restarted on {} instead of {host}", self.host));
        }
        Ok(())
    }

    /// Peak resident memory of the running process so far (`VmHWM`), if
    /// it can be read.
    pub fn try_peak_rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }

    /// SIGSTOP: the process stops answering but keeps its sockets open, as
    /// a node behind a partition does.
    pub fn pause(&self) {
        assert!(self.signal("STOP"), "kill -STOP failed");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        assert!(self.signal("CONT"), "kill -CONT failed");
    }

    /// Starts the node again on the same data directory and address.
    pub fn restart(&mut self) {
        self.kill9();
        let host = self.host.clone();
        self.start_process(&host);
        assert_eq!(self.host, host, "a restarted node keeps its address");
    }

    /// Peak resident memory of the process so far.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status readable");
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .expect("VmHWM present")
            * 1024
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
