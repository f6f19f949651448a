//! First start and restarts. A node with stored Raft state rejoins as it
//! was (after checking that its peer list does not contradict the stored
//! membership); a fresh node greets its peers and, once a majority that
//! agrees on the peer list is reachable, initializes the cluster with the
//! full peer list. Every fresh node does this with the same list, which
//! openraft allows, so no node is special. A fresh node whose peers already
//! form a cluster waits to be added with `stowage members add`, or, if its
//! id is a member recorded with another incarnation (its data directory was
//! emptied or replaced), says so once and waits for `stowage members
//! replace`: until then it does not count (see `identity`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stowage_proto::v1::HelloRequest;
use stowage_storage::types::NodeId;
use stowage_storage::Store;

use super::peers::Peers;
use super::{Hello, PeerSpec};
use crate::raft::{NodeInfo, Raft};

const HELLO_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A start-up problem the operator must fix; the node exits with it.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "the peer list disagrees with the membership stored in the data directory: {0}. \
         Membership changes are made with `stowage members`; start the node with the peers it has"
    )]
    PeersDisagree(String),
    #[error(
        "this data directory belongs to cluster {ours}, but node {peer} is in cluster {theirs}: \
         point the node at its own cluster or start it with an empty data directory"
    )]
    OtherCluster {
        ours: String,
        peer: NodeId,
        theirs: String,
    },
    #[error(
        "node {peer} was started with a different peer list (digest {theirs}, ours {ours}); \
         every node must list the same members"
    )]
    PeerListMismatch {
        peer: NodeId,
        ours: String,
        theirs: String,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// What bootstrap needs to know about this node and its peers.
pub struct Plan {
    pub id: NodeId,
    /// This node as the initial membership lists it (no incarnation: every
    /// node must initialize with the same membership).
    pub me: NodeInfo,
    /// This data directory's incarnation.
    pub incarnation: String,
    pub peers: Vec<PeerSpec>,
    pub peers_digest: String,
}

impl Plan {
    fn members(&self) -> BTreeMap<NodeId, NodeInfo> {
        let mut m: BTreeMap<NodeId, NodeInfo> =
            self.peers.iter().map(|p| (p.id, p.info.clone())).collect();
        m.insert(self.id, self.me.clone());
        m
    }
}

/// Asks a peer who it is; `None` if it does not answer in time (logged
/// once per change, by `Peers`).
pub async fn hello(peers: &Peers, me: NodeId, peer: &PeerSpec) -> Option<Hello> {
    let answer = async {
        let mut client = peers
            .cluster(peer.id, &peer.info.rpc_addr)
            .map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(HelloRequest { from_node: me.0 });
        req.set_timeout(HELLO_TIMEOUT);
        let reply = client
            .hello(req)
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        Hello::try_from(reply).map_err(|e| e.to_string())
    };
    match answer.await {
        Ok(h) => {
            peers.record_hello(&h);
            Some(h)
        }
        Err(why) => {
            peers.record_no_answer(peer.id, &why);
            None
        }
    }
}

/// Brings this node into its cluster; returns once it is initialized (or
/// knows it will be added by an existing cluster). Retries for as long as a
/// majority is unreachable, logging what it waits for.
pub async fn run(
    raft: &Raft,
    store: &Arc<Store>,
    peers: &Peers,
    plan: &Plan,
) -> Result<(), BootstrapError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| BootstrapError::Raft(e.to_string()))?;
    if initialized {
        check_stored_membership(raft, plan)?;
        return check_cluster_id(store, peers, plan).await;
    }
    if plan.peers.is_empty() {
        tracing::info!("initializing a single-node cluster");
        return initialize(raft, plan.members()).await;
    }
    let majority = plan.peers.len().div_ceil(2) + 1;
    // Said again only when the count changes, not every retry.
    let mut reported: Option<usize> = None;
    loop {
        // Entries from a leader (another node initialized first) end this.
        if raft.is_initialized().await.unwrap_or(false) {
            return Ok(());
        }
        let mut reachable = 1;
        for peer in &plan.peers {
            let Some(h) = hello(peers, plan.id, peer).await else {
                continue;
            };
            if h.initialized {
                if let Some(recorded) = h.your_incarnation.filter(|r| *r != plan.incarnation) {
                    tracing::warn!(
                        "this node's data directory is new (incarnation {}) but node {} is a member \
                         with incarnation {recorded}: it will not vote or count toward a quorum \
                         until you run `stowage members replace {}` on any node",
                        plan.incarnation, plan.id, plan.id
                    );
                    return Ok(());
                }
                tracing::info!(
                    peer = %h.node_id,
                    "peers already form a cluster: this node joins it if it is in their membership; \
                     otherwise add it with `stowage members add {}={}@{}`",
                    plan.id, plan.me.zone, plan.me.rpc_addr
                );
                return Ok(());
            }
            if h.peers_digest != plan.peers_digest {
                return Err(BootstrapError::PeerListMismatch {
                    peer: h.node_id,
                    ours: plan.peers_digest.clone(),
                    theirs: h.peers_digest,
                });
            }
            reachable += 1;
        }
        if reachable >= majority {
            tracing::info!(
                reachable,
                majority,
                "a majority is reachable; initializing the cluster"
            );
            return initialize(raft, plan.members()).await;
        }
        if reported != Some(reachable) {
            tracing::warn!(
                reachable,
                needed = majority,
                "waiting for a majority of peers before forming the cluster"
            );
            reported = Some(reachable);
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn initialize(
    raft: &Raft,
    members: BTreeMap<NodeId, NodeInfo>,
) -> Result<(), BootstrapError> {
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another path got there first (a restart, or a peer's entries).
        Err(e)
            if e.api_error()
                .is_some_and(|a| matches!(a, openraft::errors::InitializeError::NotAllowed(_))) =>
        {
            Ok(())
        }
        Err(e) => Err(BootstrapError::Raft(e.to_string())),
    }
}

/// A listed peer (or this node) that the stored membership knows under
/// another zone or address means the operator pointed the node at the wrong
/// data or the wrong peers.
fn check_stored_membership(raft: &Raft, plan: &Plan) -> Result<(), BootstrapError> {
    use openraft::async_runtime::WatchReceiver;
    let metrics = raft.metrics().borrow_watched().clone();
    let stored: BTreeMap<NodeId, NodeInfo> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if let Some(recorded) = stored
        .get(&plan.id)
        .and_then(|n| n.incarnation.as_ref())
        .filter(|r| **r != plan.incarnation)
    {
        tracing::warn!(
            "the membership records this node with incarnation {recorded}, but its data directory \
             has {}: it does not count until `stowage members replace {}`",
            plan.incarnation,
            plan.id
        );
    }
    if plan.peers.is_empty() && stored.len() <= 1 {
        return Ok(());
    }
    let mut problems = Vec::new();
    for (id, want) in plan.members() {
        match stored.get(&id) {
            Some(have)
                if have.zone != want.zone
                    || (!have.rpc_addr.is_empty() && have.rpc_addr != want.rpc_addr) =>
            {
                problems.push(format!(
                    "node {id} is {have} in the stored membership but {want} here"
                ));
            }
            None if id == plan.id && !stored.is_empty() => {
                problems.push(format!("this node ({id}) is not in the stored membership"));
            }
            _ => {}
        }
    }
    if plan.peers.is_empty() && stored.len() > 1 {
        problems.push(format!(
            "the stored membership has {} members but no --peer was given",
            stored.len()
        ));
    }
    for id in stored.keys() {
        if !plan.members().contains_key(id) {
            tracing::warn!(node = %id, "a stored member is not in the peer list; the stored membership wins");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BootstrapError::PeersDisagree(problems.join("; ")))
    }
}

async fn check_cluster_id(
    store: &Arc<Store>,
    peers: &Peers,
    plan: &Plan,
) -> Result<(), BootstrapError> {
    let Ok(Some(ours)) = store.meta.cluster_id() else {
        return Ok(());
    };
    for peer in &plan.peers {
        if let Some(h) = hello(peers, plan.id, peer).await {
            if let Some(theirs) = h.cluster_id {
                if theirs != ours {
                    return Err(BootstrapError::OtherCluster {
                        ours,
                        peer: h.node_id,
                        theirs,
                    });
                }
            }
        }
    }
    Ok(())
}
