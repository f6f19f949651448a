use std::process::Command;

use crate::common::*;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn docker_push_and_pull_an_image_built_from_scratch() {
    if !docker_available() {
        return;
    }
    let node = Node::start(bin());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.bin"), data(1, 2 * 1024 * 1024)).unwrap();
    std::fs::write(
        ctx.path().join("b.txt"),
        format!("built for {}\n", node.host),
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.bin /a.bin\nCOPY b.txt /b.txt\n",
    )
    .unwrap();
    let image = format!("{}/docker/scratch:v1", node.host);
    docker(&["build", "-q", "-t", &image, ctx.path().to_str().unwrap()]);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    let diff_ids = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        &image,
    ]);

    docker(&["push", &image]);
    docker(&["rmi", &image]);
    docker(&["pull", &image]);

    // Same config digest and same uncompressed layer digests: the image
    // came back byte for byte.
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &image]),
        id
    );
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &image
        ]),
        diff_ids
    );
    let repo_digest = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &image,
    ]);
    let c = client();
    let r = c
        .head(format!("{}/v2/docker/scratch/manifests/v1", node.url))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    let served = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(repo_digest.ends_with(&served), "{repo_digest} vs {served}");
    docker(&["rmi", &image]);
}

/// `docker login` against the token flow, push, `docker logout`, and a
/// pull that is then refused.
#[tokio::test]
async fn docker_login_push_logout_and_the_pull_is_refused() {
    if !docker_available() {
        return;
    }
    let node = Node::start(bin());
    let c = client();
    let r = c
        .post(format!("{}/_stowage/users", node.url))
        .json(&serde_json::json!({"name": "docker-user", "password": "docker-pass-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A config directory of its own, so the engine's real credentials are
    // neither used nor touched.
    let cfg = tempfile::tempdir().unwrap();
    let cfg_dir = cfg.path().to_str().unwrap().to_owned();
    let docker_with = |args: &[&str]| {
        Command::new("docker")
            .arg("--config")
            .arg(&cfg_dir)
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut login = Command::new("docker")
        .arg("--config")
        .arg(&cfg_dir)
        .args([
            "login",
            "--username",
            "docker-user",
            "--password-stdin",
            &node.host,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = login.stdin.take().unwrap();
        stdin.write_all(b"docker-pass-1\n").unwrap();
    }
    let out = ok(login.wait_with_output().unwrap(), "docker login");
    assert!(out.contains("Login Succeeded"), "{out}");

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("f.bin"), data(7, 300_000)).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY f.bin /f.bin\n",
    )
    .unwrap();
    let image = format!("{}/private/app:v1", node.host);
    ok(
        docker_with(&["build", "-q", "-t", &image, ctx.path().to_str().unwrap()]),
        "docker build",
    );
    ok(docker_with(&["push", &image]), "docker push (logged in)");
    ok(docker_with(&["rmi", &image]), "docker rmi");
    ok(docker_with(&["pull", &image]), "docker pull (logged in)");
    ok(docker_with(&["rmi", &image]), "docker rmi");

    ok(docker_with(&["logout", &node.host]), "docker logout");
    let out = docker_with(&["pull", &image]);
    assert!(!out.status.success(), "a pull after logout must be refused");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized")
            || err.contains("denied")
            || err.contains("authentication required"),
        "{err}"
    );
}
