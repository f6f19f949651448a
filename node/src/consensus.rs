//! Where metadata writes become durable and ordered, and where reads learn
//! how fresh they must be. A `Command` goes through the Raft log: on the
//! leader directly, from a follower forwarded to the leader over the cluster
//! RPC. A write is answered only once its entry is committed and applied on
//! the node that answers. A single node is simply a one-member cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::RaftMetrics;
use stowage_proto::v1::cluster_client::ClusterClient;
use stowage_proto::v1::{ReadIndexRequest, WriteRequest};
use stowage_storage::meta::{Command, Outcome};
use stowage_storage::types::NodeId;
use tonic::transport::Channel;

use crate::cluster::peers::Peers;
use crate::cluster::service::{self, LEADER_HINT};
use crate::cluster::MemberChange;
use crate::error::{Error, Result};
use crate::raft::codec::{decode, encode};
use crate::raft::{NodeInfo, Raft, TypeConfig};

/// How long a write may wait for a leader (an election after a failure
/// takes about a second) before the client is told to retry.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// How long a read may wait to catch up with the leader.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// Between attempts while leadership settles.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How reads are linearized: the read index, confirmed by a quorum
/// acknowledging a heartbeat sent after the read arrived (no reliance on
/// clocks, unlike a lease), and that heartbeat is sent at once instead of
/// waiting for the next periodic one.
pub fn strict_read() -> LinearizerOption {
    LinearizerOption::new(Some(Duration::ZERO), true)
}

pub struct Consensus {
    raft: Raft,
    id: NodeId,
    peers: Arc<Peers>,
}

/// Why a forwarded request did not complete.
enum Forward {
    /// The node asked is not the leader (maybe it names one).
    NotLeader(Option<NodeId>),
    Failed(String),
}

fn forward_failure(status: tonic::Status) -> Forward {
    if status.code() == tonic::Code::Unavailable {
        let hint = status
            .metadata()
            .get(LEADER_HINT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Forward::NotLeader(hint)
    } else {
        Forward::Failed(status.to_string())
    }
}

impl Consensus {
    pub fn new(raft: Raft, id: NodeId, peers: Arc<Peers>) -> Arc<Self> {
        Arc::new(Consensus { raft, id, peers })
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Every member (voters and learners) with what the membership says of it.
    pub fn members(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect()
    }

    fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.members().remove(&id)
    }

    /// The current leader, waiting for an election to settle if needed.
    async fn leader(&self, deadline: Instant) -> Result<NodeId> {
        if let Some(l) = self.metrics().current_leader {
            return Ok(l);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()
            .and_then(|m| m.current_leader)
            .ok_or_else(|| {
                Error::Unavailable("no leader: a majority of the cluster is not reachable".into())
            })
    }

    /// Makes `cmd` durable on a majority, applies it here, and returns what
    /// applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut hint: Option<NodeId> = None;
        loop {
            let leader = match hint.take() {
                Some(l) => l,
                None => self.leader(deadline).await?,
            };
            if leader == self.id {
                match self.raft.client_write(cmd.clone()).await {
                    Ok(resp) => return Ok(resp.data),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        hint = f.leader_id.filter(|l| *l != self.id);
                    }
                    Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                        // The entry may or may not commit; the client must
                        // retry, and every command is safe to repeat.
                        return Err(Error::Unavailable(
                            "leadership changed while the write was in flight; retry".into(),
                        ));
                    }
                    Err(e) => return Err(Error::Unavailable(e.to_string())),
                }
            } else {
                match self.forward_write(leader, &cmd).await {
                    Ok((outcome, index)) => {
                        self.wait_applied(index, deadline).await?;
                        return Ok(outcome);
                    }
                    Err(Forward::NotLeader(h)) => hint = h,
                    Err(Forward::Failed(why)) => {
                        tracing::debug!(%leader, %why, "forwarding a write failed; retrying");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(
                    "no leader accepted the write in time".into(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// A control-channel client for the node believed to lead.
    fn leader_client(&self, leader: NodeId) -> Result<ClusterClient<Channel>, String> {
        let info = self
            .node_info(leader)
            .ok_or_else(|| format!("leader {leader} is not in the membership"))?;
        self.peers
            .cluster(leader, &info.rpc_addr)
            .map_err(|e| e.to_string())
    }

    async fn forward_write(
        &self,
        leader: NodeId,
        cmd: &Command,
    ) -> Result<(Outcome, u64), Forward> {
        let mut client = self.leader_client(leader).map_err(Forward::Failed)?;
        let reply = client
            .write(WriteRequest {
                command: encode(cmd).into(),
            })
            .await
            .map_err(forward_failure)?
            .into_inner();
        let outcome = decode(&reply.outcome).map_err(|e| Forward::Failed(e.to_string()))?;
        Ok((outcome, reply.log_index))
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        if self
            .metrics()
            .last_applied
            .as_ref()
            .is_some_and(|l| l.index >= index)
        {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "catch up with the leader")
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("this node is behind the leader: {e}")))
    }

    /// Waits until every write acknowledged anywhere in the cluster is
    /// applied here (the leader's read index).
    pub async fn read_barrier(&self) -> Result<()> {
        self.read_barrier_within(READ_DEADLINE).await
    }

    async fn read_barrier_within(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut hint: Option<NodeId> = None;
        loop {
            let leader = match hint.take() {
                Some(l) => l,
                None => self.leader(deadline).await?,
            };
            if leader == self.id {
                match self.raft.ensure_linearizable(strict_read()).await {
                    Ok(_) => return Ok(()),
                    Err(e) => match e.forward_to_leader() {
                        Some(f) => hint = f.leader_id.filter(|l| *l != self.id),
                        None => tracing::debug!(error = %e, "read barrier failed; retrying"),
                    },
                }
            } else {
                match self.forward_read_index(leader).await {
                    Ok(index) => return self.wait_applied(index, deadline).await,
                    Err(Forward::NotLeader(h)) => hint = h,
                    Err(Forward::Failed(why)) => {
                        tracing::debug!(%leader, %why, "read index failed; retrying");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(
                    "could not confirm the latest state with a leader".into(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward_read_index(&self, leader: NodeId) -> Result<u64, Forward> {
        let mut client = self.leader_client(leader).map_err(Forward::Failed)?;
        let reply = client
            .read_index(ReadIndexRequest {})
            .await
            .map_err(forward_failure)?;
        Ok(reply.into_inner().index)
    }

    /// Ready when a leader is known and this node has applied everything
    /// the leader had committed when asked.
    pub async fn readiness(&self) -> Result<()> {
        self.read_barrier_within(Duration::from_secs(2)).await
    }

    /// Runs a membership change on the leader, wherever it is.
    pub async fn change_members(&self, change: MemberChange) -> Result<String> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let leader = self.leader(deadline).await?;
            if leader == self.id {
                return service::change_members(&self.raft, change)
                    .await
                    .map_err(Error::MembershipChange);
            }
            let mut client = self.leader_client(leader).map_err(Error::Unavailable)?;
            match client
                .change_members(stowage_proto::v1::ChangeMembersRequest::from(
                    change.clone(),
                ))
                .await
            {
                Ok(r) => return Ok(r.into_inner().summary),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(Error::MembershipChange(s.message().to_owned()))
                }
                Err(s) => {
                    tracing::debug!(status = %s, "membership change forward failed; retrying")
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(
                    "no leader took the membership change".into(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
