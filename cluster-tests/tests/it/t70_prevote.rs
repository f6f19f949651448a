//! An isolated follower must not disrupt a healthy cluster when it comes
//! back. Cut off from its peers, a follower without pre-vote campaigns
//! again and again, raising its term; when the partition heals, that term
//! reaches the leader, which steps down, and the cluster holds an election
//! it did not need. With pre-vote (DESIGN.md, "Node identity and membership
//! safety") the follower's campaigns fail at the pre-vote stage, its term
//! stays, and the leader keeps its term. This fails on a node without
//! pre-vote, by design.

use std::time::Duration;

use stowage_cluster_tests::netns::{self, NsCluster};

const ELECTION_TIMEOUT_MS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_does_not_raise_the_term_of_the_healthy_cluster() {
    if let Err(e) = netns::available() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let toml =
        format!("raft_heartbeat_ms = 50\nraft_election_timeout_ms = {ELECTION_TIMEOUT_MS}\n");
    let cluster = tokio::task::block_in_place(|| NsCluster::start(&["a", "b", "c"], &toml))
        .expect("cluster starts");
    cluster
        .wait_healthy(Duration::from_secs(60))
        .await
        .expect("cluster forms");
    let (leader, term) = cluster
        .wait_leader_among(&cluster.ids(), Duration::from_secs(10))
        .await
        .expect("a leader");
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let others: Vec<usize> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != follower)
        .map(|id| cluster.host(id).expect("host"))
        .collect();
    // Cut off from its peers only, so its own status still answers and
    // shows what it does meanwhile.
    cluster
        .net
        .partition(&[cluster.host(follower).expect("host")], &others)
        .expect("partition");
    // The scenario is "several election timeouts": the hold is the
    // fault's length, not a wait for a condition.
    tokio::time::sleep(Duration::from_millis(ELECTION_TIMEOUT_MS * 8)).await;
    // Informational: what the cut-off follower says, and how long it takes
    // to say it (a longer timeout than `status`, to see a slow answer).
    let asked = std::time::Instant::now();
    let isolated = netns::client(Duration::from_secs(10))
        .get(format!("{}/_stowage/status", cluster.url(follower)))
        .send()
        .await;
    let isolated_term = match isolated {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|s| s["term"].as_u64()),
        Err(e) => {
            eprintln!("the cut-off follower's status did not answer: {e}");
            None
        }
    };
    eprintln!(
        "the cut-off follower's status took {} ms",
        asked.elapsed().as_millis()
    );
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != follower)
        .collect();
    let during = cluster
        .wait_leader_among(&survivors, Duration::from_secs(10))
        .await
        .expect("the majority keeps a leader");
    cluster.net.heal_all().expect("heal");
    cluster
        .wait_healthy(Duration::from_secs(60))
        .await
        .expect("the follower catches up");
    let (after_leader, after_term) = cluster
        .wait_leader_among(&cluster.ids(), Duration::from_secs(10))
        .await
        .expect("a leader after heal");
    eprintln!(
        "leader {leader} term {term}; isolated follower {follower} reached term {isolated_term:?}; \
         majority leader during isolation {during:?}; after heal leader {after_leader} term {after_term}"
    );
    assert_eq!(
        (after_leader, after_term),
        (leader, term),
        "the healthy cluster's leader/term changed after follower {follower} came back \
         (its own term went to {isolated_term:?} while cut off): without pre-vote its elections \
         disrupt a leader that never lost its majority"
    );
}
