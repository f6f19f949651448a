use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn tags_paginate_with_link() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    let (d, _) = push_image(&c, u, "org/app", "seed", 1, &[10]).await;
    let m = c
        .get(format!("{u}/v2/org/app/manifests/{d}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut want = vec!["seed".to_string()];
    for t in ["b", "a", "d", "c", "e"] {
        let r = put_manifest(&c, u, "org/app", t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        want.push(t.into());
    }
    want.sort();

    let r = c
        .get(format!("{u}/v2/org/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "org/app");
    assert_eq!(v["tags"], serde_json::json!(want));

    let mut got = Vec::new();
    let mut next = "/v2/org/app/tags/list?n=2".to_string();
    loop {
        let r = c.get(format!("{u}{next}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let v: serde_json::Value = r.json().await.unwrap();
        let page: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
        assert!(page.len() <= 2);
        got.extend(page);
        match link {
            Some(l) => {
                assert!(l.ends_with("rel=\"next\""), "{l}");
                next = l[1..l.find('>').unwrap()].to_string();
            }
            None => break,
        }
    }
    assert_eq!(got, want);

    let r = c
        .get(format!("{u}/v2/org/app/tags/list?n=10&last=c"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["d", "e", "seed"]));

    let r = c
        .get(format!("{u}/v2/org/none/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into())
    );
}

#[tokio::test]
async fn catalog_paginates() {
    let node = Node::start(bin());
    let c = client();
    let u = &node.url;
    for r in ["z", "a/b", "m", "a"] {
        push_blob(&c, u, r, r.as_bytes()).await;
    }
    let r = c.get(format!("{u}/v2/_catalog")).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["a", "a/b", "m", "z"]));
    let r = c.get(format!("{u}/v2/_catalog?n=2")).send().await.unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=2&last=a%2Fb>; rel=\"next\""
    );
    let r = c
        .get(format!("{u}/v2/_catalog?n=2&last=a%2Fb"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["m", "z"]));
}
