//! Cluster and chaos tests for Stowage, and the harness the node's own
//! integration tests share. Tests start real `stowage` processes, kill,
//! restart and reconfigure them, and check with real clients that nothing
//! acknowledged is lost. They never reach into a node's internals: only its
//! binary, its HTTP API and its data directory as a black box.
//!
//! Layout: `attacks.rs` (the access-control attack walk, for one node and
//! a cluster), `process.rs` (one node process), `cluster.rs` (several, with
//! generated configs, on loopback), `netns.rs` (several, one per network
//! namespace, with network faults), `chaos/` (the chaos runner behind the
//! `stowage-chaos` binary), `oci.rs` (OCI API helpers over HTTP),
//! `tools.rs` (external tools: skopeo, docker), `disk.rs` (a data
//! directory's chunk files, seen from outside).

pub mod attacks;
pub mod chaos;
pub mod cluster;
pub mod disk;
pub mod netns;
pub mod oci;
pub mod process;
pub mod tools;
