//! The `stowage` command line: `serve` runs a node; `status`, `members`,
//! `gc` and `scrub` talk to the admin API of any node. Flags override the config file, which
//! overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stowage_storage::types::Zone;

use crate::admin::{self, MembersRequest, Status};
use crate::cluster::PeerSpec;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A self-hosted OCI container registry in one binary",
    long_about = "Stowage is a self-hosted OCI container registry that needs nothing but its own \
binary. `stowage serve` with no flags runs a single-node registry on 127.0.0.1:5000 \
with its data in ./stowage-data; with --cluster-listen and --peer it is one node of a \
Raft cluster."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a registry node.
    Serve(ServeArgs),
    /// Show a node's view of the cluster: role, leader, log position, members.
    Status(NodeArg),
    /// List, add or remove cluster members (through any node).
    Members(MembersArgs),
    /// Garbage collection: what would go, and passes on demand.
    Gc(GcArgs),
    /// Re-hashing of the chunks a node holds: start a pass, or see the last.
    Scrub(ScrubArgs),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(subcommand)]
    pub action: GcAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum GcAction {
    /// What a pass would collect now, the last pass, and the node's last
    /// sweep of chunk files.
    Status,
    /// Run a pass now (through any node): unused blobs and untagged
    /// manifests go through the log, then the node removes chunk files.
    Run {
        /// Only report what the pass would collect.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    #[command(subcommand)]
    pub action: ScrubAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum ScrubAction {
    /// Start a pass over the node's chunks now.
    Run,
    /// Progress, corrupt chunks found and repaired, and lost chunks with
    /// the images that need them.
    Status,
}

#[derive(Debug, Args)]
pub struct NodeArg {
    /// Base URL of any node's HTTP API.
    #[arg(
        long,
        global = true,
        env = "STOWAGE_NODE",
        default_value = "http://127.0.0.1:5000"
    )]
    pub node: String,
    /// Print the raw JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    pub action: Option<MembersAction>,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum MembersAction {
    /// Add a node: it joins as a learner and is promoted to voter once it
    /// has caught up. Start it first with the same --peer list.
    Add {
        /// The new member, ID=ZONE@HOST:PORT (its cluster address).
        member: PeerSpec,
    },
    /// Remove a node from the membership.
    Remove {
        /// The member's node id.
        id: u64,
    },
    /// Re-admit a member whose data directory was emptied or replaced: it
    /// leaves the voters, rejoins as a learner under its new incarnation
    /// and is promoted to voter once caught up. Start it first.
    Replace {
        /// The member's node id.
        id: u64,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; every flag below has a key of the same name
    /// (dashes become underscores; --peer is `peers`), and flags win over
    /// the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for the OCI HTTP API [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for chunks, metadata and the log [default: ./stowage-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log verbosity: error, warn, info, debug, trace, or a tracing filter
    /// [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// This node's id in the cluster [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// This node's failure domain [default: default].
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<Zone>,
    /// Address for the cluster RPC (Raft, forwarding, chunk transfer);
    /// needed when the node has peers.
    #[arg(long, value_name = "ADDR")]
    pub cluster_listen: Option<SocketAddr>,
    /// Another initial member, ID=ZONE@HOST:PORT (its cluster address);
    /// repeat for each. Every node lists all the others.
    #[arg(long = "peer", value_name = "ID=ZONE@ADDR")]
    pub peers: Vec<PeerSpec>,
    /// Largest chunk blobs are split into, in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub chunk_size_bytes: Option<usize>,
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then flags.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.log_level {
            c.log_level = v.clone();
        }
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = &self.zone {
            c.zone = v.clone();
        }
        if let Some(v) = self.cluster_listen {
            c.cluster_listen = Some(v);
        }
        if !self.peers.is_empty() {
            c.peers = self.peers.clone();
        }
        if let Some(v) = self.chunk_size_bytes {
            c.chunk_size_bytes = v;
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(crate::server::run),
        Command::Status(node) => admin_command(status(node)),
        Command::Members(args) => admin_command(members(args)),
        Command::Gc(args) => admin_command(gc(args)),
        Command::Scrub(args) => admin_command(scrub(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn admin_command(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

/// One admin API call: JSON in (for POST), JSON out, OCI-style errors
/// turned into a readable message.
async fn call(
    node: &str,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<serde_json::Value> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let url = format!("{}{path}", node.trim_end_matches('/'));
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .with_context(|| format!("bad node URL {url}"))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        let msg = value["errors"][0]["message"]
            .as_str()
            .unwrap_or("unknown error");
        bail!("{url}: {status}: {msg}");
    }
    Ok(value)
}

async fn fetch_status(node: &str) -> anyhow::Result<Status> {
    let v = call(node, http::Method::GET, "/_stowage/status", None).await?;
    Ok(serde_json::from_value(v)?)
}

async fn status(node: NodeArg) -> anyhow::Result<()> {
    let s = fetch_status(&node.node).await?;
    if node.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", admin::render(&s));
    }
    Ok(())
}

async fn members(args: MembersArgs) -> anyhow::Result<()> {
    let node = &args.node.node;
    let req = match args.action {
        None => {
            let s = fetch_status(node).await?;
            if args.node.json {
                println!("{}", serde_json::to_string_pretty(&s.members)?);
            } else {
                print!("{}", admin::render(&s));
            }
            return Ok(());
        }
        Some(MembersAction::Add { member }) => MembersRequest::Add(member),
        Some(MembersAction::Remove { id }) => MembersRequest::Remove(id),
        Some(MembersAction::Replace { id }) => MembersRequest::Replace(id),
    };
    let body = serde_json::to_vec(&req)?;
    let v = call(node, http::Method::POST, "/_stowage/members", Some(body)).await?;
    println!("{}", v["summary"].as_str().unwrap_or("done"));
    Ok(())
}

/// Prints an admin answer: pretty JSON, which is also what `--json` asks
/// for (these reports are nested; a table would hide the detail).
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let node = &args.node.node;
    let v = match args.action {
        GcAction::Status => call(node, http::Method::GET, "/_stowage/gc", None).await?,
        GcAction::Run { dry_run } => {
            let path = if dry_run {
                "/_stowage/gc?dry_run=true"
            } else {
                "/_stowage/gc"
            };
            call(node, http::Method::POST, path, None).await?
        }
    };
    print_json(&v)
}

async fn scrub(args: ScrubArgs) -> anyhow::Result<()> {
    let node = &args.node.node;
    let v = match args.action {
        ScrubAction::Run => call(node, http::Method::POST, "/_stowage/scrub", None).await?,
        ScrubAction::Status => call(node, http::Method::GET, "/_stowage/scrub", None).await?,
    };
    print_json(&v)
}
