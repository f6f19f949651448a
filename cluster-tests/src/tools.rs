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
