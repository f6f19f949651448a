//! podman as a real client of a node with access control on: `podman login`
//! (the token flow with the password grant), push and pull of an image it
//! imported from a tarball made here, and after `podman logout` a pull that
//! is refused. podman keeps its images and credentials in the test's own
//! directory (vfs storage, an auth file), never the machine's.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const PW: &str = "podman-password-1";

struct Podman<'a> {
    dir: &'a Path,
}

impl Podman<'_> {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let d = self.dir.display();
        Command::new("podman")
            .args([
                "--root",
                &format!("{d}/root"),
                "--runroot",
                &format!("{d}/run"),
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .output()
            .expect("podman runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_logs_in_pushes_pulls_and_is_refused_after_logout() {
    if !tool_available("podman") {
        return;
    }
    let node = Node::start(bin());
    let c = client();
    let r = c
        .post(format!("{}/_stowage/users", node.url))
        .json(&serde_json::json!({"name": "root", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);

    let tmp = tempfile::tempdir().unwrap();
    let p = Podman { dir: tmp.path() };
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::write(rootfs.join("payload.bin"), data(73, 1_200_000)).unwrap();
    std::fs::write(rootfs.join("hello.txt"), "pushed by podman\n").unwrap();
    let tar = tmp.path().join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/podman-local:v1"]);
    let id = p.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "localhost/podman-local:v1",
    ]);

    let host = node.host.as_str();
    let image = format!("{host}/podman/app:v1");
    let wrong = p.run(&[
        "login",
        "--tls-verify=false",
        "-u",
        "root",
        "-p",
        "wrong-password",
        host,
    ]);
    assert!(!wrong.status.success(), "a wrong password logs in");
    p.ok(&["login", "--tls-verify=false", "-u", "root", "-p", PW, host]);
    p.ok(&[
        "push",
        "--tls-verify=false",
        "localhost/podman-local:v1",
        &image,
    ]);
    p.ok(&["rmi", "localhost/podman-local:v1"]);
    p.ok(&["pull", "--tls-verify=false", &image]);
    assert_eq!(
        p.ok(&["image", "inspect", "--format", "{{.Id}}", &image]),
        id,
        "the same image came back"
    );
    p.ok(&["rmi", &image]);
    p.ok(&["logout", host]);
    let out = p.run(&["pull", "--tls-verify=false", &image]);
    assert!(!out.status.success(), "pulled after logout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401")
            || err.contains("unauthorized")
            || err.contains("authentication required"),
        "{err}"
    );
}
