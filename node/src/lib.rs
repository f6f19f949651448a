//! A Stowage node: the OCI Distribution API over HTTP, the consensus layer
//! that orders metadata writes, and the `stowage` command line.
//!
//! Layout: `http/` (hyper server, router, handlers, OCI error mapping),
//! `registry/` (the service the handlers call: blobs, uploads, manifests),
//! `manifest.rs` (manifest parsing and media types), `consensus.rs` (log
//! append → apply → acknowledge), `config.rs`, `cli.rs`, `server.rs`
//! (start-up and shutdown), `error.rs` (the crate's one error type).

pub mod cli;
pub mod config;
pub mod consensus;
pub mod error;
pub mod http;
pub mod manifest;
pub mod placement;
pub mod registry;
pub mod server;
