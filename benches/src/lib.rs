//! Benchmarks for Stowage: criterion micro benchmarks of the storage engine
//! (`benches/storage.rs`) and `stowage-bench`, a load generator that
//! measures any OCI registry over plain HTTP, so Stowage is always measured
//! side by side with the registry people would otherwise run.
//!
//! Layout of the load generator:
//!
//! - `client`: a minimal OCI Distribution client on hyper (blob pushes,
//!   monolithic and chunked, manifest put/get, blob get with streaming
//!   digest verification) that spreads requests over a cluster's nodes.
//! - `data`: cheap incompressible test data and small OCI images built from
//!   it, with digests computed before anything is pushed.
//! - `stats`: a log-linear latency histogram (p50/p99) and the per-client
//!   tally of requests, bytes and errors.
//! - `rss`: samples the resident memory of the registry's processes.
//! - `machine`: what the numbers are relative to (CPU, cores, single-core
//!   sha256 throughput).
//! - `workloads`: the named workloads (`push-large`, `pull-large`,
//!   `push-many`, `manifest-get`, `mixed`, `skopeo`, `docker`).
//! - `real_client`: the `skopeo` and `docker` workloads, which drive those
//!   tools as processes and time whole commands.
//! - `real_image`: the images they move, written as files (valid tar
//!   layers, an OCI layout, a docker archive).
//! - `report`: one result line per workload, or one JSON object per line.
//! - `table`: reads the JSON results of several runs and prints the
//!   side-by-side table with ratios and the targets' verdicts.
//! - `error`: the crate's one error type.
//!
//! The load generator never links the node or the storage engine: it talks
//! HTTP only (or runs the real clients, which do), so it measures Stowage
//! and Distribution the same way.

pub mod client;
pub mod data;
pub mod error;
pub mod machine;
pub mod real_client;
pub mod real_image;
pub mod report;
pub mod rss;
pub mod stats;
pub mod table;
pub mod workloads;

pub use crate::error::{Error, Result};
