//! The tonic services a node offers its peers: Raft traffic into openraft
//! and coordination (hello, forwarded writes, read index, membership
//! changes), served on one listener with the chunk subsystem's `Chunks`
//! service. Raft requests from, and answers to, a node are checked against
//! its recorded incarnation (`identity`).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use openraft::errors::ClientWriteError;
use openraft::{ChangeMembers, Snapshot};
use stowage_proto::v1::chunks_server::ChunksServer;
use stowage_proto::v1::cluster_server::{Cluster, ClusterServer};
use stowage_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use stowage_proto::v1::snapshot_piece::Piece;
use stowage_proto::v1::{
    ChangeMembersReply, ChangeMembersRequest, HelloReply, HelloRequest, RaftPayload,
    ReadIndexReply, ReadIndexRequest, SnapshotPiece, WriteReply, WriteRequest,
};
use stowage_storage::durable::TempFile;
use stowage_storage::meta::Command;
use stowage_storage::types::{NodeId, Zone};
use stowage_storage::Store;
use tonic::{Request, Response, Status, Streaming};

use super::identity::Identity;
use super::peers::{Peers, MAX_RAFT_MESSAGE_BYTES};
use super::{Hello, MemberChange, PeerSpec};
use crate::chunks::rpc::ChunksService;
use crate::raft::codec::{decode, encode};
use crate::raft::state_machine::SnapshotFile;
use crate::raft::{NodeInfo, Raft, SnapshotMeta, TypeConfig, Vote};

/// Streams a peer may reset before this node accepts them, per connection.
const PENDING_ACCEPT_RESET_STREAMS: usize = 4096;

/// gRPC metadata key naming the current leader when a request needs one.
pub const LEADER_HINT: &str = "x-stowage-leader";

/// Who this node is, as it tells its peers, and how it reaches them.
#[derive(Clone)]
pub struct NodeCtx {
    pub id: NodeId,
    pub zone: Zone,
    pub http_addr: String,
    pub peers_digest: String,
    pub identity: Arc<Identity>,
    pub peers: Arc<Peers>,
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// "Not the leader", with a hint to the leader if one is known.
pub fn not_leader(leader: Option<NodeId>) -> Status {
    let mut s = Status::unavailable("this node is not the leader");
    if let Some(l) = leader {
        if let Ok(v) = l.0.to_string().parse() {
            s.metadata_mut().insert(LEADER_HINT, v);
        }
    }
    s
}

pub struct RaftService {
    raft: Raft,
    snapshot_dir: std::path::PathBuf,
    identity: Arc<Identity>,
}

impl RaftService {
    /// A request from a node whose disk is not the recorded one is refused:
    /// a vote request or entries from a replica that forgot its log.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.identity.check_request(req.metadata()) {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "refused a Raft request");
                Err(Status::permission_denied(e.to_string()))
            }
        }
    }

    /// An answer, naming this node's incarnation so the asker can tell
    /// whether it counts.
    fn answer<T: serde::Serialize>(&self, result: &T) -> Response<RaftPayload> {
        let mut resp = Response::new(RaftPayload {
            data: encode(result).into(),
        });
        self.identity.stamp(resp.metadata_mut());
        resp
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.admit(&req)?;
        let rpc = decode(&req.into_inner().data).map_err(bad_request)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(self.answer(&result))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&req)?;
        let rpc = decode(&req.into_inner().data).map_err(bad_request)?;
        let result = self.raft.vote(rpc).await;
        Ok(self.answer(&result))
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&req)?;
        let rpc = decode(&req.into_inner().data).map_err(bad_request)?;
        let result = self.raft.pre_vote(rpc).await;
        Ok(self.answer(&result))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotPiece>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.admit(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(SnapshotPiece {
                piece: Some(Piece::Header(h)),
            }) => h,
            _ => return Err(bad_request("a snapshot stream starts with its header")),
        };
        let (vote, meta): (Vote, SnapshotMeta) = decode(&header).map_err(bad_request)?;
        let mut tmp = TempFile::create_in(&self.snapshot_dir).map_err(internal)?;
        let mut received = 0u64;
        while let Some(piece) = stream.message().await? {
            match piece.piece {
                Some(Piece::Data(d)) => {
                    received += d.len() as u64;
                    tmp.as_file_mut().write_all(&d).map_err(internal)?;
                }
                _ => return Err(bad_request("only data pieces follow the header")),
            }
        }
        let staged = self.snapshot_dir.join(format!(
            "incoming-{}.staged",
            meta.last_log_id.as_ref().map_or(0, |l| l.index)
        ));
        let staged2 = staged.clone();
        tokio::task::spawn_blocking(move || tmp.persist(&staged2))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let file = std::fs::File::open(&staged).map_err(internal)?;
        tracing::info!(bytes = received, last_log_id = ?meta.last_log_id, "received a snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile { file, path: staged },
        };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        Ok(self.answer(&result))
    }
}

