//! Starting and stopping a node: open storage, start Raft and the cluster
//! RPC, bootstrap or rejoin the cluster in the background, start the
//! background jobs (chunk lifecycle, upload expiry), serve HTTP (or HTTPS,
//! its certificate re-read on SIGHUP) until SIGTERM or Ctrl-C (or a
//! start-up error the operator must fix), then drain requests, stop Raft
//! and make the metadata durable.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::async_runtime::WatchReceiver;
use stowage_storage::meta::Command;
use stowage_storage::types::NodeId;
use stowage_storage::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::Auth;
use crate::chunks::repair::HealthBoard;
use crate::chunks::{ChunkIo, Lifecycle};
use crate::cluster::bootstrap::{self, Plan};
use crate::cluster::identity::{self, Identity};
use crate::cluster::peers::Peers;
use crate::cluster::service::{self, NodeCtx};
use crate::cluster::{peers_digest, PeerSpec};
use crate::config::Config;
use crate::consensus::Consensus;
use crate::placement::{self, Member};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{NodeInfo, Raft};
use crate::registry::{Registry, Replication, Settings, UploadExpiry};
use crate::workers::Workers;

/// How often each node greets the others (liveness, HTTP addresses).
const HELLO_EVERY: Duration = Duration::from_secs(1);

pub fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log_level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stowage")
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

fn init_logging(level: &str) {
    // A bare level keeps openraft's own chatter at errors: it warns once
    // per failed heartbeat or replication attempt while a peer is down,
    // and `Peers` already says once when a peer stops and starts
    // answering. A full filter (with '=' in it) is taken as given.
    let spec = if level.contains('=') {
        level.to_owned()
    } else {
        format!("{level},openraft=error")
    };
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, not in files and
    // journald.
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    // The status page's recent errors, whatever the log's own level. Not
    // openraft's per-heartbeat warnings while a peer is down (noise), and
    // not failed logins: the page is open, and who tried which name from
    // where is for the log, not for anyone who can reach the node.
    let recent = crate::recent::RecentErrors
        .with_filter(EnvFilter::new("warn,openraft=error,stowage_node::auth=off"));
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(recent)
        .try_init();
}

/// Raises the soft limit on open files to the hard one (service managers
/// often start processes at 256 or 1024, which a few hundred idle sockets
/// exhaust), and returns how many client connections to hold at once:
/// `max_connections`, or what the limit leaves after a reserve for chunk
/// files, the metadata store and cluster connections.
fn connection_limit(config: &Config) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(s, _)| s)
        }
    };
    let reserve = (soft / 4).max(256);
    let auto = usize::try_from(soft.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .clamp(16, 65_536);
    let limit = match config.max_connections {
        0 => auto,
        n => n,
    };
    tracing::debug!(
        open_files = soft,
        max_connections = limit,
        "connection limit"
    );
    limit
}

/// A node reachable beyond this machine with no accounts would let anyone
/// push, delete and change the membership: refuse unless asked for.
fn refuse_open_exposure(config: &Config, store: &Store) -> anyhow::Result<()> {
    if config.listen.ip().is_loopback()
        || config.allow_anonymous
        || config.admin_password_file.is_some()
        || store.meta.has_accounts()?
    {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve {} with no accounts: anyone who can reach it could push, delete and \
         change the cluster. Either set admin_password_file (user admin is created from it on \
         first start), or create the first user on a loopback node (`stowage user add admin`), \
         or pass --allow-anonymous (allow_anonymous = true) to run it open on purpose.",
        config.listen
    )
}

/// The first line of a password file, without its line ending.
fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading admin_password_file {}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.len() < 8 {
        anyhow::bail!(
            "admin_password_file {}: the password needs at least 8 characters",
            path.display()
        );
    }
    Ok(password)
}

