//! Conversions between the cluster RPC's protobuf messages and the domain
//! types, kept at the boundary: domain types carry no prost derives, and a
//! malformed message fails here with a clear error.

use stowage_proto::v1::{change_members_request, AddMember, ChangeMembersRequest, HelloReply};
use stowage_storage::types::{NodeId, Zone};

use super::{Hello, MemberChange};
use crate::raft::NodeInfo;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message field {field} is missing or invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl ToString) -> WireError {
    WireError::Field {
        field,
        reason: reason.to_string(),
    }
}

impl From<Hello> for HelloReply {
    fn from(h: Hello) -> Self {
        HelloReply {
            node_id: h.node_id.0,
            zone: h.zone.to_string(),
            http_addr: h.http_addr,
            cluster_id: h.cluster_id.unwrap_or_default(),
            initialized: h.initialized,
            peers_digest: h.peers_digest,
            incarnation: h.incarnation,
            your_incarnation: h.your_incarnation.unwrap_or_default(),
        }
    }
}

impl TryFrom<HelloReply> for Hello {
    type Error = WireError;
    fn try_from(r: HelloReply) -> Result<Self, WireError> {
        if r.node_id == 0 {
            return Err(field("node_id", "must be positive"));
        }
        if r.incarnation.is_empty() {
            return Err(field("incarnation", "must not be empty"));
        }
        Ok(Hello {
            node_id: NodeId(r.node_id),
            zone: Zone::parse(&r.zone).map_err(|e| field("zone", e))?,
            http_addr: r.http_addr,
            cluster_id: (!r.cluster_id.is_empty()).then_some(r.cluster_id),
            initialized: r.initialized,
            peers_digest: r.peers_digest,
            incarnation: r.incarnation,
            your_incarnation: (!r.your_incarnation.is_empty()).then_some(r.your_incarnation),
        })
    }
}

impl From<MemberChange> for ChangeMembersRequest {
    fn from(c: MemberChange) -> Self {
        let change = match c {
            MemberChange::Add { id, info } => change_members_request::Change::Add(AddMember {
                node_id: id.0,
                zone: info.zone.to_string(),
                rpc_addr: info.rpc_addr,
            }),
            MemberChange::Remove(id) => change_members_request::Change::Remove(id.0),
            MemberChange::Replace(id) => change_members_request::Change::Replace(id.0),
        };
        ChangeMembersRequest {
            change: Some(change),
        }
    }
}

impl TryFrom<ChangeMembersRequest> for MemberChange {
    type Error = WireError;
    fn try_from(r: ChangeMembersRequest) -> Result<Self, WireError> {
        match r.change {
            Some(change_members_request::Change::Add(a)) => {
                if a.node_id == 0 {
                    return Err(field("add.node_id", "must be positive"));
                }
                if a.rpc_addr.is_empty() {
                    return Err(field("add.rpc_addr", "must not be empty"));
                }
                Ok(MemberChange::Add {
                    id: NodeId(a.node_id),
                    info: NodeInfo {
                        zone: Zone::parse(&a.zone).map_err(|e| field("add.zone", e))?,
                        rpc_addr: a.rpc_addr,
                        incarnation: None,
                    },
                })
            }
            Some(change_members_request::Change::Remove(id)) if id > 0 => {
                Ok(MemberChange::Remove(NodeId(id)))
            }
            Some(change_members_request::Change::Remove(_)) => {
                Err(field("remove", "must be a positive node id"))
            }
            Some(change_members_request::Change::Replace(id)) if id > 0 => {
                Ok(MemberChange::Replace(NodeId(id)))
            }
            Some(change_members_request::Change::Replace(_)) => {
                Err(field("replace", "must be a positive node id"))
            }
            None => Err(field("change", "missing")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = Hello {
            node_id: NodeId(2),
            zone: Zone::parse("b").unwrap(),
            http_addr: "127.0.0.1:5000".into(),
            cluster_id: None,
            initialized: false,
            peers_digest: "d".into(),
            incarnation: "0123".into(),
            your_incarnation: Some("4567".into()),
        };
        let back = Hello::try_from(HelloReply::from(h.clone())).unwrap();
        assert_eq!(back, h);
        let mut bad = HelloReply::from(h);
        bad.zone = "no spaces allowed".into();
        assert!(Hello::try_from(bad).is_err());
    }

    #[test]
    fn member_changes_round_trip() {
        for c in [
            MemberChange::Add {
                id: NodeId(4),
                info: NodeInfo {
                    zone: Zone::parse("d").unwrap(),
                    rpc_addr: "127.0.0.1:7004".into(),
                    incarnation: None,
                },
            },
            MemberChange::Remove(NodeId(4)),
            MemberChange::Replace(NodeId(4)),
        ] {
            assert_eq!(
                MemberChange::try_from(ChangeMembersRequest::from(c.clone())).unwrap(),
                c
            );
        }
        assert!(MemberChange::try_from(ChangeMembersRequest { change: None }).is_err());
    }
}
