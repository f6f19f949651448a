//! Where metadata writes become durable and ordered, and where reads learn
//! how fresh they must be. A `Command` goes through the Raft log: on the
//! leader directly, from a follower forwarded to the leader over the cluster
//! RPC. A write is answered only once its entry is committed and applied on
//! the node that answers. A single node is simply a one-member cluster.
//!
//! No client request waits longer than the request deadline, and every call
//! to the leader has its own, shorter timeout, so a leader that stopped
//! answering costs about one election timeout before the request moves on
//! to the next leader. A leader that cannot reach a quorum says so at once.

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

/// Between attempts while leadership settles.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A membership change may wait for a new member to catch up, which takes
/// as long as copying the metadata does: it gets far more than a request.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(300);

/// How long things may take: set from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No client request waits longer than this for consensus.
    pub request_deadline: Duration,
    /// Each forwarded write or read-index call to the leader.
    pub rpc_timeout: Duration,
    /// A leader whose last quorum acknowledgement is older than this cannot
    /// reach a quorum (openraft's leader lease, `election_timeout_max`:
    /// past it the followers grant a challenger's pre-vote).
    pub leader_lease: Duration,
}

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
    timing: Timing,
}

/// Why a forwarded request did not complete.
enum Forward {
    /// The node asked is not the leader (maybe it names one).
    NotLeader(Option<NodeId>),
    /// It did not answer within the call's timeout.
    Silent,
    Failed(String),
}

