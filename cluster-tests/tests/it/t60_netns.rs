//! The namespace network itself: every namespace reaches every other and
//! the root's client address, and each fault cuts exactly what it says
//! (isolate, partition, one-way), until healed. Reachability is probed
//! without a server: a TCP connect to a closed port is refused at once
//! when the packets get through, and times out when they are dropped.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use stowage_cluster_tests::netns::{self, Net};

/// Whether a connect from namespace `ns` (or the root, `None`) to `addr`
/// gets an answer (refused counts: the packets got through).
fn reaches(ns: Option<&str>, addr: Ipv4Addr) -> bool {
    let script = format!("exec 3<>/dev/tcp/{addr}/9; echo connected");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "timeout", "2", "bash", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("timeout");
            c.args(["2", "bash", "-c", &script]);
            c
        }
    };
    let out = cmd.stdin(Stdio::null()).output().expect("bash runs");
    // `timeout` exits 124 when the connect hung: dropped.
    out.status.code() != Some(124)
}

#[test]
fn faults_cut_exactly_what_they_say() {
    let net = match Net::new(&["a", "b", "c"]) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let (a, b, c) = (&net.hosts[0], &net.hosts[1], &net.hosts[2]);
    assert!(reaches(None, a.addr), "root reaches a");
    assert!(reaches(Some(&a.ns), b.addr), "a reaches b");
    assert!(reaches(Some(&c.ns), net.client_addr), "c reaches the root");

    net.isolate(0).expect("isolate");
    assert!(!reaches(None, a.addr), "isolated a is gone for clients");
    assert!(!reaches(Some(&b.ns), a.addr), "and for peers");
    assert!(reaches(Some(&b.ns), c.addr), "b still reaches c");
    net.heal_all().expect("heal");
    assert!(reaches(Some(&b.ns), a.addr), "healed");

    net.partition(&[0], &[1, 2]).expect("partition");
    assert!(!reaches(Some(&a.ns), b.addr) && !reaches(Some(&c.ns), a.addr));
    assert!(
        reaches(None, a.addr),
        "clients still reach a partitioned node"
    );
    net.heal_all().expect("heal");

    net.one_way(&[0], &[1]).expect("one way");
    // A connect needs both directions, so probe each half by its effect:
    // a's SYN to b is dropped; b's SYN reaches a, whose answer is dropped.
    assert!(!reaches(Some(&a.ns), b.addr), "a → b dropped");
    assert!(
        !reaches(Some(&b.ns), a.addr),
        "the answer a → b is dropped too"
    );
    assert!(reaches(Some(&a.ns), c.addr), "a → c untouched");
    net.heal_all().expect("heal");
    assert!(reaches(Some(&a.ns), b.addr), "healed");
    eprintln!("netem available: {}", net.has_netem());
    let _ = netns::available();
}
