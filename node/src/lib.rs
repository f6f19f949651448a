//! A Stowage node: the OCI Distribution API over HTTP, the consensus layer
//! that orders metadata writes, and the `stowage` command line.
//!
//! Layout: `http/` (hyper server, router, handlers, OCI error mapping,
//! upload-session forwarding), `registry/` (the service the handlers call:
//! blobs, uploads, manifests), `chunks/` (chunk I/O and replication, the
//! `Chunks` RPC, gc, repair, resync, scrub), `workers.rs` (the background
//! job trait and runner), `manifest.rs` (manifest
//! parsing and media types), `consensus.rs` (writes through Raft, read
//! barriers), `raft/` (openraft type config, log store, state machine,
//! network), `cluster/` (peers, RPC services, bootstrap), `placement.rs`
//! (where chunk copies go), `admin.rs` (status and membership), `disk.rs`
//! (free space and the ballast, as status shows them), `config.rs`,
//! `cli.rs`, `server.rs` (start-up and shutdown), `error.rs`, `tls/`
//! (HTTPS on the registry port, `stowage cert`).

pub mod admin;
pub mod auth;
pub mod backup;
pub mod chunks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod disk;
pub mod error;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod page;
pub mod placement;
pub mod raft;
pub mod receipt;
pub mod recent;
pub mod registry;
pub mod replication;
pub mod server;
pub mod tls;
pub mod workers;