pub struct ClusterService {
    raft: Raft,
    store: Arc<Store>,
    ctx: NodeCtx,
}

impl ClusterService {
    fn leader_only(&self) -> Result<(), Status> {
        if self.raft.is_leader() {
            return Ok(());
        }
        use openraft::async_runtime::WatchReceiver;
        let leader = self.raft.metrics().borrow_watched().current_leader;
        Err(not_leader(leader))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        // From the metrics, not `is_initialized`: a query through Raft's
        // core outlives a greeter that gave up, and openraft logs an ERROR
        // for every answer nobody waits for.
        use openraft::async_runtime::WatchReceiver;
        let initialized = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some();
        let from = NodeId(req.into_inner().from_node);
        let hello = Hello {
            node_id: self.ctx.id,
            zone: self.ctx.zone.clone(),
            http_addr: self.ctx.http_addr.clone(),
            cluster_id: self.store.meta.cluster_id().map_err(internal)?,
            initialized,
            peers_digest: self.ctx.peers_digest.clone(),
            incarnation: self.ctx.identity.incarnation.clone(),
            your_incarnation: self.ctx.identity.recorded(from),
        };
        Ok(Response::new(hello.into()))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        self.leader_only()?;
        let cmd: Command = decode(&req.into_inner().command).map_err(bad_request)?;
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(Response::new(WriteReply {
                outcome: encode(&resp.data).into(),
                log_index: resp.log_id.index,
                term: resp.log_id.leader_id.term,
            })),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(not_leader(f.leader_id)),
                None => Err(Status::unavailable(e.to_string())),
            },
        }
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        self.leader_only()?;
        match self
            .raft
            .get_read_linearizer(crate::consensus::strict_read())
            .await
        {
            Ok(lin) => Ok(Response::new(ReadIndexReply {
                index: lin.read_log_id().index(),
            })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn change_members(
        &self,
        req: Request<ChangeMembersRequest>,
    ) -> Result<Response<ChangeMembersReply>, Status> {
        self.leader_only()?;
        let change = MemberChange::try_from(req.into_inner()).map_err(bad_request)?;
        let summary = change_members(&self.raft, &self.ctx.peers, self.ctx.id, change)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(ChangeMembersReply { summary }))
    }
}

/// Runs a membership change on the leader: a new node joins as a learner,
/// is promoted to voter once it has caught up; a removed node leaves the
/// voters and the membership; a replaced node (a member whose data
/// directory was emptied or swapped) leaves the voters, and rejoins as a
/// learner under its new incarnation, promoted once caught up.
pub async fn change_members(
    raft: &Raft,
    peers: &Peers,
    me: NodeId,
    change: MemberChange,
) -> Result<String, String> {
    match change {
        MemberChange::Add { id, mut info } => {
            // A node that answers is recorded with its incarnation at once;
            // one that does not yet is recorded on first contact.
            let spec = PeerSpec {
                id,
                info: info.clone(),
            };
            if let Some(h) = super::bootstrap::hello(peers, me, &spec).await {
                info.incarnation = Some(h.incarnation);
            }
            tracing::info!(node = %id, %info, "adding a learner; it is promoted once caught up");
            join(raft, id, info.clone()).await?;
            Ok(format!("node {id} ({info}) is a voter"))
        }
        MemberChange::Remove(id) => {
            use openraft::async_runtime::WatchReceiver;
            let membership = raft.metrics().borrow_watched().membership_config.clone();
            let is_voter = membership.membership().voter_ids().any(|v| v == id);
            let is_node = membership.membership().get_node(&id).is_some();
            if !is_node {
                return Err(format!("node {id} is not a member"));
            }
            // A learner (an add that never caught up, say) only leaves
            // the nodes; a voter leaves the voters and, not retained, the
            // nodes with them.
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            in_turn(|| raft.change_membership(change.clone(), false))
                .await
                .map_err(|e| format!("removing node {id}: {e}"))?;
            Ok(format!("node {id} is no longer a member"))
        }
        MemberChange::Replace(id) => replace(raft, peers, me, id).await,
    }
}

