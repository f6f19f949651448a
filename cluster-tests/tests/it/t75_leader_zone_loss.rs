//! The leader's zone loses its network to the other zones while requests
//! are in flight to every node. No request may outlive the node's request
//! deadline (plus a margin for a noisy machine) because a peer vanished:
//! DESIGN.md gives every cluster RPC its own deadline. Clients in the lost
//! zone still reach their own node (peers-only partition), so its answers
//! are bounded too. The time to the first acknowledged write on the
//! survivors is printed, not asserted.
//!
//! The nodes run with `request_deadline_secs = 3` (the default is 5).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_cluster_tests::netns::{self, NsCluster};
use stowage_cluster_tests::oci::{image_manifest, sha256, OCI_MANIFEST};

const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// Scheduling noise on a shared 2-core machine, and one client round trip.
const MARGIN: Duration = Duration::from_secs(5);
/// Long enough to see a node's own hang rather than cut it short.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// (node, start, duration, ok, what)
type Log = Arc<Mutex<Vec<(u64, Instant, Duration, bool, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_outlives_the_deadline_when_the_leaders_zone_is_cut_off() {
    if let Err(e) = netns::available() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let mut toml = String::from("raft_heartbeat_ms = 100\nraft_election_timeout_ms = 1000\n");
    toml.push_str(&format!(
        "request_deadline_secs = {}\n",
        REQUEST_DEADLINE.as_secs()
    ));
    let cluster = tokio::task::block_in_place(|| NsCluster::start(&["a", "b", "c"], &toml))
        .expect("cluster starts");
    cluster
        .wait_healthy(Duration::from_secs(60))
        .await
        .expect("cluster forms");

    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (w, (node, url)) in cluster.urls().into_iter().cycle().take(6).enumerate() {
        let (log, stop) = (log.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = netns::client(CLIENT_TIMEOUT);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let repo = format!("t75/w{w}");
                let config = format!("{{\"w\":{w},\"n\":{n}}}").into_bytes();
                let cd = sha256(&config);
                let start = Instant::now();
                let r = c
                    .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={cd}"))
                    .body(config.clone())
                    .send()
                    .await;
                let ok = r.as_ref().is_ok_and(|r| r.status() == 201);
                log.lock().unwrap().push((
                    node,
                    start,
                    start.elapsed(),
                    ok,
                    format!("blob {repo}"),
                ));
                if !ok {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let m = image_manifest(&(cd, config.len()), &[]);
                let start = Instant::now();
                let r = c
                    .put(format!("{url}/v2/{repo}/manifests/t{n}"))
                    .header("Content-Type", OCI_MANIFEST)
                    .body(m)
                    .send()
                    .await;
                let ok = r.as_ref().is_ok_and(|r| r.status() == 201);
                log.lock().unwrap().push((
                    node,
                    start,
                    start.elapsed(),
                    ok,
                    format!("manifest {repo}:t{n}"),
                ));
            }
        }));
    }
    let wait_acks = |n: usize, limit: Duration| {
        let log = log.clone();
        async move {
            let deadline = Instant::now() + limit;
            while log.lock().unwrap().iter().filter(|e| e.3).count() < n {
                assert!(
                    Instant::now() < deadline,
                    "the workload stalled before the fault"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_acks(20, Duration::from_secs(60)).await;

    let (leader, _) = cluster
        .wait_leader_among(&cluster.ids(), Duration::from_secs(10))
        .await
        .expect("a leader");
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let others: Vec<usize> = survivors
        .iter()
        .map(|&id| cluster.host(id).expect("host"))
        .collect();
    cluster
        .net
        .partition(&[cluster.host(leader).expect("host")], &others)
        .expect("partition");
    // The rules go in one by one; the cut is complete once they all are.
    let cut_at = Instant::now();
    // Hold the loss long enough for requests started during it to show a
    // hang several times the deadline, then wait for a write on the
    // survivors (the condition), bounded.
    let hold = (REQUEST_DEADLINE + MARGIN) * 2;
    tokio::time::sleep(hold).await;
    let first_ok = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = log
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.3 && e.1 >= cut_at && survivors.contains(&e.0))
                .map(|e| e.1 + e.2 - cut_at)
                .min();
            if t.is_some() || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    cluster.net.heal_all().expect("heal");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(CLIENT_TIMEOUT * 3, w).await;
    }
    eprintln!(
        "leader {leader} cut off; first acknowledged write on survivors {survivors:?}: {}",
        first_ok.map_or("none within the hold + 60 s".into(), |t| format!(
            "{} ms after the cut",
            t.as_millis()
        ))
    );
    let bound = REQUEST_DEADLINE + MARGIN;
    let all = log.lock().unwrap().clone();
    let heal_at = cut_at + hold;
    let slow: Vec<String> = all
        .iter()
        // In flight at the cut, or started while the zone was cut off.
        .filter(|e| e.1 + e.2 >= cut_at && e.1 < heal_at)
        .filter(|e| e.2 > bound)
        .map(|e| format!("node {} {}: {} ms ok={}", e.0, e.4, e.2.as_millis(), e.3))
        .collect();
    let during = all
        .iter()
        .filter(|e| e.1 + e.2 >= cut_at && e.1 < heal_at)
        .count();
    eprintln!(
        "{during} requests in flight during the cut; {} over {} ms",
        slow.len(),
        bound.as_millis()
    );
    assert!(
        slow.is_empty(),
        "requests outlived the {} s deadline + {} s margin while leader {leader}'s zone was cut off:\n{}",
        REQUEST_DEADLINE.as_secs(),
        MARGIN.as_secs(),
        slow.join("\n")
    );
}
