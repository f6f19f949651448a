use crate::common::*;

#[test]
fn skopeo_copies_a_multi_layer_image_there_and_back() {
    if !tool_available("skopeo") {
        return;
    }
    let node = Node::start_with(bin(), &["--chunk-size-bytes", "1048576"]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    let layers = vec![
        data(1, 3 * 1024 * 1024 + 17),
        data(2, 100),
        data(3, 700_000),
    ];
    let digest = write_oci_layout(&src, &layers);

    let remote = format!("{}/skopeo/multi:v1", node.host);
    skopeo_push(&src, "v1", &remote);
    skopeo_pull(&remote, &back, "v1");
    assert_same_layout(&src, &back, &digest);
}

/// A robot token as skopeo's credentials: push and pull with it, refused
/// without it and after the robot is revoked.
#[tokio::test]
async fn skopeo_pushes_and_pulls_with_a_robot_token() {
    if !tool_available("skopeo") {
        return;
    }
    let node = Node::start(bin());
    let c = client();
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("root", Some("skopeo-root-pw"));
    let r = c
        .post(format!("{}/_stowage/users", node.url))
        .json(&serde_json::json!({"name": "root", "password": "skopeo-root-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(c.post(format!("{}/_stowage/robots", node.url)))
        .json(&serde_json::json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin(c.post(format!("{}/_stowage/access", node.url)))
        .json(&serde_json::json!({"op": "grant", "pattern": "ci/**", "subject": "ci", "actions": "pull,push"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let back = tmp.path().join("back");
    let digest = write_oci_layout(&src, &[data(4, 200_000), data(5, 1000)]);
    let remote = format!("docker://{}/ci/app:v1", node.host);
    let creds = format!("ci:{token}");
    let run = |args: &[&str]| {
        std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap()
    };
    let src_ref = format!("oci:{}:v1", src.display());
    let back_ref = format!("oci:{}:v1", back.display());
    let push = |creds: Option<&str>| {
        let mut a = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            a.extend(["--dest-creds", c]);
        }
        a.extend([src_ref.as_str(), remote.as_str()]);
        run(&a)
    };
    assert!(!push(None).status.success(), "no credentials, no push");
    let out = push(Some(&creds));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &remote,
        &back_ref,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_layout(&src, &back, &digest);
    let r = admin(c.delete(format!("{}/_stowage/robots/ci", node.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !push(Some(&creds)).status.success(),
        "a revoked robot cannot push"
    );
}
