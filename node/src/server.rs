//! Starting and stopping a node: open storage, replay the log, start the
//! background sweeper, serve HTTP until SIGTERM or Ctrl-C, then drain
//! requests and make the metadata durable before exiting.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stowage_storage::{Store, StoreConfig};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::consensus::{self, Consensus};
use crate::registry::{Registry, Settings};

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
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let store_config = StoreConfig {
        data_dir: config.data_dir.clone(),
        meta_cache_bytes: config.meta_cache_bytes,
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
        .await?
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let consensus = Consensus::start(store.clone()).context("replaying the log")?;
    let settings = Settings {
        node_id: config.node_id(),
        chunk_size_bytes: config.chunk_size_bytes,
        max_manifest_bytes: config.max_manifest_bytes,
        upload_expiry: Duration::from_secs(config.upload_expiry_secs),
        gc_grace: config.gc_grace(),
        max_inflight_chunk_writes: config.max_inflight_chunk_writes,
    };
    let registry = Registry::new(settings, store.clone(), consensus);
    tokio::spawn(sweep_loop(
        registry.clone(),
        Duration::from_secs(config.sweep_interval_secs),
    ));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), zone = %config.zone, "stowage is serving");
    // One line on stdout for scripts and tests that started us on port 0.
    println!("listening on {addr}");

    crate::http::serve(
        listener,
        registry,
        shutdown_signal(),
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await;

    tokio::task::spawn_blocking(move || consensus::compact(&store))
        .await?
        .context("flushing metadata on shutdown")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn sweep_loop(registry: Arc<Registry>, every: Duration) {
    loop {
        let r = registry.clone();
        match tokio::task::spawn_blocking(move || r.sweep()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "sweep failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "sweep task failed"),
        }
        tokio::time::sleep(every).await;
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
