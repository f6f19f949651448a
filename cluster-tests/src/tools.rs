//! External tools the tests drive, and the loud skip line when one is
//! missing outside CI.

use std::process::{Command, Stdio};

/// Whether a Docker engine answers; prints the loud skip line if not.
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: no Docker engine");
    }
    ok
}

/// Whether `tool` is installed; prints the loud skip line if not.
pub fn tool_available(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        // CI installs every tool the suite uses; a missing one there is a
        // broken pipeline, not a reason to skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} must be installed in CI"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// Runs skopeo, failing the test with its output if it fails.
pub fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skopeo copy` of `layout:tag` (an OCI layout) to `remote`
/// (`host:port/repo:tag`) over plain HTTP, keeping digests: without
/// `--preserve-digests` skopeo would gzip uncompressed layers on the way.
pub fn skopeo_push(layout: &std::path::Path, tag: &str, remote: &str) {
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{remote}"),
    ]);
}

/// `skopeo copy` of `remote` into the OCI layout `layout:tag`, unchanged.
pub fn skopeo_pull(remote: &str, layout: &std::path::Path, tag: &str) {
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-tls-verify=false",
        &format!("docker://{remote}"),
        &format!("oci:{}:{tag}", layout.display()),
    ]);
}

/// A Distribution registry (Debian's `docker-registry`) on a loopback port,
/// with deletes enabled and its storage in a temporary directory; stopped
/// on drop. `None` (with one loud line) where it is not installed.
pub struct Distribution {
    child: std::process::Child,
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    pub fn start() -> Option<Distribution> {
        if !tool_available("docker-registry") {
            println!("SKIPPED: no docker-registry (Debian's Distribution): its part of this test not run");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::process::free_port();
        let child = Self::spawn(dir.path(), port);
        Some(Distribution {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
        })
    }

    fn spawn(dir: &std::path::Path, port: u16) -> std::process::Child {
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .expect("config written");
        let child = std::process::Command::new("docker-registry")
            .args(["serve", cfg.to_str().unwrap_or_default()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child
    }

    /// Stops it (SIGKILL) and starts it again on the same storage and port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port);
    }
}