fn forward_failure(status: tonic::Status) -> Forward {
    if status.code() == tonic::Code::DeadlineExceeded {
        return Forward::Silent;
    }
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
    pub fn new(raft: Raft, id: NodeId, peers: Arc<Peers>, timing: Timing) -> Arc<Self> {
        Arc::new(Consensus {
            raft,
            id,
            peers,
            timing,
        })
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// True when this node leads but no quorum has acknowledged it within
    /// the leader lease: it cannot commit anything, and says so.
    pub fn leader_without_quorum(&self) -> bool {
        leader_without_quorum(&self.metrics(), self.timing.leader_lease)
    }

    /// The timeout of one call to the leader, within the request's deadline.
    fn call_timeout(&self, deadline: Instant) -> Duration {
        self.timing
            .rpc_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1))
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
            .ok_or(Error::NoLeader)
    }

    /// Returns once another node than `from` is known to lead (or `limit`
    /// passed; the caller's own call then times out on its own).
    async fn leader_changed_from(&self, from: NodeId, limit: Duration) {
        let changed = self
            .raft
            .wait(Some(limit))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != from),
                "another leader is known",
            )
            .await;
        if changed.is_err() {
            // Timed out: let the forwarded call report its own outcome.
            std::future::pending::<()>().await;
        }
    }

    /// Makes `cmd` durable on a majority, applies it here, and returns what
    /// applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        let deadline = Instant::now() + self.timing.request_deadline;
        let mut hint: Option<NodeId> = None;
        // What the client is told if the deadline passes.
        let mut why = Error::NoLeader;
        loop {
            let leader = match hint.take() {
                Some(l) => l,
                None => self.leader(deadline).await?,
            };
            if leader == self.id {
                if self.leader_without_quorum() {
                    return Err(Error::NoQuorum);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(written) =
                    tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await
                else {
                    return Err(Error::Deadline {
                        secs: self.timing.request_deadline.as_secs(),
                    });
                };
                match written {
                    Ok(resp) => {
                        crate::receipt::wrote(resp.log_id.index, resp.log_id.leader_id.term);
                        return Ok(resp.data);
                    }
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        // Empty while this node leads: its lease lapsed
                        // (no quorum acknowledged it lately).
                        hint = f.leader_id.filter(|l| *l != self.id);
                        if hint.is_none() && self.raft.is_leader() {
                            why = Error::NoQuorum;
                        }
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
                let timeout = self.call_timeout(deadline);
                // A leader that vanished is replaced by an election; the
                // write goes to the new one as soon as it is known rather
                // than after the old one's call times out (every command is
                // safe to repeat, should the old one have taken it).
                let forwarded = tokio::select! {
                    r = self.forward_write(leader, &cmd, timeout) => r,
                    () = self.leader_changed_from(leader, timeout) => Err(Forward::NotLeader(None)),
                };
                match forwarded {
                    Ok((outcome, index, term)) => {
                        self.wait_applied(index, deadline).await?;
                        crate::receipt::wrote(index, term);
                        return Ok(outcome);
                    }
                    Err(Forward::NotLeader(h)) => hint = h,
                    Err(Forward::Silent) => {
                        why = Error::LeaderSilent {
                            leader,
                            waited_ms: millis(timeout),
                        };
                        tracing::debug!(%leader, "the leader did not answer a forwarded write in time");
                    }
                    Err(Forward::Failed(e)) => {
                        tracing::debug!(%leader, error = %e, "forwarding a write failed; retrying");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(why);
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
        timeout: Duration,
    ) -> Result<(Outcome, u64, u64), Forward> {
        let mut client = self.leader_client(leader).map_err(Forward::Failed)?;
        let mut req = tonic::Request::new(WriteRequest {
            command: encode(cmd).into(),
        });
        req.set_timeout(timeout);
        let reply = client
            .write(req)
            .await
            .map_err(forward_failure)?
            .into_inner();
        let outcome = decode(&reply.outcome).map_err(|e| Forward::Failed(e.to_string()))?;
        Ok((outcome, reply.log_index, reply.term))
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
            .map_err(|_| Error::Behind { index })
    }

    /// Waits, within the request deadline, until this node has applied
    /// entry `index` (a client's `Stowage-Min-Log-Index`: a write it saw
    /// acknowledged elsewhere).
    pub async fn wait_applied_for_client(&self, index: u64) -> Result<()> {
        let deadline = Instant::now() + self.timing.request_deadline;
        self.wait_applied(index, deadline).await.map_err(|_| {
            let applied = self.metrics().last_applied.map_or(0, |l| l.index);
            Error::NotFreshEnough {
                wanted: index,
                applied,
            }
        })
    }

    /// Waits until every write acknowledged anywhere in the cluster is
    /// applied here (the leader's read index).
    pub async fn read_barrier(&self) -> Result<()> {
        self.read_barrier_within(self.timing.request_deadline).await
    }

    async fn read_barrier_within(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut hint: Option<NodeId> = None;
        let mut why = Error::NoLeader;
        loop {
            let leader = match hint.take() {
                Some(l) => l,
                None => self.leader(deadline).await?,
            };
            if leader == self.id {
                if self.leader_without_quorum() {
                    return Err(Error::NoQuorum);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.raft.ensure_linearizable(strict_read())).await
                {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => match e.forward_to_leader() {
                        Some(f) => {
                            hint = f.leader_id.filter(|l| *l != self.id);
                            if hint.is_none() && self.raft.is_leader() {
                                why = Error::NoQuorum;
                            }
                        }
                        None => tracing::debug!(error = %e, "read barrier failed; retrying"),
                    },
                    Err(_) => why = Error::NoQuorum,
                }
            } else {
                let timeout = self.call_timeout(deadline);
                match self.forward_read_index(leader, timeout).await {
                    Ok(index) => return self.wait_applied(index, deadline).await,
                    Err(Forward::NotLeader(h)) => hint = h,
                    Err(Forward::Silent) => {
                        why = Error::LeaderSilent {
                            leader,
                            waited_ms: millis(timeout),
                        };
                    }
                    Err(Forward::Failed(e)) => {
                        tracing::debug!(%leader, error = %e, "read index failed; retrying");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(why);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward_read_index(&self, leader: NodeId, timeout: Duration) -> Result<u64, Forward> {
        let mut client = self.leader_client(leader).map_err(Forward::Failed)?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(timeout);
        let reply = client.read_index(req).await.map_err(forward_failure)?;
        Ok(reply.into_inner().index)
    }

    /// Ready when a leader is known and this node has applied everything
    /// the leader had committed when asked.
    pub async fn readiness(&self) -> Result<()> {
        self.read_barrier_within(Duration::from_secs(2)).await
    }

    /// Runs a membership change on the leader, wherever it is.
    pub async fn change_members(&self, change: MemberChange) -> Result<String> {
        let deadline = Instant::now() + MEMBERSHIP_DEADLINE;
        loop {
            let leader = self.leader(deadline).await?;
            if leader == self.id {
                return service::change_members(&self.raft, &self.peers, self.id, change)
                    .await
                    .map_err(Error::MembershipChange);
            }
            let mut client = self.leader_client(leader).map_err(Error::Unavailable)?;
            let mut req = tonic::Request::new(stowage_proto::v1::ChangeMembersRequest::from(
                change.clone(),
            ));
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match client.change_members(req).await {
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
                    "no leader took the membership change in time".into(),
                ));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The leader-without-quorum test on a metrics snapshot: leading, and the
/// last time a quorum acknowledged this leader is older than the lease.
/// Right after an election nothing is acknowledged yet; that is not a loss,
/// and a sole voter is its own quorum.
pub fn leader_without_quorum(m: &RaftMetrics<TypeConfig>, lease: Duration) -> bool {
    use openraft::Instant as _;
    m.state == openraft::ServerState::Leader
        && m.membership_config
            .membership()
            .voter_ids()
            .nth(1)
            .is_some()
        && m.last_quorum_acked
            .as_ref()
            .is_some_and(|acked| acked.elapsed() > lease)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::metrics::SerdeInstant;
    use openraft::type_config::TypeConfigExt;
    use openraft::ServerState;

    use super::*;
    use crate::raft::{Membership, StoredMembership};

    #[test]
    fn a_leader_lacks_a_quorum_only_once_its_lease_lapsed() {
        let lease = Duration::from_millis(500);
        let mut m = RaftMetrics::<TypeConfig>::new_initial(NodeId(1));
        let three: Membership = (1..=3)
            .map(|n| (NodeId(n), NodeInfo::default()))
            .collect::<BTreeMap<_, _>>()
            .into();
        m.membership_config = Arc::new(StoredMembership::new(None, three));
        m.state = ServerState::Leader;
        // Just elected: nothing acknowledged yet.
        assert!(!leader_without_quorum(&m, lease));
        m.last_quorum_acked = Some(SerdeInstant::from(TypeConfig::now()));
        assert!(!leader_without_quorum(&m, lease));
        m.last_quorum_acked = Some(SerdeInstant::from(
            TypeConfig::now() - Duration::from_secs(2),
        ));
        assert!(leader_without_quorum(&m, lease));
        m.state = ServerState::Follower;
        assert!(!leader_without_quorum(&m, lease));
        // A sole voter is its own quorum.
        let one: Membership = BTreeMap::from([(NodeId(1), NodeInfo::default())]).into();
        m.membership_config = Arc::new(StoredMembership::new(None, one));
        m.state = ServerState::Leader;
        assert!(!leader_without_quorum(&m, lease));
    }

    #[test]
    fn a_call_that_timed_out_is_told_apart_from_one_that_failed() {
        assert!(matches!(
            forward_failure(tonic::Status::deadline_exceeded("late")),
            Forward::Silent
        ));
        assert!(matches!(
            forward_failure(service::not_leader(Some(NodeId(3)))),
            Forward::NotLeader(Some(NodeId(3)))
        ));
        assert!(matches!(
            forward_failure(tonic::Status::internal("boom")),
            Forward::Failed(_)
        ));
    }
}
