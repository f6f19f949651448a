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
/// The namespace network and its faults, without nodes.
mod t60_netns;
/// A node back with an emptied disk does not vote until it is replaced.
mod t60_replace;
/// An isolated follower does not raise a healthy cluster's term (pre-vote).
mod t70_prevote;
/// No request outlives the deadline when the leader's zone is cut off.
mod t75_leader_zone_loss;
/// Garbage collection frees what a deleted image alone used, on every node.
mod t80_gc;
/// GC at zero grace races uploads, manifests, deletes and re-pushes.
mod t81_gc_race;
/// Repair refills a node that missed pushes, and a wiped, replaced node.
mod t82_repair;
/// A write quorum lost to full peers answers 507.
mod t83_full_peers;
/// Scrub quarantines and rewrites rotten copies, and reports lost chunks.
mod t84_scrub;
/// 3 → 4 → 3 members with data: copies move, never below three.
mod t85_rebalance;
/// Pulls are whole from a remaining holder, or a 503 before the body.
mod t86_honest_reads;
/// Users, tokens and rules are the same on every node.
mod t87_auth;
/// The cluster RPC over mTLS; a node of another CA cannot join.
mod t88_mtls;
/// The README's three nodes with TLS and access control, from nothing.
mod t89_from_nothing;
/// A short seeded chaos run: nothing acknowledged lost, tags linearizable.
mod t90_chaos;
/// The status page in headless Chromium: three zones and the leader.
mod t91_status_page;
/// Compare-and-swap tags across nodes: exactly one of two racing writers wins.
mod t92_cas_tags;
/// Immutable tags hold on every node: no overwrite, untag or delete.
mod t93_immutable_tags;
/// Quotas: exactly one of two pushes racing for the last bytes wins.
mod t94_quotas;
/// Retention rules evaluated by GC passes, the same on every node.
mod t95_retention;
/// The out-of-region drill from a backup, and backups under pushes and GC.
mod t96_backup_drill;
/// Push replication to a Stowage node and a Distribution registry.
mod t97_replication;
/// Pull mode: a pull-through mirror of a Distribution upstream.
mod t98_mirror;
