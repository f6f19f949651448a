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
