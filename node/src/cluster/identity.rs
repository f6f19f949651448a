//! Node identity on the wire: which incarnation (data directory) of a node
//! sent a Raft request or answered one. The membership records each
//! member's incarnation; a request from, or an answer by, a node whose
//! incarnation differs from the record is refused, so the vote grants and
//! append acknowledgements of a node that lost its disk are never counted.
//! A member whose incarnation is not recorded yet is trusted on first
//! contact, and the leader records what it finds (`record_first_contact`).
//!
//! Every Raft request carries `x-stowage-node` and `x-stowage-incarnation`
//! in its gRPC metadata; every answer carries `x-stowage-incarnation`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use openraft::ChangeMembers;
use stowage_storage::types::NodeId;
use tonic::metadata::MetadataMap;

use crate::raft::{NodeInfo, Raft};

/// gRPC metadata key: the sender's node id.
pub const NODE_KEY: &str = "x-stowage-node";
/// gRPC metadata key: the sender's (or replier's) incarnation.
pub const INCARNATION_KEY: &str = "x-stowage-incarnation";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "node {node} has incarnation {found}, but the membership records {recorded}: its data \
         directory is not the one that joined, so it does not vote or count toward a quorum until \
         `stowage members replace {node}`"
    )]
    Mismatch {
        node: NodeId,
        found: String,
        recorded: String,
    },
    #[error("a Raft message without the sender's node id and incarnation")]
    Unnamed,
}

/// The decision, as a pure function: a recorded incarnation must match;
/// an unrecorded one is accepted (trust on first use).
pub fn verdict(
    node: NodeId,
    recorded: Option<&str>,
    found: Option<&str>,
) -> Result<(), IdentityError> {
    match (recorded, found) {
        (None, _) => Ok(()),
        (Some(r), Some(f)) if r == f => Ok(()),
        (Some(r), f) => Err(IdentityError::Mismatch {
            node,
            found: f.unwrap_or("(none)").to_owned(),
            recorded: r.to_owned(),
        }),
    }
}

/// This node's identity, and the incarnations its current membership
/// records for every member (kept up to date from Raft's metrics).
pub struct Identity {
    pub id: NodeId,
    pub incarnation: String,
    recorded: RwLock<BTreeMap<NodeId, Option<String>>>,
}

impl Identity {
    pub fn new(id: NodeId, incarnation: String) -> Arc<Self> {
        Arc::new(Identity {
            id,
            incarnation,
            recorded: RwLock::default(),
        })
    }

    /// Takes the membership's records; called whenever it changes.
    pub fn set_membership<'a>(&self, nodes: impl Iterator<Item = (&'a NodeId, &'a NodeInfo)>) {
        let map = nodes
            .map(|(id, info)| (*id, info.incarnation.clone()))
            .collect();
        *self.recorded.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// What the membership records for `node` (`None`: not recorded, or
    /// not a member).
    pub fn recorded(&self, node: NodeId) -> Option<String> {
        self.recorded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
            .flatten()
    }

    /// Whether this node's own disk is the one the membership records for
    /// it (true while unrecorded).
    pub fn counted(&self) -> bool {
        verdict(
            self.id,
            self.recorded(self.id).as_deref(),
            Some(&self.incarnation),
        )
        .is_ok()
    }

    /// Names this node in the metadata of a request or an answer.
    pub fn stamp(&self, md: &mut MetadataMap) {
        if let Ok(v) = self.id.0.to_string().parse() {
            md.insert(NODE_KEY, v);
        }
        if let Ok(v) = self.incarnation.parse() {
            md.insert(INCARNATION_KEY, v);
        }
    }