fn raft_config(config: &Config) -> anyhow::Result<openraft::Config> {
    let (election_timeout_min, election_timeout_max) = config.raft_election_bounds();
    let c = openraft::Config {
        cluster_name: "stowage".into(),
        heartbeat_interval: config.raft_heartbeat_ms,
        election_timeout_min,
        election_timeout_max,
        // Snapshots stream over their own RPC with no overall deadline.
        install_snapshot_timeout: 60_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.snapshot_logs_to_keep,
        // Entries may carry manifests of megabytes; keep batches modest.
        max_payload_entries: 64,
        // A node that was cut off asks first whether it could win, so it
        // does not disrupt a healthy leader with a higher term on return.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(c.validate()?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Bad certificate files stop start-up before anything else is opened.
    let tls = match config.tls() {
        Some(files) => Some(Arc::new(crate::tls::Tls::load(files)?)),
        None => None,
    };
    // Installed long before the address is announced, so a SIGHUP sent as
    // soon as the node is up never meets the default action (exit).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    tokio::spawn(reload_on_hangup(hangups, tls.clone()));
    let store_config = StoreConfig {
        data_dir: config.data_dir.clone(),
        meta_cache_bytes: config.meta_cache_bytes,
        space: config.space(),
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
        .await?
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let id = config.node_id();
    let cluster_tls = config.cluster_tls()?;
    let peers = Arc::new(Peers::new(cluster_tls.as_ref().map(|(_, c)| c.clone())));
    let identity = Identity::new(id, store.incarnation().to_owned());

    let members = config.initial_members();
    if let Some(w) = placement::zone_warning(
        &members
            .iter()
            .map(|p| Member {
                id: p.id,
                zone: p.info.zone.clone(),
            })
            .collect::<Vec<_>>(),
    ) {
        tracing::warn!("{w}");
    }

    let state_machine =
        StateMachineStore::open(store.clone()).context("opening the state machine")?;
    let snapshot_dir = state_machine.snapshot_dir().to_owned();
    let raft = Raft::new(
        id,
        Arc::new(raft_config(&config)?),
        Network {
            peers: peers.clone(),
            identity: identity.clone(),
        },
        LogStore::new(store.clone()),
        state_machine,
    )
    .await
    .context("starting Raft")?;
    // The recorded incarnations are known before any election can start.
    identity.set_membership(
        raft.metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes(),
    );
    tokio::spawn(follow_membership(raft.clone(), identity.clone()));
    let consensus = Consensus::new(raft.clone(), id, peers.clone(), config.timing());
    let replication = Replication {
        replicas: config.replicas,
        write_quorum: config.write_quorum,
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    metrics.clone().follow(&raft);
    let chunk_io = Arc::new(ChunkIo::new(
        store.clone(),
        consensus.clone(),
        peers.clone(),
        replication,
        metrics,
    ));
    let health = Arc::new(HealthBoard::new(store.clone()));

    refuse_open_exposure(&config, &store)?;
    let max_connections = connection_limit(&config);
    // Peers' registry ports speak HTTPS when this one does; they are
    // trusted through the cluster CA.
    let forwarder = crate::http::proxy::Forwarder::new(
        match (&config.tls_cert_file, &config.cluster_tls_ca_file) {
            (Some(_), Some(ca)) => Some(crate::tls::client_trusting(ca)?),
            _ => None,
        },
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let http_addr = config.http_addr(addr);

    let (stop_cluster, cluster_stopped) = oneshot::channel::<()>();
    if let Some(cluster_listen) = config.cluster_listen {
        let ctx = NodeCtx {
            id,
            zone: config.zone.clone(),
            http_addr: http_addr.clone(),
            peers_digest: peers_digest(&members),
            identity: identity.clone(),
            peers: peers.clone(),
        };
        let rpc = TcpListener::bind(cluster_listen)
            .await
            .with_context(|| format!("listening for the cluster on {cluster_listen}"))?;
        let chunks_svc = crate::chunks::rpc::service(
            store.clone(),
            health.clone(),
            config.chunk_size_bytes,
            config.max_inflight_chunk_writes,
        );
        let router = service::router(
            raft.clone(),
            store.clone(),
            ctx,
            snapshot_dir,
            chunks_svc,
            cluster_tls.map(|(s, _)| s),
        )
        .context("the cluster RPC's TLS configuration")?;
        tokio::spawn(async move {
            // Nagle's algorithm with delayed ACKs would stall small RPCs
            // (heartbeats, read-index answers) by tens of milliseconds.
            let incoming =
                tonic::transport::server::TcpIncoming::from(rpc).with_nodelay(Some(true));
            let stopped = async {
                let _ = cluster_stopped.await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                tracing::error!(error = %e, "the cluster RPC server failed");
            }
        });
    }

    let (fatal_tx, fatal_rx) = oneshot::channel::<anyhow::Error>();
    let plan = Plan {
        id,
        me: NodeInfo {
            zone: config.zone.clone(),
            rpc_addr: config.cluster_addr(),
            incarnation: None,
        },
        incarnation: identity.incarnation.clone(),
        peers: config.peers.clone(),
        peers_digest: peers_digest(&members),
    };
    {
        let (raft, store, peers) = (raft.clone(), store.clone(), peers.clone());
        tokio::spawn(async move {
            if let Err(e) = bootstrap::run(&raft, &store, &peers, &plan).await {
                let _ = fatal_tx.send(e.into());
            }
        });
    }
    tokio::spawn(name_the_cluster(consensus.clone(), store.clone()));
    tokio::spawn(greet_members(consensus.clone(), peers.clone(), identity));

    let settings = Settings {
        node_id: id,
        zone: config.zone.clone(),
        http_addr,
        chunk_size_bytes: config.chunk_size_bytes,
        max_manifest_bytes: config.max_manifest_bytes,
        upload_expiry: Duration::from_secs(config.upload_expiry_secs),
        max_inflight_chunk_writes: config.max_inflight_chunk_writes,
        replication,
        body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs.max(1)),
    };
    let workers = Arc::new(Workers::default());
    let lifecycle = Lifecycle::new(
        chunk_io.clone(),
        consensus.clone(),
        health,
        workers.clone(),
        config.lifecycle(),
    );
    let auth = Auth::new(store.clone(), consensus.clone(), config.auth());
    if let Some(path) = &config.admin_password_file {
        let password = read_password_file(path)?;
        tokio::spawn(auth.clone().bootstrap_admin(password));
    }
    let backups = crate::backup::Backups::new(
        store.clone(),
        chunk_io.clone(),
        consensus.clone(),
        config.backup()?,
    );
    if let Some(repo) = &backups.config.repo {
        if !backups.config.interval.is_zero() {
            workers.spawn(Arc::new(crate::backup::ScheduledBackup {
                backups: backups.clone(),
                location: repo.clone(),
            }));
        }
        if backups.config.archive {
            workers.spawn(Arc::new(crate::backup::archive::Archiver::new(
                backups.clone(),
                repo.clone(),
            )));
        }
    }
    let replicator = Arc::new(crate::replication::push::Replicator::new(
        store.clone(),
        chunk_io.clone(),
        consensus.clone(),
        crate::cli::registry_client(config.cluster_tls_ca_file.as_deref())?,
    ));
    workers.spawn(Arc::new(crate::replication::push::ReplicationWorker(
        replicator.clone(),
    )));
    let registry = Registry::new(
        settings,
        store.clone(),
        consensus,
        peers,
        chunk_io,
        lifecycle,
        backups,
        replicator,
    );
    workers.spawn(Arc::new(crate::disk::DiskWatch::new(store.clone())));
    workers.spawn(Arc::new(crate::replication::mirror::MirrorWorker::new(
        registry.clone(),
    )));
    workers.spawn(Arc::new(UploadExpiry {
        registry: registry.clone(),
        interval: Duration::from_secs(config.sweep_interval_secs),
    }));

    tracing::info!(%addr, tls = tls.is_some(), node = %id, zone = %config.zone, data_dir = %config.data_dir.display(), "stowage is serving");
    // One line on stdout for scripts and tests that started us on port 0.
    println!("listening on {addr}");

    let mut fatal: Option<anyhow::Error> = None;
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            Ok(e) = fatal_rx => fatal = Some(e),
        }
    };
    crate::http::serve(
        listener,
        Arc::new(crate::http::Api {
            reg: registry,
            auth,
            max_connections,
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            forwarder,
            access_log: config.access_log,
        }),
        tls,
        stop,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await;

    let _ = stop_cluster.send(());
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not stop cleanly");
    }
    tokio::task::spawn_blocking(move || store.sync_meta())
        .await?
        .context("flushing metadata on shutdown")?;
    match fatal {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// The first leader gives the cluster its id, which every replica then
/// keeps; a node started on another cluster's data can then tell.
async fn name_the_cluster(consensus: Arc<Consensus>, store: Arc<Store>) {
    loop {
        match store.meta.cluster_id() {
            Ok(Some(_)) => return,
            Ok(None) if consensus.raft().is_leader() => {
                let id = uuid::Uuid::new_v4().to_string();
                match consensus.propose(Command::SetClusterId { id }).await {
                    Ok(_) => continue,
                    Err(e) => tracing::debug!(error = %e, "naming the cluster failed; retrying"),
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps the incarnations the membership records, which every Raft
/// request and answer is checked against, current.
async fn follow_membership(raft: crate::raft::Raft, identity: Arc<Identity>) {
    let mut metrics = raft.metrics();
    while metrics.changed().await.is_ok() {
        let m = metrics.borrow_watched().membership_config.clone();
        identity.set_membership(m.membership().nodes());
    }
}

/// Greets every member periodically: records when each was last heard from,
/// where its HTTP API is and which incarnation it has; on the leader,
/// records the incarnation of members that have none recorded yet.
async fn greet_members(consensus: Arc<Consensus>, peers: Arc<Peers>, identity: Arc<Identity>) {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    // Each peer is greeted on its own: a peer that vanished (its hellos
    // wait for a connect timeout) must not delay the greetings that keep
    // the others from looking down. Recording incarnations is a membership
    // change, which can take a while, so it runs beside the greetings too.
    let in_flight: Arc<Mutex<HashSet<NodeId>>> = Arc::default();
    let recording = Arc::new(AtomicBool::new(false));
    loop {
        let me = consensus.id();
        let members = consensus.members();
        for (id, info) in members.iter() {
            if *id == me || info.rpc_addr.is_empty() {
                continue;
            }
            if !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id)
            {
                continue;
            }
            let (peers, in_flight) = (peers.clone(), in_flight.clone());
            let spec = PeerSpec {
                id: *id,
                info: info.clone(),
            };
            tokio::spawn(async move {
                bootstrap::hello(&peers, me, &spec).await;
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&spec.id);
            });
        }
        if consensus.raft().is_leader() && !recording.swap(true, Ordering::AcqRel) {
            // What the peers said of themselves in their last answer.
            let seen: BTreeMap<NodeId, String> = members
                .keys()
                .filter_map(|id| peers.state(*id).incarnation.map(|i| (*id, i)))
                .collect();
            let (raft, identity, recording) = (
                consensus.raft().clone(),
                identity.clone(),
                recording.clone(),
            );
            tokio::spawn(async move {
                identity::record_first_contact(&raft, &identity, &members, &seen).await;
                recording.store(false, Ordering::Release);
            });
        }
        tokio::time::sleep(HELLO_EVERY).await;
    }
}

/// SIGHUP re-reads the certificate and key: new connections get the new
/// pair, open ones keep theirs. Bad files are logged and the old pair
/// stays, so a half-finished rotation never takes the port down.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    while hangups.recv().await.is_some() {
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: no TLS configured, nothing to reload");
            continue;
        };
        let files = tls.files();
        // Two small files: reading them on this task is cheaper than a
        // blocking-pool hop and cannot stall the runtime noticeably.
        match tls.reload() {
            Ok(()) => tracing::info!(
                cert = %files.cert.display(),
                "SIGHUP: reloaded the TLS certificate"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: the TLS files are unusable; still serving the previous certificate"
            ),
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
    }
}
