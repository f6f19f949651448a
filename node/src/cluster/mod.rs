//! The cluster side of a node: who the peers are, how to reach them, the
//! tonic services other nodes call, and how a fresh cluster bootstraps.
//!
//! Layout: `peers.rs` (client channels and what hellos taught us),
//! `identity.rs` (incarnation checks on Raft traffic),
//! `service.rs` (Raft, Cluster and Chunks servers), `bootstrap.rs`
//! (first start and restarts), `wire.rs` (protobuf ↔ domain conversions).

pub mod bootstrap;
pub mod identity;
pub mod peers;
pub mod service;
pub mod wire;

use std::fmt;
use std::str::FromStr;

use stowage_storage::types::{NodeId, Zone};

use crate::raft::NodeInfo;

/// `ID=ZONE@RPC_ADDR`, as `--peer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerSpec {
    pub id: NodeId,
    pub info: NodeInfo,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid peer {input:?}: expected ID=ZONE@HOST:PORT ({reason})")]
pub struct PeerSpecError {
    input: String,
    reason: String,
}

impl FromStr for PeerSpec {
    type Err = PeerSpecError;
    fn from_str(s: &str) -> Result<Self, PeerSpecError> {
        let bad = |reason: &str| PeerSpecError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (id, rest) = s.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let (zone, addr) = rest.split_once('@').ok_or_else(|| bad("missing '@'"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| bad("the id must be a positive integer"))?;
        let zone = Zone::parse(zone).map_err(|e| bad(&e.to_string()))?;
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(bad("the address must be HOST:PORT"));
        }
        Ok(PeerSpec {
            id,
            info: NodeInfo {
                zone,
                rpc_addr: addr.to_owned(),
                incarnation: None,
            },
        })
    }
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}@{}", self.id, self.info.zone, self.info.rpc_addr)
    }
}

impl TryFrom<String> for PeerSpec {
    type Error = PeerSpecError;
    fn try_from(s: String) -> Result<Self, PeerSpecError> {
        s.parse()
    }
}

impl From<PeerSpec> for String {
    fn from(p: PeerSpec) -> String {
        p.to_string()
    }
}

/// A digest of the full initial member list (this node and its peers), so
/// that nodes started with different peer lists refuse to form a cluster
/// together.
pub fn peers_digest(members: &[PeerSpec]) -> String {
    let mut lines: Vec<String> = members.iter().map(|p| p.to_string()).collect();
    lines.sort();
    blake3::hash(lines.join("\n").as_bytes()).to_hex()[..16].to_string()
}

/// What a node says about itself when greeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: NodeId,
    pub zone: Zone,
    pub http_addr: String,
    pub cluster_id: Option<String>,
    pub initialized: bool,
    pub peers_digest: String,
    /// The incarnation of the node's data directory.
    pub incarnation: String,
    /// What the node's membership records as the greeter's incarnation.
    pub your_incarnation: Option<String>,
}

/// A membership change, as `stowage members` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add {
        id: NodeId,
        info: NodeInfo,
    },
    Remove(NodeId),
    /// Re-admits a member whose data directory was emptied or replaced:
    /// records its new incarnation and lets it vote once caught up.
    Replace(NodeId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs_parse_and_print() {
        let p: PeerSpec = "2=zone-b@10.0.0.2:7000".parse().unwrap();
        assert_eq!(p.id, NodeId(2));
        assert_eq!(p.info.zone.as_str(), "zone-b");
        assert_eq!(p.info.rpc_addr, "10.0.0.2:7000");
        assert_eq!(p.to_string(), "2=zone-b@10.0.0.2:7000");
        for bad in [
            "2",
            "2=b",
            "x=b@h:1",
            "0=b@h:1",
            "2=b@host",
            "2=bad zone@h:1",
        ] {
            assert!(bad.parse::<PeerSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_ignores_order() {
        let a: PeerSpec = "1=a@h:1".parse().unwrap();
        let b: PeerSpec = "2=b@h:2".parse().unwrap();
        assert_eq!(
            peers_digest(&[a.clone(), b.clone()]),
            peers_digest(&[b, a.clone()])
        );
        assert_ne!(
            peers_digest(std::slice::from_ref(&a)),
            peers_digest(&[a.clone(), a])
        );
    }
}
