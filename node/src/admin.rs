//! The admin view of a node: the status report (`GET /_stowage/status`,
//! `stowage status`: Raft position, members, replica health of every node,
//! background jobs) and membership change requests (`POST
//! /_stowage/members`, `stowage members`), with this node's disk (free
//! space, read-only for lack of it). The same serde types serve the
//! server and the CLI, so the two cannot drift apart.

use std::time::Instant;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::chunks::lifecycle::ClusterHealth;
use crate::chunks::repair::NodeHealth;
use crate::cluster::MemberChange;
use crate::cluster::PeerSpec;
use crate::error::{Error, Result};
use crate::registry::Registry;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub node_id: u64,
    pub zone: String,
    /// `leader`, `leader-without-quorum` (leads, but no quorum acknowledged
    /// it within the leader lease: writes fail), `follower`, `candidate`,
    /// `learner`, `shutdown`.
    pub role: String,
    /// This node's data directory incarnation.
    pub incarnation: String,
    /// Whether this node's disk is the one the membership records (false:
    /// it does not vote or count until `stowage members replace`).
    pub counted: bool,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot: Option<u64>,
    /// Log entries up to here were purged after a snapshot.
    pub purged: Option<u64>,
    pub cluster_id: Option<String>,
    pub members: Vec<MemberStatus>,
    /// This node's copies.
    pub chunks: NodeHealth,
    /// Every member's copies, and the one-line verdict.
    pub replication: ClusterHealth,
    pub workers: Vec<crate::workers::WorkerStatus>,
    /// This node's free space and whether it is read-only for lack of it
    /// (default: a node from before this field, for the CLI).
    #[serde(default)]
    pub disk: crate::disk::DiskStatus,
    /// The last warnings and errors this node logged, newest first.
    #[serde(default)]
    pub recent_errors: Vec<crate::recent::LogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub zone: String,
    pub rpc_addr: String,
    pub http_addr: Option<String>,
    pub voter: bool,
    /// Milliseconds since this node last heard from the member (0 for
    /// itself); `None` if it never has.
    pub last_contact_ms: Option<u64>,
    /// On the leader: the last log index the member has (Raft's "matched").
    pub matched: Option<u64>,
    /// The incarnation the membership records (`None`: not yet).
    pub incarnation: Option<String>,
    /// The incarnation the member last said it has.
    pub seen_incarnation: Option<String>,
    /// False when the member answers with another incarnation than the
    /// recorded one: its votes and acknowledgements are refused.
    pub counted: bool,
}

impl MemberStatus {
    /// `up`, `stale` (silent for over a second: greetings come every
    /// second) or `down` (silent for longer than the write path waits
    /// before it stops sending copies there, or never heard from), as this
    /// node sees it.
    pub fn health(&self) -> &'static str {
        let down_after =
            u64::try_from(crate::cluster::peers::PEER_DOWN_AFTER.as_millis()).unwrap_or(u64::MAX);
        match self.last_contact_ms {
            None => "down",
            Some(ms) if ms > down_after => "down",
            Some(ms) if ms > 1000 => "stale",
            Some(_) => "up",
        }
    }
}

/// What `POST /_stowage/immutable` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImmutableRequest {
    /// `add` or `remove`.
    pub op: String,
    pub repositories: String,
    pub tags: String,
}

/// What `POST /_stowage/quotas` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaRequest {
    /// `set` or `remove`.
    pub op: String,
    pub namespace: String,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub max_repositories: Option<u64>,
}

/// What `POST /_stowage/replication` takes (`add` needs the rule's
/// fields; `remove` and `resync` only the name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicationRequest {
    /// `add`, `remove` or `resync`.
    pub op: String,
    pub name: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub repositories: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub deletes: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl ReplicationRequest {
    pub fn into_rule(self) -> stowage_storage::meta::replication::ReplicationRule {
        stowage_storage::meta::replication::ReplicationRule {
            name: self.name,
            target: self.target.trim_end_matches('/').to_owned(),
            repositories: self.repositories.unwrap_or_else(|| "**".into()),
            tags: self.tags,
            prefix: self.prefix.unwrap_or_default(),
            deletes: self.deletes,
            username: self.username,
            password: self.password,
        }
    }
}

/// What `POST /_stowage/mirrors` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MirrorRequest {
    /// `add` or `remove`.
    pub op: String,
    pub name: String,
    #[serde(default)]
    pub upstream: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub upstream_prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub interval_secs: u64,
}

