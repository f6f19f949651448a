//! Node configuration: defaults, the TOML file, and command-line flags, in
//! rising precedence. Every flag has a config key of the same name (with
//! underscores), and every size or duration names its unit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stowage_storage::chunker::DEFAULT_CHUNK_SIZE_BYTES;
use stowage_storage::types::{NodeId, Zone};

use crate::cluster::PeerSpec;

/// Enough for several snapshots of a large registry's metadata and the log
/// entries behind them, and under 1 % of a typical registry disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// sled needs a few MiB to open and the Raft log a few more to catch up;
/// 64 MiB leaves a wide margin and costs nothing to preallocate.
pub const DEFAULT_BALLAST_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the OCI HTTP API listens on.
    pub listen: SocketAddr,
    /// Where chunks, metadata and the log live.
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as
    /// `stowage_node=debug,info`.
    pub log_level: String,
    /// One info line per request (target `stowage::access`: method, path,
    /// status, bytes, duration, caller, client address).
    pub access_log: bool,
    /// This node's id in the cluster (a positive integer).
    pub node_id: u64,
    /// The failure domain this node is in.
    pub zone: Zone,
    /// Largest chunk a blob is split into.
    pub chunk_size_bytes: usize,
    /// Largest manifest accepted (the distribution-spec suggests 4 MiB).
    pub max_manifest_bytes: usize,
    /// Memory sled may use to cache metadata.
    pub meta_cache_bytes: u64,
    /// Free space kept on the data directory's filesystem: below it the
    /// node takes no new data (uploads, manifest pushes, copies from peers,
    /// repair fetches answer 507) and keeps serving reads; writes resume as
    /// soon as space is back. The reserve is room for what must not fail:
    /// the Raft log and snapshots, which keep growing while others write.
    /// 0: no reserve, only a real ENOSPC stops writes.
    pub min_free_bytes: u64,
    /// A preallocated file (`<data_dir>/ballast`) deleted when free space
    /// falls under half of `min_free_bytes`, at start or while running, so
    /// sled and the Raft log always have room; made again once free space
    /// covers the reserve plus the ballast. 0: no ballast.
    pub ballast_bytes: u64,
    /// Upload sessions idle this long are cancelled; also the lease an
    /// acknowledged upload holds its blob by until a manifest references it.
    pub upload_expiry_secs: u64,
    /// Data unreferenced for less than this is kept (blob links after the
    /// last manifest using them went, chunk files after their tombstone).
    pub gc_grace_secs: u64,
    /// How often the leader runs a collection pass, and every node sweeps
    /// its chunk files.
    pub gc_interval_secs: u64,
    /// Repository globs (`*` within a path segment, `**` across) whose
    /// untagged manifests are collected.
    pub gc_untagged: Vec<String>,
    /// How often abandoned upload sessions are expired.
    pub sweep_interval_secs: u64,
    /// How often each node sweeps for missing and misplaced copies (it also
    /// does at start-up, on membership changes and when a peer returns).
    pub repair_interval_secs: u64,
    /// Cap on the bytes a node fetches per second to repair itself (0: no cap).
    pub repair_max_bytes_per_sec: u64,
    /// Time between two scrub passes over a node's chunks.
    pub scrub_interval_secs: u64,
    /// Cap on the bytes scrub re-reads per second (0: no cap).
    pub scrub_max_bytes_per_sec: u64,
    /// On SIGTERM, how long requests in flight get to finish.
    pub shutdown_grace_secs: u64,
    /// Chunk writes in flight across all uploads (bounds upload memory to
    /// this many chunks).
    pub max_inflight_chunk_writes: usize,
    /// Address the cluster RPC (Raft, forwarding, chunk transfer) listens
    /// on. Unset: a single-node registry with no cluster port.
    pub cluster_listen: Option<SocketAddr>,
    /// Address peers use to reach this node's cluster RPC, if it differs
    /// from `cluster_listen` (e.g. when listening on 0.0.0.0).
    pub cluster_advertise: Option<String>,
    /// Address peers use to reach this node's HTTP API (for forwarding
    /// upload sessions), if it differs from `listen`.
    pub http_advertise: Option<String>,
    /// The other initial members, `ID=ZONE@HOST:PORT` (cluster address).
    pub peers: Vec<PeerSpec>,
    /// Copies kept of every chunk (at most the number of nodes).
    pub replicas: usize,
    /// Copies that must be fsynced before an upload is acknowledged.
    pub write_quorum: usize,
    /// How often the leader sends heartbeats.
    pub raft_heartbeat_ms: u64,
    /// A follower that hears nothing from the leader for this long (to
    /// 4/3 of it, at random) starts an election.
    pub raft_election_timeout_ms: u64,
    /// A snapshot is taken after this many log entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log instead of a whole snapshot.
    pub snapshot_logs_to_keep: u64,
    /// No client request waits longer than this for the cluster (a leader,
    /// a commit, a read barrier); past it the client gets a 503 naming why.
    pub request_deadline_secs: u64,
    /// Timeout of each call to the leader (forwarded write, read index).
    /// Unset: twice `raft_election_timeout_ms`, longer than the silence
    /// before an election, so a silent leader has been replaced by then
    /// (and a forwarded call follows a new leader as soon as it is known).
    pub cluster_rpc_timeout_ms: Option<u64>,
    /// A file holding the password of user `admin`, created on first start
    /// if the cluster has no account; access control is on from the start.
    pub admin_password_file: Option<PathBuf>,
    /// Serve a non-loopback address with no accounts (everyone may do
    /// everything); without it such a node refuses to start.
    pub allow_anonymous: bool,
    /// Lifetime of the registry tokens the token endpoint issues.
    pub token_ttl_secs: u64,
    /// Lifetime of refresh tokens (`docker login`'s identity token); signing
    /// keys are kept this long after they are rotated out.
    pub refresh_token_ttl_secs: u64,
    /// The `service` of challenges and tokens' audience.
    pub token_service: String,
    /// The token endpoint URL clients are sent to; unset: `http://<Host>/token`.
    pub token_realm: Option<String>,
    /// Failed logins one client address may make per minute before it gets
    /// 429s for the rest of that minute.
    pub max_failed_logins_per_minute: u32,
    /// Client connections held at once; beyond it a new connection gets a
    /// 503 and is closed. 0: what the open-files limit (raised to its hard
    /// limit at start) leaves after a reserve of a quarter (at least 256).
    pub max_connections: usize,
    /// A client gets this long to send a request's headers (also the idle
    /// time after which a keep-alive connection with no request is closed).
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long fails; an upload
    /// session then resumes at its last stored offset.
    pub body_idle_timeout_secs: u64,
    /// PEM certificate chain (the node's certificate first) served on
    /// `listen`; with `tls_key_file`, the registry port speaks HTTPS only.
    /// Re-read on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA (PEM, from `stowage cert init`): with the two keys
    /// below, the cluster RPC speaks mTLS, and a peer whose certificate
    /// this CA did not sign is refused at the handshake.
    pub cluster_tls_ca_file: Option<PathBuf>,
    /// This node's certificate for the cluster RPC (server and client).
    pub cluster_tls_cert_file: Option<PathBuf>,
    /// Its private key.
    pub cluster_tls_key_file: Option<PathBuf>,
    /// The backup repository of scheduled backups and the archive: a
    /// directory, `file:///DIR` or `s3://BUCKET[/PREFIX]` (S3 settings from
    /// the `AWS_*` variables). Also the default of `stowage backup create`.
    pub backup_repo: Option<String>,
    /// A key file (`stowage backup keygen`): everything written to the
    /// repository is encrypted with it. Without it the repository is not
    /// encrypted, and `list` and `verify` say so.
    pub backup_key_file: Option<PathBuf>,
    /// Time between the snapshots the leader takes into `backup_repo`
    /// (0: none scheduled).
    pub backup_interval_secs: u64,
    /// The leader archives every committed log entry (and the chunks of
    /// each new blob first) into `backup_repo`, so `restore --at` reaches
    /// any moment since the first snapshot, not only snapshot times.
    pub backup_archive: bool,
    /// How often the archive is written: the recovery point of the archive
    /// is about this far behind the last commit.
    pub backup_archive_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./stowage-data"),
            log_level: "info".into(),
            access_log: true,
            node_id: 1,
            zone: Zone::default(),
            chunk_size_bytes: DEFAULT_CHUNK_SIZE_BYTES,
            max_manifest_bytes: 4 << 20,
            meta_cache_bytes: stowage_storage::DEFAULT_META_CACHE_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            ballast_bytes: DEFAULT_BALLAST_BYTES,
            upload_expiry_secs: 24 * 3600,
            gc_grace_secs: 24 * 3600,
            gc_interval_secs: 3600,
            gc_untagged: Vec::new(),
            sweep_interval_secs: 3600,
            repair_interval_secs: 600,
            repair_max_bytes_per_sec: 200 << 20,
            scrub_interval_secs: 7 * 24 * 3600,
            scrub_max_bytes_per_sec: 32 << 20,
            shutdown_grace_secs: 30,
            max_inflight_chunk_writes: 8,
            cluster_listen: None,
            cluster_advertise: None,
            http_advertise: None,
            peers: Vec::new(),
            replicas: 3,
            write_quorum: 2,
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 800,
            snapshot_every_entries: 10_000,
            snapshot_logs_to_keep: 1_000,
            request_deadline_secs: 5,
            cluster_rpc_timeout_ms: None,
            admin_password_file: None,
            allow_anonymous: false,
            token_ttl_secs: 300,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            token_service: "stowage".into(),
            token_realm: None,
            max_failed_logins_per_minute: 10,
            max_connections: 0,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            tls_cert_file: None,
            tls_key_file: None,
            cluster_tls_ca_file: None,
            cluster_tls_cert_file: None,
            cluster_tls_key_file: None,
            backup_repo: None,
            backup_key_file: None,
            backup_interval_secs: 0,
            backup_archive: false,
            backup_archive_interval_secs: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// One `peers` list may serve every node, as etcd's
    /// `--initial-cluster` does: the entry with this node's id is taken out
    /// and gives its zone (unless `zone` says otherwise, which is refused as
    /// ambiguous) and the address peers reach it at (unless
    /// `cluster_advertise` is set).
    pub fn take_self_from_peers(&mut self) -> Result<(), ConfigError> {
        let me = self.node_id;
        let Some(pos) = self.peers.iter().position(|p| p.id.0 == me) else {
            return Ok(());
        };
        let entry = self.peers.remove(pos);
        if self.peers.iter().any(|p| p.id.0 == me) {
            return Err(ConfigError::Invalid {
                key: "peers",
                reason: "lists this node's id more than once",
            });
        }
        if self.zone == Zone::default() {
            self.zone = entry.info.zone;
        } else if self.zone != entry.info.zone {
            return Err(ConfigError::Invalid {
                key: "peers",
                reason: "lists this node in another zone than `zone` says",
            });
        }
        let listen = self.cluster_listen.map(|l| l.to_string());
        if self.cluster_advertise.is_none() && listen.as_deref() != Some(&entry.info.rpc_addr) {
            self.cluster_advertise = Some(entry.info.rpc_addr);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason| Err(ConfigError::Invalid { key, reason });
        if self.node_id == 0 {
            return invalid("node_id", "must be a positive integer");
        }
        if !(4096..=(256 << 20)).contains(&self.chunk_size_bytes) {
            return invalid("chunk_size_bytes", "must be between 4 KiB and 256 MiB");
        }
        if self.max_manifest_bytes == 0 {
            return invalid("max_manifest_bytes", "must be positive");
        }
        if self.max_inflight_chunk_writes == 0 {
            return invalid("max_inflight_chunk_writes", "must be positive");
        }
        for (key, v) in [
            ("sweep_interval_secs", self.sweep_interval_secs),
            ("gc_interval_secs", self.gc_interval_secs),
            ("repair_interval_secs", self.repair_interval_secs),
            ("scrub_interval_secs", self.scrub_interval_secs),
        ] {
            if v == 0 {
                return invalid(key, "must be positive");
            }
        }
        if self.untagged_globs().is_err() {
            return invalid("gc_untagged", "each entry must be a valid glob pattern");
        }
        if !self.peers.is_empty() && self.cluster_listen.is_none() {
            return invalid(
                "cluster_listen",
                "a node with peers needs a cluster address",
            );
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id.0).collect();
        ids.push(self.node_id);
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid(
                "peers",
                "node ids must be distinct, and differ from node_id",
            );
        }
        if self.replicas == 0 || self.write_quorum == 0 || self.write_quorum > self.replicas {
            return invalid("write_quorum", "must be between 1 and replicas");
        }
        if self.raft_heartbeat_ms == 0 || self.raft_election_timeout_ms < 5 * self.raft_heartbeat_ms
        {
            return invalid(
                "raft_election_timeout_ms",
                "must be at least five times raft_heartbeat_ms (followers honour a silent leader for two thirds of it)",
            );
        }
        let cluster_tls = [
            self.cluster_tls_ca_file.is_some(),
            self.cluster_tls_cert_file.is_some(),
            self.cluster_tls_key_file.is_some(),
        ];
        if cluster_tls.contains(&true) && cluster_tls.contains(&false) {
            return invalid(
                "cluster_tls_ca_file",
                "cluster_tls_ca_file, cluster_tls_cert_file and cluster_tls_key_file go together: set all three or none",
            );
        }
        if self.tls_cert_file.is_some()
            && !self.peers.is_empty()
            && self.cluster_tls_ca_file.is_none()
        {
            return invalid(
                "cluster_tls_ca_file",
                "a cluster node with tls_cert_file needs the cluster CA too: nodes forward upload requests to each other's HTTPS port and trust it through that CA",
            );
        }
        if self.token_ttl_secs == 0 || self.refresh_token_ttl_secs < self.token_ttl_secs {
            return invalid(
                "refresh_token_ttl_secs",
                "token_ttl_secs must be positive and refresh_token_ttl_secs at least as long",
            );
        }
        if self.snapshot_every_entries == 0 {
            return invalid("snapshot_every_entries", "must be positive");
        }
        if self.request_deadline_secs == 0 {
            return invalid("request_deadline_secs", "must be positive");
        }
        if self.cluster_rpc_timeout_ms == Some(0) {
            return invalid("cluster_rpc_timeout_ms", "must be positive");
        }
        if (self.backup_interval_secs > 0 || self.backup_archive) && self.backup_repo.is_none() {
            return invalid(
                "backup_repo",
                "must be set when backup_interval_secs or backup_archive is",
            );
        }
        if self.backup_archive_interval_secs == 0 {
            return invalid("backup_archive_interval_secs", "must be positive");
        }
        // Half a pair would either serve plain HTTP where HTTPS was meant
        // or fail later with a less direct message.
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return invalid("tls_key_file", "must be set when tls_cert_file is");
            }
            (None, Some(_)) => {
                return invalid("tls_cert_file", "must be set when tls_key_file is");
            }
            _ => {}
        }
        Ok(())
    }

    /// The certificate and key the registry port serves with, if HTTPS is on.
    pub fn tls(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Where peers reach this node's cluster RPC ("" for a single node).
    pub fn cluster_addr(&self) -> String {
        match (&self.cluster_advertise, self.cluster_listen) {
            (Some(a), _) => a.clone(),
            (None, Some(l)) => l.to_string(),
            (None, None) => String::new(),
        }
    }

    /// Where peers reach this node's HTTP API.
    pub fn http_addr(&self, bound: SocketAddr) -> String {
        self.http_advertise
            .clone()
            .unwrap_or_else(|| bound.to_string())
    }

    /// This node and its peers, as the initial membership lists them.
    pub fn initial_members(&self) -> Vec<PeerSpec> {
        let mut all = self.peers.clone();
        all.push(PeerSpec {
            id: self.node_id(),
            info: crate::raft::NodeInfo {
                zone: self.zone.clone(),
                rpc_addr: self.cluster_addr(),
                incarnation: None,
            },
        });
        all
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.node_id)
    }

    /// Repositories whose untagged manifests garbage collection takes.
    pub fn untagged_globs(&self) -> Result<globset::GlobSet, globset::Error> {
        let mut b = globset::GlobSetBuilder::new();
        for pattern in &self.gc_untagged {
            // `*` stays within one path segment, `**` crosses them, as in
            // the access rules people write for registries.
            b.add(
                globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()?,
            );
        }
        b.build()
    }

    pub fn space(&self) -> stowage_storage::SpaceConfig {
        stowage_storage::SpaceConfig {
            min_free_bytes: self.min_free_bytes,
            ballast_bytes: self.ballast_bytes,
        }
    }

    /// The backup settings, with the key file read.
    pub fn backup(&self) -> crate::error::Result<crate::backup::BackupConfig> {
        let key = match &self.backup_key_file {
            Some(path) => Some(crate::backup::repo::Key::from_file(path)?),
            None => None,
        };
        Ok(crate::backup::BackupConfig {
            repo: self.backup_repo.clone(),
            key,
            interval: Duration::from_secs(self.backup_interval_secs),
            archive: self.backup_archive,
            archive_interval: Duration::from_secs(self.backup_archive_interval_secs),
        })
    }

    pub fn lifecycle(&self) -> crate::chunks::lifecycle::LifecycleConfig {
        use crate::chunks::gc::GcConfig;
        crate::chunks::lifecycle::LifecycleConfig {
            gc: GcConfig {
                grace: Duration::from_secs(self.gc_grace_secs),
                lease: Duration::from_secs(self.upload_expiry_secs),
                interval: Duration::from_secs(self.gc_interval_secs),
                untagged: self.untagged_globs().unwrap_or_default(),
            },
            repair_interval: Duration::from_secs(self.repair_interval_secs),
            repair_max_bytes_per_sec: self.repair_max_bytes_per_sec,
            scrub_interval: Duration::from_secs(self.scrub_interval_secs),
            scrub_max_bytes_per_sec: self.scrub_max_bytes_per_sec,
        }
    }

    /// openraft's `(election_timeout_min, election_timeout_max)`.
    ///
    /// An openraft follower first waits out its leader lease, which is
    /// `election_timeout_max`, and then a timeout drawn from `[min, max)`:
    /// the silence before it campaigns is `max + [min, max)`. A third and
    /// two thirds of the setting make that silence the setting to 4/3 of
    /// it (with `min` = the setting and `max` twice it, as before, a
    /// leader's loss cost three to four times the setting).
    pub fn raft_election_bounds(&self) -> (u64, u64) {
        let min = (self.raft_election_timeout_ms / 3).max(1);
        let max = (self.raft_election_timeout_ms * 2 / 3).max(min + 1);
        (min, max)
    }

    pub fn auth(&self) -> crate::auth::AuthSettings {
        crate::auth::AuthSettings {
            service: self.token_service.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            max_failed_logins_per_minute: self.max_failed_logins_per_minute.max(1),
            enforce_from_start: self.admin_password_file.is_some(),
            realm: self.token_realm.clone(),
            tls: self.tls().is_some(),
        }
    }

    /// mTLS for the cluster RPC, both ends, if the three files are set.
    pub fn cluster_tls(
        &self,
    ) -> anyhow::Result<
        Option<(
            tonic::transport::ServerTlsConfig,
            tonic::transport::ClientTlsConfig,
        )>,
    > {
        use anyhow::Context;
        use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
        let (Some(ca), Some(cert), Some(key)) = (
            &self.cluster_tls_ca_file,
            &self.cluster_tls_cert_file,
            &self.cluster_tls_key_file,
        ) else {
            return Ok(None);
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("{key} {}", path.display()))
        };
        let ca = Certificate::from_pem(read("cluster_tls_ca_file", ca)?);
        let identity = Identity::from_pem(
            read("cluster_tls_cert_file", cert)?,
            read("cluster_tls_key_file", key)?,
        );
        let server = ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone());
        let client = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        Ok(Some((server, client)))
    }

    /// Deadlines and timeouts of consensus calls.
    pub fn timing(&self) -> crate::consensus::Timing {
        let (_, lease_ms) = self.raft_election_bounds();
        crate::consensus::Timing {
            request_deadline: Duration::from_secs(self.request_deadline_secs),
            rpc_timeout: Duration::from_millis(
                self.cluster_rpc_timeout_ms
                    .unwrap_or(self.raft_election_timeout_ms * 2),
            ),
            leader_lease: Duration::from_millis(lease_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults_and_unknown_keys_fail() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        let c: Config =
            toml::from_str("listen = \"0.0.0.0:6000\"\nzone = \"eu-1\"\nnode_id = 3").unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.zone.as_str(), "eu-1");
        c.validate().unwrap();
        assert!(toml::from_str::<Config>("zone = \"bad zone\"").is_err());
        let c: Config = toml::from_str(
            "cluster_listen = \"127.0.0.1:7001\"\npeers = [\"2=b@127.0.0.1:7002\", \"3=c@127.0.0.1:7003\"]",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.initial_members().len(), 3);
        assert!(toml::from_str::<Config>("peers = [\"nonsense\"]").is_err());
    }

    #[test]
    fn cluster_settings_are_checked() {
        let p = |s: &str| s.parse::<PeerSpec>().unwrap();
        let no_listen = Config {
            peers: vec![p("2=b@h:1")],
            ..Config::default()
        };
        assert!(no_listen.validate().is_err());
        let dup = Config {
            cluster_listen: Some("127.0.0.1:7001".parse().unwrap()),
            peers: vec![p("1=b@h:1")],
            ..Config::default()
        };
        assert!(dup.validate().unwrap_err().to_string().contains("peers"));
    }

    #[test]
    fn one_peer_list_serves_every_node() {
        let p = |s: &str| s.parse::<PeerSpec>().unwrap();
        let all = vec![p("1=a@h1:7000"), p("2=b@h2:7000"), p("3=c@h3:7000")];
        let mut c = Config {
            node_id: 2,
            cluster_listen: Some("0.0.0.0:7000".parse().unwrap()),
            peers: all.clone(),
            ..Config::default()
        };
        c.take_self_from_peers().unwrap();
        c.validate().unwrap();
        assert_eq!(c.zone.as_str(), "b");
        assert_eq!(c.cluster_addr(), "h2:7000");
        let ids: Vec<u64> = c.peers.iter().map(|p| p.id.0).collect();
        assert_eq!(ids, vec![1, 3]);
        // An explicit zone must agree with the list; an explicit
        // cluster_advertise wins over the list's address.
        let mut clash = Config {
            node_id: 2,
            zone: "c".parse().unwrap(),
            cluster_listen: Some("0.0.0.0:7000".parse().unwrap()),
            peers: all.clone(),
            ..Config::default()
        };
        assert!(clash.take_self_from_peers().is_err());
        let mut same = Config {
            node_id: 3,
            zone: "c".parse().unwrap(),
            cluster_listen: Some("0.0.0.0:7000".parse().unwrap()),
            cluster_advertise: Some("10.0.0.3:7000".into()),
            peers: all,
            ..Config::default()
        };
        same.take_self_from_peers().unwrap();
        assert_eq!(same.cluster_addr(), "10.0.0.3:7000");
    }

    #[test]
    fn timing_follows_the_settings() {
        let c = Config::default();
        let t = c.timing();
        assert_eq!(t.request_deadline, Duration::from_secs(5));
        assert_eq!(t.rpc_timeout, Duration::from_millis(1600));
        assert_eq!(t.leader_lease, Duration::from_millis(533));
        // The silence before a campaign is max + [min, max): the setting
        // to 4/3 of it.
        let (min, max) = c.raft_election_bounds();
        assert_eq!((min + max, 2 * max), (799, 1066));
        let c: Config =
            toml::from_str("request_deadline_secs = 2\ncluster_rpc_timeout_ms = 300").unwrap();
        assert_eq!(c.timing().request_deadline, Duration::from_secs(2));
        assert_eq!(c.timing().rpc_timeout, Duration::from_millis(300));
        let zero = Config {
            request_deadline_secs: 0,
            ..Config::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let c: Config = toml::from_str("tls_cert_file = \"/etc/stowage/node.pem\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls_key_file"), "{e}");
        let c: Config = toml::from_str("tls_key_file = \"/etc/stowage/key.pem\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls_cert_file"), "{e}");
        assert!(!Config::default().auth().tls);
        let c: Config = toml::from_str(
            "tls_cert_file = \"/etc/stowage/node.pem\"\ntls_key_file = \"/etc/stowage/key.pem\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.auth().tls);
        assert_eq!(c.tls().unwrap().key, PathBuf::from("/etc/stowage/key.pem"));
    }

    #[test]
    fn the_disk_reserve_and_ballast_are_settings() {
        let c = Config::default();
        assert_eq!(
            (c.space().min_free_bytes, c.space().ballast_bytes),
            (1 << 30, 64 << 20)
        );
        let c: Config = toml::from_str("min_free_bytes = 0\nballast_bytes = 0").unwrap();
        c.validate().unwrap();
        assert_eq!((c.space().min_free_bytes, c.space().ballast_bytes), (0, 0));
    }

    #[test]
    fn validation_names_the_key() {
        let c = Config {
            chunk_size_bytes: 10,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("chunk_size_bytes"));
    }
}
