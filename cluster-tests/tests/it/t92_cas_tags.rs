//! Compare-and-swap tags (a Stowage extension): `If-None-Match: *` creates
//! a tag only once, `If-Match: "<digest>"` moves it only from where the
//! writer saw it, decided in apply so two writers racing through different
//! nodes never both win; and the `OCI-Tag` headers of a push with `?tag=`.

use std::time::Duration;

use reqwest::StatusCode;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_tag_updates_have_exactly_one_winner() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u3) = (cluster.url(1), cluster.url(3));
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = push_blob(&c, &u1, "cas/app", &config).await;
    // Distinct manifests, one layer each.
    let mut manifests = Vec::new();
    for i in 0..21u64 {
        let layer = data(900 + i, 1000);
        let ld = push_blob(&c, &u1, "cas/app", &layer).await;
        manifests.push(image_manifest(
            &(cd.clone(), config.len()),
            &[(ld, layer.len())],
        ));
    }
    let put = |url: &str, body: &[u8], header: Option<(&str, String)>| {
        let mut r = c
            .put(format!("{url}/v2/cas/app/manifests/live"))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.to_vec());
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        r.send()
    };

    // Created once.
    let r = put(&u1, &manifests[0], Some(("If-None-Match", "*".into())))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256(&manifests[0])));
    let r = put(&u3, &manifests[1], Some(("If-None-Match", "*".into())))
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED".into()
        )
    );

    // Ten rounds of two writers that both saw the same ETag, through
    // different nodes at the same moment.
    for round in 0..10 {
        let (a, b) = (&manifests[1 + 2 * round], &manifests[2 + 2 * round]);
        let (ra, rb) = tokio::join!(
            put(&u1, a, Some(("If-Match", etag.clone()))),
            put(&u3, b, Some(("If-Match", etag.clone())))
        );
        let (sa, sb) = (ra.unwrap().status(), rb.unwrap().status());
        let winner = match (sa, sb) {
            (StatusCode::CREATED, StatusCode::PRECONDITION_FAILED) => a,
            (StatusCode::PRECONDITION_FAILED, StatusCode::CREATED) => b,
            other => panic!("round {round}: {other:?}, wanted exactly one winner"),
        };
        let want = sha256(winner);
        for url in [&u1, &u3, &cluster.url(2)] {
            let r = c
                .get(format!("{url}/v2/cas/app/manifests/live"))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), want);
            assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{want}\""));
        }
        etag = format!("\"{want}\"");
    }

    // A stale ETag, a malformed one, and a condition on a digest.
    let stale = format!("\"{}\"", sha256(&manifests[0]));
    let r = put(&u1, &manifests[0], Some(("If-Match", stale)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let text = r.text().await.unwrap();
    assert!(text.contains("points at"), "{text}");
    let r = put(
        &u1,
        &manifests[0],
        Some(("If-Match", "\"nonsense\"".into())),
    )
    .await
    .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::BAD_REQUEST, "UNSUPPORTED".into())
    );
    let d0 = sha256(&manifests[0]);
    let r = c
        .put(format!("{u1}/v2/cas/app/manifests/{d0}"))
        .header("Content-Type", OCI_MANIFEST)
        .header("If-Match", etag.clone())
        .body(manifests[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A push by digest with ?tag= announces each tag it set.
    let r = c
        .put(format!("{u3}/v2/cas/app/manifests/{d0}?tag=one&tag=two"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifests[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags: Vec<&str> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(tags, vec!["one", "two"]);
}