impl MirrorRequest {
    pub fn into_rule(self) -> stowage_storage::meta::replication::MirrorRule {
        stowage_storage::meta::replication::MirrorRule {
            name: self.name,
            upstream: self.upstream.trim_end_matches('/').to_owned(),
            prefix: self.prefix,
            upstream_prefix: self.upstream_prefix,
            username: self.username,
            password: self.password,
            interval_secs: self.interval_secs,
        }
    }
}

/// What `POST /_stowage/retention` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionRequest {
    /// `set` or `remove`.
    pub op: String,
    pub repositories: String,
    #[serde(default)]
    pub keep_last: Option<u64>,
    #[serde(default)]
    pub keep_within_secs: Option<u64>,
    #[serde(default)]
    pub keep_tags: Option<String>,
    #[serde(default)]
    pub untagged_after_secs: Option<u64>,
}

/// What `POST /_stowage/backup` takes: the repository (else the node's
/// `backup_repo`) and its key as 64 hex digits (else the node's
/// `backup_key_file`, if any).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupRequest {
    pub repo: Option<String>,
    pub key: Option<String>,
}

/// What `POST /_stowage/members` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembersRequest {
    Add(PeerSpec),
    Remove(u64),
    /// Re-admit a member whose data directory was emptied or replaced.
    Replace(u64),
}

impl TryFrom<MembersRequest> for MemberChange {
    type Error = Error;
    fn try_from(r: MembersRequest) -> Result<Self> {
        match r {
            MembersRequest::Add(p) => Ok(MemberChange::Add {
                id: p.id,
                info: p.info,
            }),
            MembersRequest::Remove(0) => Err(Error::AdminRequest("node ids are positive".into())),
            MembersRequest::Remove(n) => Ok(MemberChange::Remove(n.into())),
            MembersRequest::Replace(0) => Err(Error::AdminRequest("node ids are positive".into())),
            MembersRequest::Replace(n) => Ok(MemberChange::Replace(n.into())),
        }
    }
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub async fn status(reg: &Registry) -> Result<Status> {
    let mut s = local_status(reg)?;
    s.replication = reg.lifecycle().cluster_health().await;
    Ok(s)
}

/// The Prometheus exposition of this node (its own view: no peer is asked,
/// so a scrape never waits on a down one).
pub async fn metrics(reg: &Registry) -> Result<String> {
    let s = local_status(reg)?;
    let extra = crate::metrics::Extra {
        upload_sessions: reg.upload_sessions(),
        log_bytes: reg.dir_bytes("log"),
        snapshot_bytes: reg.dir_bytes(crate::raft::state_machine::SNAPSHOT_DIR),
        sweep: reg.lifecycle().chunk_sweep(),
        scrub: reg.lifecycle().scrub_status(),
    };
    reg.metrics()
        .render(&s, &extra)
        .map_err(|e| Error::Unavailable(format!("metrics did not encode: {e}")))
}

/// The status without the other members' replica health.
fn local_status(reg: &Registry) -> Result<Status> {
    let consensus = reg.consensus();
    let m = consensus.metrics();
    let me = consensus.id();
    let membership = m.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    let now = Instant::now();
    let members = membership
        .nodes()
        .map(|(id, info)| {
            let peer = reg.peers().state(*id);
            let last_contact_ms = if *id == me {
                Some(0)
            } else {
                peer.last_contact
                    .map(|t| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX))
            };
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|l| l.as_ref())
                .map(|l| l.index);
            let seen_incarnation = if *id == me {
                Some(reg.store_incarnation().to_owned())
            } else {
                peer.incarnation.clone()
            };
            let counted = match (&info.incarnation, &seen_incarnation) {
                (Some(r), Some(s)) => r == s,
                _ => true,
            };
            MemberStatus {
                id: id.0,
                zone: info.zone.to_string(),
                rpc_addr: info.rpc_addr.clone(),
                http_addr: if *id == me {
                    Some(reg.settings.http_addr.clone())
                } else {
                    peer.http_addr
                },
                voter: voters.contains(id),
                last_contact_ms,
                matched,
                incarnation: info.incarnation.clone(),
                seen_incarnation,
                counted,
            }
        })
        .collect::<Vec<MemberStatus>>();
    let role = if crate::consensus::leader_without_quorum(&m, consensus.timing().leader_lease) {
        "leader-without-quorum"
    } else {
        role(m.state)
    };
    let incarnation = reg.store_incarnation().to_owned();
    let counted = membership
        .get_node(&me)
        .and_then(|n| n.incarnation.as_ref())
        .is_none_or(|r| *r == incarnation);
    Ok(Status {
        node_id: me.0,
        zone: reg.settings.zone.to_string(),
        role: role.to_string(),
        incarnation,
        counted,
        leader: m.current_leader.map(|l| l.0),
        term: m.current_term,
        last_applied: m.last_applied.as_ref().map(|l| l.index),
        last_log_index: m.last_log_index,
        snapshot: m.snapshot.as_ref().map(|l| l.index),
        purged: m.purged.as_ref().map(|l| l.index),
        cluster_id: reg.cluster_id()?,
        members,
        chunks: reg.lifecycle().health(),
        replication: ClusterHealth::default(),
        workers: reg.lifecycle().workers.status(),
        // One statvfs and one stat: microseconds, not worth a thread hop.
        disk: reg.disk_status(),
        recent_errors: crate::recent::entries(),
    })
}

