//! openraft wiring: the type configuration, and the three things openraft
//! is given: a log store and a state machine (both over `stowage-storage`)
//! and a network (over the tonic cluster RPC).
//!
//! Layout: `log_store.rs`, `state_machine.rs` (with snapshot files),
//! `network.rs` (client side of the Raft RPC), `codec.rs` (how openraft's
//! values are encoded in the log, in snapshots and on the wire).

pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};
use stowage_storage::meta::{Command, Outcome};
use stowage_storage::types::{NodeId, Zone};

/// What the membership records about each node: its zone (for placement
/// and voter spread), where its cluster RPC listens, and the incarnation of
/// its data directory (`None` until the leader first hears from it; see
/// `cluster::identity`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub zone: Zone,
    pub rpc_addr: String,
    pub incarnation: Option<String>,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.zone, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// Stowage's Raft: commands in, outcomes out, u64-backed node ids.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = NodeInfo,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;

/// Makes a data directory whose state machine holds a restored state (its
/// applied entry `last`) the first member of a new cluster: the applied
/// mark gets a membership of this node alone, the old cluster's name goes
/// (the first leader names the new one), and the vote is set at `last`'s
/// term, so the node elects itself in the next term. openraft then treats
/// the log as compacted up to `last` and builds a snapshot from the state,
/// which is what nodes that join later receive.
pub fn seed_restored(
    store: &stowage_storage::Store,
    id: NodeId,
    info: NodeInfo,
    last: LogId,
) -> std::io::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, info)]))
        .map_err(io_err)?;
    let stored = StoredMembership::new(Some(last), membership);
    let mark = codec::encode(&(Some(last), stored));
    store.meta.forget_cluster_id(&mark).map_err(io_err)?;
    let vote = Vote::new(last.leader_id.term, id);
    store
        .log
        .save_state(log_store::VOTE_STATE, &codec::encode(&vote))
        .map_err(io_err)?;
    store.sync_meta().map_err(io_err)
}

/// Converts any displayable failure into the `io::Error` openraft's storage
/// traits speak.
pub fn io_err(e: impl fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod suite {
    //! openraft's own conformance suite for log stores and state machines,
    //! run against ours on a fresh data directory per sub-test.

    use std::sync::Arc;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use openraft::StorageError;
    use stowage_storage::{Store, StoreConfig};

    use super::log_store::LogStore;
    use super::state_machine::StateMachineStore;
    use super::TypeConfig;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>>
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(Store::open(&StoreConfig::new(dir.path())).expect("store opens"));
            let sm = StateMachineStore::open(store.clone()).expect("state machine opens");
            Ok((dir, LogStore::new(store), sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        TypeConfig::run(async {
            Suite::test_all(Builder)
                .await
                .expect("storage suite passes");
        });
    }
}