    /// Checks a request: the sender must name itself, and its incarnation
    /// must be the recorded one.
    pub fn check_request(&self, md: &MetadataMap) -> Result<NodeId, IdentityError> {
        let node = md
            .get(NODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map(NodeId)
            .ok_or(IdentityError::Unnamed)?;
        self.check_answer(node, md)?;
        Ok(node)
    }

    /// Checks that an answer came from the recorded incarnation of `node`.
    pub fn check_answer(&self, node: NodeId, md: &MetadataMap) -> Result<(), IdentityError> {
        let found = md.get(INCARNATION_KEY).and_then(|v| v.to_str().ok());
        verdict(node, self.recorded(node).as_deref(), found)
    }
}

/// On the leader: records the incarnation of every member that has none
/// recorded yet, from what the member said in its hello (or, for this
/// node, its own). The cluster is initialized with incarnations unknown,
/// because every node must initialize with the same membership.
pub async fn record_first_contact(
    raft: &Raft,
    identity: &Identity,
    members: &BTreeMap<NodeId, NodeInfo>,
    seen: &BTreeMap<NodeId, String>,
) {
    let mut learned = BTreeMap::new();
    for (id, info) in members {
        if info.incarnation.is_some() {
            continue;
        }
        let found = if *id == identity.id {
            Some(identity.incarnation.clone())
        } else {
            seen.get(id).cloned()
        };
        if let Some(inc) = found {
            learned.insert(
                *id,
                NodeInfo {
                    incarnation: Some(inc),
                    ..info.clone()
                },
            );
        }
    }
    if learned.is_empty() {
        return;
    }
    let ids: Vec<String> = learned.keys().map(|id| id.to_string()).collect();
    match raft
        .change_membership(ChangeMembers::SetNodes(learned), false)
        .await
    {
        Ok(_) => {
            tracing::info!(nodes = %ids.join(","), "recorded the incarnations of members on first contact")
        }
        Err(e) => tracing::debug!(error = %e, "recording incarnations failed; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use stowage_storage::types::Zone;

    use super::*;

    fn info(inc: Option<&str>) -> NodeInfo {
        NodeInfo {
            zone: Zone::default(),
            rpc_addr: "127.0.0.1:1".into(),
            incarnation: inc.map(str::to_owned),
        }
    }

    #[test]
    fn recorded_incarnations_must_match_and_unrecorded_ones_are_trusted() {
        let n = NodeId(2);
        assert!(verdict(n, None, None).is_ok());
        assert!(verdict(n, None, Some("a")).is_ok());
        assert!(verdict(n, Some("a"), Some("a")).is_ok());
        assert!(matches!(
            verdict(n, Some("a"), Some("b")),
            Err(IdentityError::Mismatch { .. })
        ));
        assert!(verdict(n, Some("a"), None).is_err());
    }

    #[test]
    fn requests_and_answers_are_checked_against_the_membership() {
        let me = Identity::new(NodeId(1), "aaaa".into());
        let (i1, i2, i3) = (info(Some("aaaa")), info(Some("bbbb")), info(None));
        let nodes = [(NodeId(1), i1), (NodeId(2), i2), (NodeId(3), i3)];
        me.set_membership(nodes.iter().map(|(id, i)| (id, i)));
        assert!(me.counted());

        let stamped = |id: u64, inc: &str| {
            let peer = Identity::new(NodeId(id), inc.into());
            let mut md = MetadataMap::new();
            peer.stamp(&mut md);
            md
        };
        assert_eq!(me.check_request(&stamped(2, "bbbb")), Ok(NodeId(2)));
        // Node 2 came back with an emptied disk.
        let err = me.check_request(&stamped(2, "cccc")).unwrap_err();
        assert!(
            err.to_string().contains("stowage members replace 2"),
            "{err}"
        );
        assert!(me.check_answer(NodeId(2), &stamped(2, "cccc")).is_err());
        // Node 3 is not recorded yet: trusted on first use.
        assert!(me.check_request(&stamped(3, "dddd")).is_ok());
        assert_eq!(
            me.check_request(&MetadataMap::new()),
            Err(IdentityError::Unnamed)
        );

        // This node's own disk replaced: it knows it does not count.
        let replaced = Identity::new(NodeId(1), "ffff".into());
        replaced.set_membership(nodes.iter().map(|(id, i)| (id, i)));
        assert!(!replaced.counted());
    }
}
