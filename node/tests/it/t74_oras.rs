//! ORAS as a real client of a node with access control on, through the ORAS
//! project's Python SDK (`oras` on PyPI; the Go CLI is not packaged where
//! CI installs from): login, an artifact pushed (monolithic and chunked
//! uploads) and pulled back byte for byte, and a refused anonymous pull.
//! The SDK runs with its Basic backend: its token backend keeps the first
//! token it got (pull, from a HEAD) and resends it after a 401
//! `insufficient_scope`, asking again only after a 403, so it cannot push
//! to a registry that answers as Distribution and the docker engine expect
//! (401 for a token without the scope).

use std::process::Command;

use crate::common::*;

/// The client side, run by python3 with the node's host, the user's
/// password and a working directory as arguments.
const SCRIPT: &str = r#"
import os, sys
import oras.client
host, password, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(work)
cfg = os.path.join(work, "auth.json")
with open("artifact.bin", "wb") as f:
    f.write(os.urandom(3 * 1024 * 1024 + 17))
with open("notes.txt", "w") as f:
    f.write("pushed by oras\n")

c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
try:
    c.login(username="root", password="wrong-password", hostname=host, config_path=cfg)
    c.push(target=f"{host}/oras/never:v1", files=["notes.txt"], config_path=cfg)
    sys.exit("a wrong password pushed")
except SystemExit:
    raise
except Exception:
    pass

c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
c.login(username="root", password=password, hostname=host, config_path=cfg)
r = c.push(target=f"{host}/oras/art:v1", files=["artifact.bin", "notes.txt"], config_path=cfg)
assert r.status_code in (200, 201), r.status_code
r = c.push(target=f"{host}/oras/chunked:v1", files=["artifact.bin"], config_path=cfg,
           do_chunked=True, chunk_size=1024 * 1024)
assert r.status_code in (200, 201), r.status_code
for target in (f"{host}/oras/art:v1", f"{host}/oras/chunked:v1"):
    out = os.path.join(work, "out-" + target.rsplit("/", 1)[1].replace(":", "-"))
    files = c.pull(target=target, outdir=out, config_path=cfg)
    got = open(os.path.join(out, "artifact.bin"), "rb").read()
    assert got == open("artifact.bin", "rb").read(), target
print("tags", c.get_tags(f"{host}/oras/art"))

anon = oras.client.OrasClient(hostname=host, insecure=True)
try:
    anon.pull(target=f"{host}/oras/art:v1", outdir=os.path.join(work, "anon"))
    sys.exit("pulled without logging in")
except SystemExit:
    raise
except Exception as e:
    print("refused:", e)
print("ok")
"#;

fn oras_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import oras.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "the oras Python SDK must be installed in CI"
        );
        eprintln!("SKIPPED: the oras Python SDK is not installed (pip install oras)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_logs_in_pushes_and_pulls_an_artifact() {
    if !oras_available() {
        return;
    }
    let node = Node::start(bin());
    let pw = "oras-password-1";
    let r = client()
        .post(format!("{}/_stowage/users", node.url))
        .json(&serde_json::json!({"name": "root", "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &node.host, pw])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("v1"), "{stdout}");
}
