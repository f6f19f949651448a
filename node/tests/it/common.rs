//! The shared harness (`stowage-cluster-tests`) bound to this package's
//! `stowage` binary.

#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use stowage_cluster_tests::oci::*;
pub use stowage_cluster_tests::process::Node;
pub use stowage_cluster_tests::tools::*;

/// The binary cargo built for these tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stowage"))
}
