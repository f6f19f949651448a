//! Architecture invariant, checked rather than hoped for: storage knows
//! nothing of networking or consensus, and the wire crate knows nothing of
//! the domain. Reads `cargo metadata` for the resolved dependency graph.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(host_triple())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON")
}

/// Package names reachable from `root` through normal (non-dev) deps.
fn reachable(meta: &serde_json::Value, root: &str, transitive: bool) -> BTreeSet<String> {
    let packages: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root_id = packages
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(packages[dep_id].to_string()) && transitive {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn storage_never_depends_on_networking_consensus_or_other_crates() {
    let meta = metadata();
    let deps = reachable(&meta, "stowage-storage", true);
    for banned in [
        "hyper",
        "tonic",
        "openraft",
        "reqwest",
        "stowage-node",
        "stowage-proto",
    ] {
        assert!(
            !deps.contains(banned),
            "stowage-storage depends on {banned}"
        );
    }
}

#[test]
fn proto_depends_on_nothing_of_ours() {
    let meta = metadata();
    let deps = reachable(&meta, "stowage-proto", false);
    for banned in ["hyper", "openraft", "stowage-node", "stowage-storage"] {
        assert!(!deps.contains(banned), "stowage-proto depends on {banned}");
    }
}