/// A learner that has made no progress for this long is not promoted: the
/// change answers with an error and the node stays a learner (which costs
/// no quorum) until it is removed or the add is run again.
const LEARNER_STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// Adds `id` as a learner, waits while it catches up, and promotes it to
/// voter only once it has: a node that never answers can never become a
/// voter and cost the cluster its quorum.
async fn join(raft: &Raft, id: NodeId, info: NodeInfo) -> Result<(), String> {
    use openraft::async_runtime::WatchReceiver;
    in_turn(|| raft.add_learner(id, info.clone(), false))
        .await
        .map_err(|e| format!("adding node {id} as a learner: {e}"))?;
    // Caught up to the log as it was when it joined: under a steady write
    // load it would otherwise chase the end forever (the rest is a few
    // entries, which a voter catches up like any other).
    let target = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let mut last_progress = tokio::time::Instant::now();
    let mut best: Option<u64> = None;
    loop {
        let m = raft.metrics().borrow_watched().clone();
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index);
        if matched.is_some_and(|i| i >= target) {
            break;
        }
        if matched > best {
            best = matched;
            last_progress = tokio::time::Instant::now();
        }
        if m.replication.is_none() {
            return Err(format!(
                "this node stopped leading while node {id} caught up; it stays a learner: run the add again"
            ));
        }
        if last_progress.elapsed() > LEARNER_STALL {
            return Err(format!(
                "node {id} was added as a learner but made no progress for {} s (does it run at {} with the \
                 cluster's --peer list?); it stays a learner, which costs no quorum: `stowage members remove {id}` \
                 cancels, running the add again promotes it once it has caught up",
                LEARNER_STALL.as_secs(),
                info.rpc_addr
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    in_turn(|| raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false))
        .await
        .map_err(|e| format!("promoting node {id} to voter: {e}"))?;
    Ok(())
}

/// How long a membership change waits for one already in flight (such as
/// the leader recording incarnations) to commit.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a membership change, waiting its turn while another one is in
/// progress: openraft takes one at a time.
async fn in_turn<T, F, Fut>(
    mut change: F,
) -> Result<T, openraft::errors::RaftError<TypeConfig, ClientWriteError<TypeConfig>>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = Result<T, openraft::errors::RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
    >,
{
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        match change().await {
            Err(e)
                if tokio::time::Instant::now() < deadline
                    && matches!(
                        e.api_error(),
                        Some(ClientWriteError::ChangeMembershipError(
                            openraft::errors::ChangeMembershipError::InProgress(_)
                        ))
                    ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

async fn replace(raft: &Raft, peers: &Peers, me: NodeId, id: NodeId) -> Result<String, String> {
    use openraft::async_runtime::WatchReceiver;
    if id == me {
        return Err(format!(
            "node {id} leads the cluster, so its disk is the recorded one; nothing to replace"
        ));
    }
    let old = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .get_node(&id)
        .cloned()
        .ok_or_else(|| format!("node {id} is not a member; add it with `stowage members add`"))?;
    let spec = PeerSpec {
        id,
        info: old.clone(),
    };
    let h = super::bootstrap::hello(peers, me, &spec)
        .await
        .ok_or_else(|| {
            format!(
                "node {id} does not answer at {}; start it first",
                old.rpc_addr
            )
        })?;
    if old.incarnation.as_deref() == Some(h.incarnation.as_str()) {
        return Err(format!(
            "node {id} still has its recorded incarnation {}: its disk was not replaced",
            h.incarnation
        ));
    }
    let new = NodeInfo {
        incarnation: Some(h.incarnation.clone()),
        ..old
    };
    tracing::info!(node = %id, incarnation = %h.incarnation, "replacing a member: it leaves the voters and rejoins as a learner");
    in_turn(|| raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false))
        .await
        .map_err(|e| format!("removing node {id} from the voters: {e}"))?;
    join(raft, id, new).await?;
    Ok(format!(
        "node {id} is a voter again, with incarnation {}",
        h.incarnation
    ))
}

/// The cluster RPC server: all three services on one listener.
/// The `Chunks` service is built by the chunk subsystem, which owns both
/// of its ends.
pub fn router(
    raft: Raft,
    store: Arc<Store>,
    ctx: NodeCtx,
    snapshot_dir: std::path::PathBuf,
    chunks_svc: ChunksServer<ChunksService>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<tonic::transport::server::Router, tonic::transport::Error> {
    let raft_svc = RaftServer::new(RaftService {
        raft: raft.clone(),
        snapshot_dir,
        identity: ctx.identity.clone(),
    })
    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let cluster_svc = ClusterServer::new(ClusterService { raft, store, ctx })
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        // With a client CA, tonic requires and verifies a client
        // certificate: a node whose certificate the cluster CA did not
        // sign cannot speak to this one at all.
        builder = builder.tls_config(tls)?;
    }
    Ok(builder
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(crate::cluster::peers::KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::cluster::peers::KEEP_ALIVE_TIMEOUT))
        // h2's default (20) drops the whole connection once that many
        // streams were reset before being accepted, which happens in bursts
        // when a peer's requests time out after a partition heals.
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESET_STREAMS))
        .add_service(raft_svc)
        .add_service(cluster_svc)
        .add_service(chunks_svc))
}
