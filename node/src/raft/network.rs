//! The client side of Raft traffic: openraft's requests are encoded with
//! `codec` into the tonic `Raft` service; snapshots stream from their state
//! file in pieces, never whole in memory. Every request names this node
//! and its incarnation; an answer from an incarnation of the target other
//! than the recorded one is an error, so a vote grant or an append
//! acknowledgement by a node that lost its disk is never counted.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use stowage_proto::v1::raft_client::RaftClient;
use stowage_proto::v1::snapshot_piece::Piece;
use stowage_proto::v1::{RaftPayload, SnapshotPiece};
use stowage_storage::types::NodeId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::codec::{decode, encode};
use super::state_machine::{SnapshotFile, StowageSnapshot};
use super::{NodeInfo, TypeConfig, Vote};
use crate::cluster::identity::Identity;
use crate::cluster::peers::{Peers, CHUNK_PIECE_BYTES};

pub struct Network {
    pub peers: Arc<Peers>,
    pub identity: Arc<Identity>,
}

pub struct PeerRaft {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    identity: Arc<Identity>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerRaft;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerRaft {
        PeerRaft {
            target,
            addr: node.rpc_addr.clone(),
            peers: self.peers.clone(),
            identity: self.identity.clone(),
        }
    }
}

/// A transport failure, classified the way openraft backs off: a peer that
/// cannot be reached is "unreachable" (long backoff), anything else is a
/// transient network error.
fn transport_error(target: NodeId, status: &tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        // A peer refusing this node's incarnation stays refused until an
        // operator acts: back off like from an unreachable one.
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::PermissionDenied => {
            RPCError::Unreachable(Unreachable::from_string(format!("node {target}: {status}")))
        }
        _ => RPCError::Network(NetworkError::from_string(format!(
            "node {target}: {status}"
        ))),
    }
}

fn unreachable(target: NodeId, e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(format!("node {target}: {e}")))
}

impl PeerRaft {
    fn client(
        &self,
    ) -> Result<
        stowage_proto::v1::raft_client::RaftClient<tonic::transport::Channel>,
        RPCError<TypeConfig>,
    > {
        self.peers
            .raft(self.target, &self.addr)
            .map_err(|e| unreachable(self.target, e))
    }

    /// A request naming this node, with openraft's deadline for it.
    fn request(&self, data: Vec<u8>, option: &RPCOption) -> tonic::Request<RaftPayload> {
        let mut req = tonic::Request::new(RaftPayload { data: data.into() });
        req.set_timeout(option.hard_ttl());
        self.identity.stamp(req.metadata_mut());
        req
    }

    /// The payload of an answer, if it came from the recorded incarnation.
    fn checked(
        &self,
        resp: tonic::Response<RaftPayload>,
    ) -> Result<bytes::Bytes, RPCError<TypeConfig>> {
        self.identity
            .check_answer(self.target, resp.metadata())
            .map_err(|e| unreachable(self.target, e))?;
        Ok(resp.into_inner().data)
    }

    /// One unary Raft call: encode `rpc`, send it with `call`, check the
    /// answer's incarnation and decode it.
    async fn unary<Q, T, F, Fut>(
        &self,
        rpc: &Q,
        option: &RPCOption,
        call: F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        Q: serde::Serialize,
        T: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<tonic::transport::Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let req = self.request(encode(rpc), option);
        let resp = call(self.client()?, req)
            .await
            .map_err(|s| transport_error(self.target, &s))?;
        self.reply::<_, openraft::errors::RaftError<TypeConfig>>(&self.checked(resp)?)
    }

    /// Decodes a reply that carries `Result<T, remote error>`; a remote
    /// error means the peer could not act, which openraft treats like an
    /// unreachable peer.
    fn reply<T, E>(&self, data: &[u8]) -> Result<T, RPCError<TypeConfig>>
    where
        T: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned + std::fmt::Display,
    {
        match decode::<Result<T, E>>(data) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unreachable(self.target, e)),
            Err(e) => Err(RPCError::Network(NetworkError::from_string(format!(
                "node {}: undecodable reply: {e}",
                self.target
            )))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerRaft {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, req| async move {
            c.append_entries(req).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, req| async move { c.vote(req).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            &rpc,
            &option,
            |mut c, req| async move { c.pre_vote(req).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: StowageSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .peers
            .raft(self.target, &self.addr)
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))?;
        let header = encode(&(vote, snapshot.meta.clone()));
        let mut file = snapshot.snapshot.file;
        let (tx, rx) = mpsc::channel::<SnapshotPiece>(4);
        // The sender runs beside the call: the receiver answers only after
        // the whole stream, so sending first and calling after would stall.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))?;
            let first = SnapshotPiece {
                piece: Some(Piece::Header(header.into())),
            };
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            let mut buf = vec![0u8; CHUNK_PIECE_BYTES];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                let piece = SnapshotPiece {
                    piece: Some(Piece::Data(bytes::Bytes::copy_from_slice(&buf[..n]))),
                };
                if tx.blocking_send(piece).is_err() {
                    return Ok(());
                }
            }
        });
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        self.identity.stamp(req.metadata_mut());
        let call = client.install_snapshot(req);
        let resp = tokio::select! {
            r = call => r,
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        let unreachable = |e: String| StreamingError::Unreachable(Unreachable::from_string(e));
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unreachable(format!("reading the snapshot: {e}"))),
            Err(e) => return Err(unreachable(e.to_string())),
        }
        let resp = resp.map_err(|s| unreachable(format!("node {}: {s}", self.target)))?;
        self.identity
            .check_answer(self.target, resp.metadata())
            .map_err(|e| unreachable(e.to_string()))?;
        let data = resp.into_inner().data;
        match decode::<Result<SnapshotResponse<TypeConfig>, openraft::errors::Fatal<TypeConfig>>>(
            &data,
        ) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(unreachable(format!("node {}: {e}", self.target))),
            Err(e) => Err(unreachable(format!(
                "node {}: undecodable reply: {e}",
                self.target
            ))),
        }
    }
}
