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
