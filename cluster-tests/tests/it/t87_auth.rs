//! Access control is replicated state: a user added through one node logs
//! in on another, a token issued by node 1 is accepted by node 3, and a
//! user removed on node 2 is refused on node 1 as soon as the change has
//! reached it. A rules change committed anywhere holds everywhere. The
//! single node's attack walk and upload-session checks run here on three
//! nodes.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use stowage_cluster_tests::attacks;
use stowage_cluster_tests::cluster::Cluster;
use stowage_cluster_tests::oci::{client, sha256};

const ROOT_PW: &str = "cluster-root-pw";
const DEV_PW: &str = "cluster-dev-pw";

async fn status_of(r: reqwest::RequestBuilder) -> StatusCode {
    r.send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Retries `probe` until it gives `want` (replication to the node asked
/// takes a moment after the commit), bounded.
async fn eventually(what: &str, want: StatusCode, mut probe: impl AsyncFnMut() -> StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_tokens_and_rules_hold_on_every_node() {
    let cluster = Cluster::start(&["a", "b", "c"], "");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let c = client();
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));

    // The first user, through node 2 (open until then).
    let r = c
        .post(format!("{u2}/_stowage/users"))
        .json(&json!({"name": "root", "password": ROOT_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Node 1 checks at once: the user is found through the read barrier.
    assert_eq!(
        status_of(c.get(format!("{u1}/v2/")).basic_auth("root", Some(ROOT_PW))).await,
        StatusCode::OK
    );
    eventually(
        "anonymous on node 3",
        StatusCode::UNAUTHORIZED,
        async || status_of(c.get(format!("{u3}/v2/"))).await,
    )
    .await;

    // A developer with push on dev/**, granted through node 3.
    let r = c
        .post(format!("{u3}/_stowage/users"))
        .basic_auth("root", Some(ROOT_PW))
        .json(&json!({"name": "dev", "password": DEV_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{u3}/_stowage/access"))
        .basic_auth("root", Some(ROOT_PW))
        .json(
            &json!({"op": "grant", "pattern": "dev/**", "subject": "dev", "actions": "pull,push"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A token from node 1, used on node 3.
    let r = c
        .get(format!(
            "{u1}/token?service=stowage&scope=repository:dev/app:pull,push"
        ))
        .basic_auth("dev", Some(DEV_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_owned();
    assert_eq!(t["scope"], "repository:dev/app:pull,push");
    let blob = b"pushed with node 1's token through node 3".to_vec();
    let d = sha256(&blob);
    let push = |url: String, blob: Vec<u8>| {
        let c = c.clone();
        let token = token.clone();
        async move {
            status_of(
                c.post(format!(
                    "{url}/v2/dev/app/blobs/uploads/?digest={}",
                    sha256(&blob)
                ))
                .bearer_auth(&token)
                .body(blob),
            )
            .await
        }
    };
    eventually(
        "node 3 takes node 1's token",
        StatusCode::CREATED,
        async || push(u3.clone(), blob.clone()).await,
    )
    .await;
    assert_eq!(
        status_of(
            c.get(format!("{u2}/v2/dev/app/blobs/{d}"))
                .bearer_auth(&token)
        )
        .await,
        StatusCode::OK
    );
    // Outside the grant, on any node: 403.
    assert_eq!(
        status_of(
            c.post(format!("{u2}/v2/prod/app/blobs/uploads/"))
                .basic_auth("dev", Some(DEV_PW))
        )
        .await,
        StatusCode::FORBIDDEN
    );

    // Removed through node 2: refused on node 1, password and token alike.
    let r = c
        .delete(format!("{u2}/_stowage/users/dev"))
        .basic_auth("root", Some(ROOT_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually(
        "dev's password on node 1",
        StatusCode::UNAUTHORIZED,
        async || status_of(c.get(format!("{u1}/v2/")).basic_auth("dev", Some(DEV_PW))).await,
    )
    .await;
    eventually(
        "dev's token on node 1",
        StatusCode::UNAUTHORIZED,
        async || push(u1.clone(), b"after removal".to_vec()).await,
    )
    .await;

    // A robot created through node 1 pushes through node 2; revoked
    // through node 3, it is refused on node 2.
    let r = c
        .post(format!("{u1}/_stowage/robots"))
        .basic_auth("root", Some(ROOT_PW))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let robot = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .post(format!("{u1}/_stowage/access"))
        .basic_auth("root", Some(ROOT_PW))
        .json(&json!({"op": "grant", "pattern": "ci/**", "subject": "ci", "actions": "push"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let robot_push = |url: String, n: u64| {
        let c = c.clone();
        let robot = robot.clone();
        async move {
            let blob = format!("robot blob {n}").into_bytes();
            status_of(
                c.post(format!(
                    "{url}/v2/ci/app/blobs/uploads/?digest={}",
                    sha256(&blob)
                ))
                .basic_auth("ci", Some(&robot))
                .body(blob),
            )
            .await
        }
    };
    eventually(
        "the robot pushes through node 2",
        StatusCode::CREATED,
        async || robot_push(u2.clone(), 1).await,
    )
    .await;
    let r = c
        .delete(format!("{u3}/_stowage/robots/ci"))
        .basic_auth("root", Some(ROOT_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually(
        "the revoked robot on node 2",
        StatusCode::UNAUTHORIZED,
        async || robot_push(u2.clone(), 2).await,
    )
    .await;

    // Key rotation through node 3: tokens signed before still verify.
    let r = c
        .post(format!("{u3}/_stowage/keys"))
        .basic_auth("root", Some(ROOT_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!(
            "{u2}/token?service=stowage&scope=repository:dev/app:pull"
        ))
        .basic_auth("root", Some(ROOT_PW))
        .send()
        .await
        .unwrap();
    let new_token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for url in [&u1, &u2, &u3] {
        eventually("a token under the new key", StatusCode::OK, async || {
            status_of(
                c.get(format!("{url}/v2/dev/app/blobs/{d}"))
                    .bearer_auth(&new_token),
            )
            .await
        })
        .await;
    }
}

/// The single node's attack walk (node t85) on a cluster: accounts and rules
/// change through node 1, tokens come from node 2, every registry request
/// goes to node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_case_holds_across_nodes() {
    let cluster = Cluster::start(
        &["a", "b", "c"],
        "token_ttl_secs = 2\nmax_failed_logins_per_minute = 5\n",
    );
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let nodes = attacks::Nodes {
        admin: cluster.url(1),
        issuer: cluster.url(2),
        client: cluster.url(3),
        logs: cluster.members.iter().map(|m| m.log.clone()).collect(),
    };
    attacks::every_case(&nodes).await;
}

/// The upload-session hardening on a cluster: a session opened on node 1 is
/// unknown under any other repository name through every node (the others
/// forward to its owner), and an id naming a node outside the membership is
/// 404 on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_stay_in_their_repository_on_every_node() {
    let cluster = Cluster::start(&["a", "b", "c"], "chunk_size_bytes = 4096\n");
    cluster.wait_all_ready(Duration::from_secs(60)).await;
    let urls = [cluster.url(2), cluster.url(3), cluster.url(1)];
    attacks::session_stays_in_its_repository(&cluster.url(1), &urls).await;
    attacks::ids_of_absent_nodes_are_unknown(&urls, 9).await;
}
