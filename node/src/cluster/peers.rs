//! Connections to the other nodes: one lazily connected HTTP/2 channel per
//! peer for Raft and coordination, and a second one for bulk chunk transfer,
//! so heartbeats never wait behind megabytes of chunk data. Also what this
//! node has learned about each peer by saying hello (HTTP address, last
//! contact, incarnation), and one log line each time a peer stops or starts
//! answering, instead of one per failed attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stowage_proto::v1::chunks_client::ChunksClient;
use stowage_proto::v1::cluster_client::ClusterClient;
use stowage_proto::v1::raft_client::RaftClient;
use stowage_storage::types::NodeId;
use tonic::transport::{Channel, Endpoint};

/// Raft messages carry batches of entries that may hold manifests of up to
/// 4 MiB each.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 512 << 20;
/// Chunk pieces are at most this large on the wire.
pub const CHUNK_PIECE_BYTES: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer greeted successfully before but not for this long (hellos go
/// out every second) is taken as down: chunk writes stop waiting for it.
pub const PEER_DOWN_AFTER: Duration = Duration::from_millis(2_500);

#[derive(Clone)]
struct Conn {
    addr: String,
    control: Channel,
    bulk: Channel,
}

/// What hellos taught us about a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    pub http_addr: Option<String>,
    pub last_contact: Option<Instant>,
    pub cluster_id: Option<String>,
    /// The incarnation the peer last said it has.
    pub incarnation: Option<String>,
    /// Whether the last greeting was answered (`None`: never greeted).
    pub answering: Option<bool>,
}

#[derive(Default)]
pub struct Peers {
    conns: Mutex<HashMap<NodeId, Conn>>,
    state: Mutex<HashMap<NodeId, PeerState>>,
    /// mTLS to peers: the cluster CA and this node's certificate.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// HTTP/2 pings on every cluster connection, both ends: a peer whose zone
/// vanished sends no reset, so only a ping that goes unanswered ends the
/// calls waiting on it (within interval + timeout).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

fn channel(
    addr: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.clone())?,
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .connect_lazy())
}

impl Peers {
    /// Peers reached over mTLS with `tls` (else plain HTTP/2).
    pub fn new(tls: Option<tonic::transport::ClientTlsConfig>) -> Peers {
        Peers {
            tls,
            ..Peers::default()
        }
    }

    fn conn(&self, id: NodeId, addr: &str) -> Result<Conn, tonic::transport::Error> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.get(&id) {
            if c.addr == addr {
                return Ok(c.clone());
            }
        }
        let c = Conn {
            addr: addr.to_owned(),
            control: channel(addr, self.tls.as_ref())?,
            bulk: channel(addr, self.tls.as_ref())?,
        };
        conns.insert(id, c.clone());
        Ok(c)
    }

    pub fn raft(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(RaftClient::new(self.conn(id, addr)?.control)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    pub fn cluster(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<ClusterClient<Channel>, tonic::transport::Error> {
        Ok(ClusterClient::new(self.conn(id, addr)?.control)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    pub fn chunks(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<ChunksClient<Channel>, tonic::transport::Error> {
        Ok(ChunksClient::new(self.conn(id, addr)?.bulk)
            .max_decoding_message_size(4 * CHUNK_PIECE_BYTES)
            .max_encoding_message_size(4 * CHUNK_PIECE_BYTES))
    }

    pub fn record_hello(&self, h: &crate::cluster::Hello) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = state.entry(h.node_id).or_default();
        if s.answering == Some(false) {
            tracing::info!(node = %h.node_id, "node answers again");
        }
        if s.incarnation.as_ref().is_some_and(|i| *i != h.incarnation) {
            tracing::warn!(node = %h.node_id, incarnation = %h.incarnation, "node came back with another data directory");
        }
        s.answering = Some(true);
        s.http_addr = Some(h.http_addr.clone());
        s.last_contact = Some(Instant::now());
        s.cluster_id = h.cluster_id.clone();
        s.incarnation = Some(h.incarnation.clone());
    }

    /// A greeting went unanswered: logged once until the peer answers again.
    pub fn record_no_answer(&self, id: NodeId, why: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = state.entry(id).or_default();
        if s.answering != Some(false) {
            tracing::warn!(node = %id, reason = why, "node does not answer; logging again once it does");
        }
        s.answering = Some(false);
    }

    /// Whether the peer is known to be down: it answered before and has
    /// answered no greeting for a while (one lost greeting on a busy
    /// machine is not enough). A peer never heard from is not known to be
    /// down: at start-up, peers come up in any order.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.state(id)
            .last_contact
            .is_some_and(|t| t.elapsed() > PEER_DOWN_AFTER)
    }

    pub fn state(&self, id: NodeId) -> PeerState {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
}
