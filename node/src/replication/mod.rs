//! Moving images between registries: a client of any OCI registry with
//! resumable blob uploads (`client.rs`) and `stowage copy` (`copy.rs`).
//! Restore's "put one repository back" pushes through the same client.

pub mod client;
pub mod copy;
