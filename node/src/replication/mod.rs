//! Moving images between registries: a client of any OCI registry with
//! resumable blob uploads (`client.rs`), `stowage copy` (`copy.rs`), and
//! push replication rules followed by the leader (`push.rs`), and
//! pull-through mirrors of an upstream registry (`mirror.rs`).
//! Restore's "put one repository back" pushes through the same client.

pub mod client;
pub mod copy;
pub mod mirror;
pub mod push;