/// The status as the table `stowage status` prints.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "node {} (zone {}) is {}{} · leader {} · term {} · applied {} · log {} · snapshot {}\ncluster {} · incarnation {}\n{}\n\n",
        s.node_id,
        s.zone,
        s.role,
        if s.counted {
            ""
        } else {
            " (new data directory: not counted until `stowage members replace`)"
        },
        s.leader.map_or("none".into(), |l| l.to_string()),
        s.term,
        opt(s.last_applied),
        opt(s.last_log_index),
        opt(s.snapshot),
        s.cluster_id.as_deref().unwrap_or("(not formed yet)"),
        s.incarnation,
        crate::disk::render(&s.disk),
    );

    out.push_str(&format!(
        "{:<6} {:<12} {:<7} {:<22} {:<22} {:<8} {:<14} {:<8} {:<6}\n",
        "ID",
        "ZONE",
        "HEALTH",
        "CLUSTER ADDR",
        "HTTP ADDR",
        "VOTER",
        "LAST CONTACT",
        "MATCHED",
        "LAG"
    ));
    let mut members: Vec<&MemberStatus> = s.members.iter().collect();
    members.sort_by(|a, b| a.zone.cmp(&b.zone).then(a.id.cmp(&b.id)));
    for m in members {
        let lag = match (s.last_log_index, m.matched) {
            (Some(last), Some(matched)) => last.saturating_sub(matched).to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<6} {:<12} {:<7} {:<22} {:<22} {:<8} {:<14} {:<8} {:<6}\n",
            if s.leader == Some(m.id) {
                format!("{}*", m.id)
            } else {
                m.id.to_string()
            },
            m.zone,
            m.health(),
            if m.rpc_addr.is_empty() {
                "-"
            } else {
                &m.rpc_addr
            },
            m.http_addr.as_deref().unwrap_or("?"),
            match (m.voter, m.counted) {
                (_, false) => "new-disk",
                (true, true) => "yes",
                (false, true) => "learner",
            },
            m.last_contact_ms
                .map_or("never".into(), |ms| format!("{ms} ms ago")),
            opt(m.matched),
            lag,
        ));
    }
    out.push_str("(* leader; MATCHED and LAG are known on the leader)\n");
    out.push_str(&format!("\nreplication: {}\n", s.replication.summary));
    out.push_str(&format!(
        "{:<6} {:<12} {:>10} {:>12} {:>9} {:>12} {:>10} {:>8} {:>6}\n",
        "ID", "ZONE", "CHUNKS", "BYTES", "MISSING", "UNDER-REPL", "MISPLACED", "QUEUED", "LOST"
    ));
    for n in &s.replication.nodes {
        match &n.health {
            Some(h) => out.push_str(&format!(
                "{:<6} {:<12} {:>10} {:>12} {:>9} {:>12} {:>10} {:>8} {:>6}\n",
                n.id,
                n.zone,
                h.held_chunks,
                h.held_bytes,
                h.missing_chunks,
                h.under_replicated_blobs,
                h.misplaced_chunks,
                h.queued,
                h.lost_chunks
            )),
            None => out.push_str(&format!("{:<6} {:<12} (not answering)\n", n.id, n.zone)),
        }
    }
    out.push_str(&format!("\n{:<10} {:<8} {}\n", "JOB", "STATE", "PROGRESS"));
    for w in &s.workers {
        let err = w
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:<8} {}{err}\n",
            w.name, w.state, w.progress
        ));
    }
    if let Some(e) = s.recent_errors.first() {
        out.push_str(&format!(
            "\nrecent warnings and errors: {} (newest: {} {}: {})\n",
            s.recent_errors.len(),
            e.level,
            e.target,
            e.message
        ));
    }
    out
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}
