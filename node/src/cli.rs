//! The `stowage` command line: `serve` runs a node; later subcommands talk
//! to a node's admin API. Flags override the config file, which overrides
//! the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stowage_storage::types::Zone;

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A self-hosted OCI container registry in one binary",
    long_about = "Stowage is a self-hosted OCI container registry that needs nothing but its own \
binary. `stowage serve` with no flags runs a single-node registry on 127.0.0.1:5000 \
with its data in ./stowage-data."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a registry node.
    Serve(ServeArgs),
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; every flag below has a key of the same name
    /// (dashes become underscores), and flags win over the file.
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            ExitCode::FAILURE
        }
    }
}
