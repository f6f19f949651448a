//! Cluster scenarios: each module starts real `stowage` processes on
//! loopback and drives them with real clients.

/// Push to one node, pull from the others; read-your-writes across nodes.
mod t10_replication;
/// Kill the leader during a stream of pushes.
mod t20_failover;
/// A node down for many snapshots catches up by snapshot.
mod t30_snapshot;
/// Grow 3 → 4 nodes and shrink back with traffic running.
mod t40_membership;
/// Start-up errors an operator can fix.
mod t50_startup;
/// A node back with an emptied disk does not vote until it is replaced.
mod t60_replace;
