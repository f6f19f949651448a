//! The `stowage` command line: `serve` runs a node; `status`, `members`,
//! `gc` and `scrub` talk to the admin API of any node; `cert` makes the
//! cluster CA and node certificates, offline. Flags override the config
//! file, which overrides the defaults.

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
    /// Show a node's view of the cluster: role, leader, log position,
    /// members by zone with health and lag, replica health, jobs.
    Status(StatusArgs),
    /// List, add or remove cluster members (through any node).
    Members(MembersArgs),
    /// Garbage collection: what would go, and passes on demand.
    Gc(GcArgs),
    /// Re-hashing of the chunks a node holds: start a pass, or see the last.
    Scrub(ScrubArgs),
    /// Users: people who log in with a password (through any node).
    User(UserArgs),
    /// Robot accounts: long random tokens for CI, shown once.
    Robot(RobotArgs),
    /// Access rules: who may pull, push, delete or administer which
    /// repositories.
    Access(AccessArgs),
    /// Certificates for HTTPS: a cluster CA, and node certificates it signs.
    Cert(CertArgs),
    /// Immutable tags: tags that, once pushed, never move or go.
    Immutable(ImmutableArgs),
    /// Quotas: bytes (each blob once) and repositories per namespace.
    Quota(QuotaArgs),
    /// Retention: which tags GC passes keep, and how long untagged
    /// manifests stay (`stowage gc run --dry-run` shows what would go).
    Retention(RetentionArgs),
    /// Replication rules: push what changes here to other registries.
    Replication(ReplicationArgs),
    /// Pull-through mirrors: repositories under a prefix fetched from an
    /// upstream registry when first pulled, then served from here.
    Mirror(MirrorArgs),
    /// Copy an image, or every tag of a repository, from any registry to
    /// any other (resumable blob uploads, blobs the target has skipped).
    Copy(crate::replication::copy::CopyArgs),
    /// Backups: snapshots into a repository (a directory or S3), and
    /// listing, verifying and pruning a repository.
    Backup(crate::backup::cli::BackupArgs),
    /// Rebuild a node's data directory from a backup repository alone, or
    /// put one repository back into a running cluster as it was.
    Restore(crate::backup::cli::RestoreArgs),
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    #[command(subcommand)]
    pub action: MirrorAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum MirrorAction {
    /// Repositories PREFIX... here mirror UPSTREAM_PREFIX... of UPSTREAM,
    /// e.g. `stowage mirror add hub --upstream https://registry-1.docker.io
    /// --prefix hub/` serves `hub/library/alpine`.
    Add {
        name: String,
        /// The upstream registry, http(s)://HOST[:PORT].
        #[arg(long, value_name = "URL")]
        upstream: String,
        /// The local repository prefix, ending in / (e.g. hub/).
        #[arg(long, value_name = "P")]
        prefix: String,
        /// What replaces it upstream [default: nothing].
        #[arg(long, value_name = "P", default_value = "")]
        upstream_prefix: String,
        /// Refresh mirrored tags this often (0: only when pulled).
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        interval_secs: u64,
        /// A file with USER:PASSWORD for the upstream.
        #[arg(long, value_name = "FILE")]
        creds_file: Option<PathBuf>,
    },
    Remove {
        name: String,
    },
    List,
}

/// `USER:PASSWORD` from a file's first line.
fn creds_from(file: Option<&std::path::Path>) -> anyhow::Result<(Option<String>, Option<String>)> {
    let Some(f) = file else {
        return Ok((None, None));
    };
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    let line = text.lines().next().unwrap_or("");
    let (u, p) = line
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("{}: one line USER:PASSWORD", f.display()))?;
    Ok((Some(u.to_owned()), Some(p.to_owned())))
}

async fn mirror(args: MirrorArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let req = match args.action {
        MirrorAction::List => None,
        MirrorAction::Add {
            name,
            upstream,
            prefix,
            upstream_prefix,
            interval_secs,
            creds_file,
        } => {
            let (username, password) = creds_from(creds_file.as_deref())?;
            Some(admin::MirrorRequest {
                op: "add".into(),
                name,
                upstream,
                prefix,
                upstream_prefix,
                username,
                password,
                interval_secs,
            })
        }
        MirrorAction::Remove { name } => Some(admin::MirrorRequest {
            op: "remove".into(),
            name,
            ..Default::default()
        }),
    };
    let v = list_or_change(node, "/_stowage/mirrors", req).await?;
    print_json(&v)
}

#[derive(Debug, Args)]
pub struct ReplicationArgs {
    #[command(subcommand)]
    pub action: ReplicationAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum ReplicationAction {
    /// Push every change of matching repositories to TARGET (any OCI
    /// registry), starting with what they hold now. The leader does it.
    Add {
        name: String,
        /// The target registry, http(s)://HOST[:PORT].
        #[arg(long, value_name = "URL")]
        target: String,
        /// Repositories to push (a glob) [default: **].
        #[arg(long, value_name = "GLOB")]
        repositories: Option<String>,
        /// Tags to push (a regular expression over the whole tag).
        #[arg(long, value_name = "REGEX")]
        tags: Option<String>,
        /// Put before each repository name on the target.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Tag and manifest deletes follow.
        #[arg(long)]
        deletes: bool,
        /// A file with USER:PASSWORD for the target (kept as a replicated
        /// secret, shown masked).
        #[arg(long, value_name = "FILE")]
        creds_file: Option<PathBuf>,
    },
    /// Stop pushing to a rule's target.
    Remove { name: String },
    /// Every rule: target, filters, cursor.
    List,
    /// Lag (entries and seconds behind), bytes copied, last error and
    /// recent failures of every rule (or one).
    Status { name: Option<String> },
    /// Copy everything matching again (HEAD first: only what the target
    /// lacks moves), then follow the log.
    Resync { name: String },
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub action: RetentionAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// Set the rule of repositories matching REPOSITORIES (a glob: `*`
    /// within a path component, `**` across). A tag stays if any of
    /// --keep-last, --keep-within or --keep-tags keeps it; immutable tags
    /// always stay. GC passes remove the others.
    Set {
        repositories: String,
        /// Keep the N tags that most recently got their manifest.
        #[arg(long, value_name = "N")]
        keep_last: Option<u64>,
        /// Keep tags pushed within this long (e.g. 30d, 12h, 90s).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_within: Option<u64>,
        /// Always keep tags matching this glob (e.g. 'v*').
        #[arg(long, value_name = "GLOB")]
        keep_tags: Option<String>,
        /// Collect manifests untagged for this long (e.g. 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        untagged_after: Option<u64>,
    },
    /// Remove the rule of REPOSITORIES.
    Remove { repositories: String },
    /// Every retention rule.
    List,
}

/// `30d`, `12h`, `15m`, `90s` or plain seconds, in seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: a duration such as 30d, 12h, 15m or 90s"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h, d, w)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?}: too long"))
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub action: QuotaAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum QuotaAction {
    /// Limit a namespace (`team-a` covers `team-a` and `team-a/**`); a push
    /// that would pass a limit is refused with 403 DENIED, decided in the
    /// log so two nodes cannot both admit the last byte.
    Set {
        namespace: String,
        /// Bytes of distinct blobs, e.g. 50GiB, 500MB or 1048576.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_bytes: Option<u64>,
        /// Repositories.
        #[arg(long, value_name = "N")]
        max_repositories: Option<u64>,
    },
    /// Lift a namespace's quota.
    Remove { namespace: String },
    /// Every quota with its usage.
    List,
}

/// `50GiB`, `500MB`, `10k`, `1048576`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: a size such as 50GiB, 500MB or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    let v = n * mult as f64;
    if !(0.0..1.8e19).contains(&v) {
        return Err(format!("{text:?}: out of range"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v.round() as u64)
}

#[derive(Debug, Args)]
pub struct ImmutableArgs {
    #[command(subcommand)]
    pub action: ImmutableAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum ImmutableAction {
    /// Tags matching TAGS in repositories matching REPOSITORIES (globs:
    /// `*` within a path component, `**` across) can no longer be
    /// overwritten or deleted, e.g. `stowage immutable add 'prod/**' 'v*'`.
    Add { repositories: String, tags: String },
    /// Lift a rule.
    Remove { repositories: String, tags: String },
    /// The rules.
    List,
}

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub action: CertAction,
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Make a cluster CA in DIR: ca.pem (give it to clients) and
    /// ca-key.pem (keep it private). Refuses to replace an existing one.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Make node N's certificate and key, signed by the CA in DIR:
    /// node-N.pem and node-N-key.pem (replacing earlier ones).
    Node {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The node's id (names the files).
        #[arg(long, value_name = "N")]
        id: u64,
        /// A DNS name clients reach the node by; repeat for each.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address clients reach the node by; repeat for each.
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<std::net::IpAddr>,
    },
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub action: UserAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user; the first user of a cluster administers it. The password
    /// comes from --new-password-file, $STOWAGE_NEW_PASSWORD or a prompt.
    Add {
        name: String,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// The account stops working after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_days: Option<u64>,
    },
    /// Remove a user and the rules that name it.
    Remove { name: String },
    /// List users.
    List,
    /// Change a user's password (tokens issued before stop working).
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RobotArgs {
    #[command(subcommand)]
    pub action: RobotAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum RobotAction {
    /// Create a robot account and print its token (only this once).
    Create {
        name: String,
        #[arg(long, value_name = "DAYS")]
        expires_days: Option<u64>,
    },
    /// Revoke a robot account: its token and the tokens issued to it stop
    /// working on every node as soon as the change commits.
    Revoke { name: String },
    /// List robot accounts.
    List,
}

#[derive(Debug, Args)]
pub struct AccessArgs {
    #[command(subcommand)]
    pub action: AccessAction,
    #[command(flatten)]
    pub node: NodeArg,
}

#[derive(Debug, Subcommand)]
pub enum AccessAction {
    /// Grant ACTIONS (pull,push,delete,admin) on repositories matching
    /// PATTERN (`*` within a path component, `**` across) to SUBJECT (an
    /// account, `authenticated` or `anonymous`).
    Grant {
        pattern: String,
        subject: String,
        actions: String,
    },
    /// Take ACTIONS on PATTERN away from SUBJECT.
    Revoke {
        pattern: String,
        subject: String,
        actions: String,
    },
    /// List the rules.
    List,
    /// Make the rules in a TOML file the cluster's rules; the difference is
    /// shown first.
    Apply {
        file: PathBuf,
        /// Only show the difference.
        #[arg(long)]
        dry_run: bool,
    },
    /// Start signing tokens with a new key; the old one keeps verifying
    /// until the tokens it signed expire.
    RotateKey,
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
    /// The account to act as (an administrator for changes).
    #[arg(long, global = true, env = "STOWAGE_USER")]
    pub user: Option<String>,
    /// A file holding its password (else $STOWAGE_PASSWORD, else a prompt).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "STOWAGE_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// The CA (PEM) an `https://` node's certificate is checked against,
    /// e.g. the cluster CA from `stowage cert init`.
    #[arg(long, global = true, value_name = "FILE", env = "STOWAGE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl NodeArg {
    /// `Authorization: Basic ...` for `--user`, if given.
    pub(crate) fn authorization(&self) -> anyhow::Result<Option<String>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = secret(
            self.password_file.as_deref(),
            "STOWAGE_PASSWORD",
            &format!("password for {user}: "),
            false,
        )?;
        use base64::Engine as _;
        let raw = format!("{user}:{password}");
        Ok(Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )))
    }
}

/// A secret from a file (its first line), an environment variable, or a
/// prompt that does not echo (twice when `confirm`).
fn secret(
    file: Option<&std::path::Path>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(text.lines().next().unwrap_or("").to_owned());
    }
    if let Ok(v) = std::env::var(env) {
        return Ok(v);
    }
    let first = rpassword::prompt_password(prompt).context("reading the password")?;
    if confirm {
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if again != first {
            bail!("the passwords differ");
        }
    }
    Ok(first)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    #[command(flatten)]
    pub node: NodeArg,
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
    /// Serve a non-loopback address with no accounts: everyone may do
    /// everything (`allow_anonymous`).
    #[arg(long)]
    pub allow_anonymous: bool,
    /// A file with the password of user `admin`, created on first start if
    /// the cluster has no account (`admin_password_file`).
    #[arg(long, value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on --listen (`tls_cert_file`);
    /// needs --tls-key-file. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (`tls_key_file`).
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
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
        if self.allow_anonymous {
            c.allow_anonymous = true;
        }
        if let Some(v) = &self.admin_password_file {
            c.admin_password_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_cert_file {
            c.tls_cert_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_key_file {
            c.tls_key_file = Some(v.clone());
        }
        c.take_self_from_peers()?;
        c.validate()?;
        Ok(c)
    }
}

pub fn main() -> ExitCode {
    // ring everywhere, also for the HTTP client of S3 backup repositories
    // (reqwest is built without a provider of its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(crate::server::run),
        Command::Status(args) => admin_command(status(args)),
        Command::Members(args) => admin_command(members(args)),
        Command::Gc(args) => admin_command(gc(args)),
        Command::Scrub(args) => admin_command(scrub(args)),
        Command::User(args) => admin_command(user(args)),
        Command::Robot(args) => admin_command(robot(args)),
        Command::Access(args) => admin_command(access(args)),
        Command::Cert(args) => cert(args),
        Command::Immutable(args) => admin_command(immutable(args)),
        Command::Quota(args) => admin_command(quota(args)),
        Command::Retention(args) => admin_command(retention(args)),
        Command::Replication(args) => admin_command(replication(args)),
        Command::Mirror(args) => admin_command(mirror(args)),
        Command::Copy(args) => admin_command(crate::replication::copy::cli(args)),
        Command::Backup(args) => admin_command(crate::backup::cli::backup(args)),
        Command::Restore(args) => admin_command(crate::backup::cli::restore(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cert(args: CertArgs) -> anyhow::Result<()> {
    use crate::tls::certs;
    match args.action {
        CertAction::Init { dir } => {
            let ca = certs::init_ca(&dir)?;
            println!(
                "CA certificate: {} (clients trust this)\nCA key: {} (keep it private; it signs node certificates)",
                ca.cert.display(),
                ca.key.display()
            );
        }
        CertAction::Node { dir, id, dns, ips } => {
            let node = certs::issue_node(&dir, id, &certs::NodeNames { dns, ips })?;
            println!(
                "certificate: {}\nkey: {}\nserve with --tls-cert-file {} --tls-key-file {}",
                node.cert.display(),
                node.key.display(),
                node.cert.display(),
                node.key.display()
            );
        }
    }
    Ok(())
}

pub(crate) fn admin_command(
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

/// The HTTP(S) client of the CLI; an `https://` node's certificate is
/// checked against `ca_file`.
pub(crate) type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

pub(crate) fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<HttpClient> {
    let tls = match ca_file {
        Some(ca) => crate::tls::client_trusting(ca)?,
        // No CA given: an https:// node is refused, with the reason.
        None => crate::tls::client_trusting_nothing()?,
    };
    Ok(client_with(tls))
}

/// The client for other registries: the system's roots, and `ca_file`.
pub(crate) fn registry_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<HttpClient> {
    Ok(client_with(crate::tls::client_for_registries(ca_file)?))
}

fn client_with(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build::<_, Full<bytes::Bytes>>(connector)
}

/// One admin API call: JSON in (for POST), JSON out, OCI-style errors
/// turned into a readable message.
pub(crate) async fn call(
    node: &NodeArg,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<serde_json::Value> {
    let client = http_client(node.ca_file.as_deref())?;
    let url = format!("{}{path}", node.node.trim_end_matches('/'));
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(a) = node.authorization()? {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let req = req
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

async fn fetch_status(node: &NodeArg) -> anyhow::Result<Status> {
    let v = call(node, http::Method::GET, "/_stowage/status", None).await?;
    Ok(serde_json::from_value(v)?)
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let Some(every) = args.watch else {
        let s = fetch_status(node).await?;
        if node.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", admin::render(&s));
        }
        return Ok(());
    };
    let every = std::time::Duration::from_secs(every.max(1));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        // A node that stops answering is what a watch is for: say so and
        // keep watching.
        let shown = match fetch_status(node).await {
            Ok(s) if node.json => serde_json::to_string(&s)?,
            Ok(s) => admin::render(&s),
            Err(e) => {
                // On stderr, so a script reading JSON lines reads only JSON.
                eprintln!("{}: {e:#}", node.node);
                tokio::time::sleep(every).await;
                continue;
            }
        };
        if terminal {
            // Clear the screen and go home, as watch(1) does.
            print!("\x1b[2J\x1b[H");
        }
        if node.json {
            println!("{}", shown.trim_end());
        } else {
            print!("{shown}");
            println!(
                "\n{} · every {} s · Ctrl-C to stop",
                node.node,
                every.as_secs()
            );
        }
        std::io::Write::flush(&mut std::io::stdout())?;
        tokio::time::sleep(every).await;
    }
}

async fn members(args: MembersArgs) -> anyhow::Result<()> {
    let node = &args.node;
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

/// `GET` an admin list, or `POST` a change to it (which answers the list).
async fn list_or_change<T: serde::Serialize>(
    node: &NodeArg,
    path: &str,
    change: Option<T>,
) -> anyhow::Result<serde_json::Value> {
    match change {
        None => call(node, http::Method::GET, path, None).await,
        Some(r) => {
            call(
                node,
                http::Method::POST,
                path,
                Some(serde_json::to_vec(&r)?),
            )
            .await
        }
    }
}

/// Prints an admin answer: pretty JSON, which is also what `--json` asks
/// for (these reports are nested; a table would hide the detail).
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let node = &args.node;
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
    let node = &args.node;
    let v = match args.action {
        ScrubAction::Run => call(node, http::Method::POST, "/_stowage/scrub", None).await?,
        ScrubAction::Status => call(node, http::Method::GET, "/_stowage/scrub", None).await?,
    };
    print_json(&v)
}

async fn replication(args: ReplicationArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let only = match &args.action {
        ReplicationAction::Status { name } => name.clone(),
        _ => None,
    };
    let req = match args.action {
        ReplicationAction::List | ReplicationAction::Status { .. } => None,
        ReplicationAction::Add {
            name,
            target,
            repositories,
            tags,
            prefix,
            deletes,
            creds_file,
        } => {
            let (username, password) = match creds_file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    let line = text.lines().next().unwrap_or("");
                    let (u, p) = line.split_once(':').ok_or_else(|| {
                        anyhow::anyhow!("{}: one line USER:PASSWORD", f.display())
                    })?;
                    (Some(u.to_owned()), Some(p.to_owned()))
                }
                None => (None, None),
            };
            Some(admin::ReplicationRequest {
                op: "add".into(),
                name,
                target,
                repositories,
                tags,
                prefix,
                deletes,
                username,
                password,
            })
        }
        ReplicationAction::Remove { name } => Some(admin::ReplicationRequest {
            op: "remove".into(),
            name,
            ..Default::default()
        }),
        ReplicationAction::Resync { name } => Some(admin::ReplicationRequest {
            op: "resync".into(),
            name,
            ..Default::default()
        }),
    };
    let mut v = list_or_change(node, "/_stowage/replication", req).await?;
    if let Some(n) = only {
        if let Some(rules) = v["rules"].as_array_mut() {
            rules.retain(|r| r["rule"]["name"] == n.as_str());
        }
    }
    print_json(&v)
}

async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let req = match args.action {
        RetentionAction::List => None,
        RetentionAction::Set {
            repositories,
            keep_last,
            keep_within,
            keep_tags,
            untagged_after,
        } => Some(admin::RetentionRequest {
            op: "set".into(),
            repositories,
            keep_last,
            keep_within_secs: keep_within,
            keep_tags,
            untagged_after_secs: untagged_after,
        }),
        RetentionAction::Remove { repositories } => Some(admin::RetentionRequest {
            op: "remove".into(),
            repositories,
            keep_last: None,
            keep_within_secs: None,
            keep_tags: None,
            untagged_after_secs: None,
        }),
    };
    let v = list_or_change(node, "/_stowage/retention", req).await?;
    print_json(&v)
}

async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let req = match args.action {
        QuotaAction::List => None,
        QuotaAction::Set {
            namespace,
            max_bytes,
            max_repositories,
        } => Some(admin::QuotaRequest {
            op: "set".into(),
            namespace,
            max_bytes,
            max_repositories,
        }),
        QuotaAction::Remove { namespace } => Some(admin::QuotaRequest {
            op: "remove".into(),
            namespace,
            max_bytes: None,
            max_repositories: None,
        }),
    };
    let v = list_or_change(node, "/_stowage/quotas", req).await?;
    if node.json {
        return print_json(&v);
    }
    let quotas = v["quotas"].as_array().cloned().unwrap_or_default();
    if quotas.is_empty() {
        println!("no quotas");
        return Ok(());
    }
    println!(
        "{:<32}  {:>28}  {:>18}",
        "NAMESPACE", "BYTES USED / LIMIT", "REPOSITORIES"
    );
    for q in quotas {
        let limit = |k: &str| q["quota"][k].as_u64();
        let bytes = match limit("max_bytes") {
            Some(max) => format!(
                "{} / {}",
                crate::registry::human_bytes(q["bytes"].as_u64().unwrap_or(0))
                    .split(" (")
                    .next()
                    .unwrap_or(""),
                crate::registry::human_bytes(max)
                    .split(" (")
                    .next()
                    .unwrap_or("")
            ),
            None => format!("{} / -", q["bytes"].as_u64().unwrap_or(0)),
        };
        let repos = match limit("max_repositories") {
            Some(max) => format!("{} / {max}", q["repositories"].as_u64().unwrap_or(0)),
            None => format!("{} / -", q["repositories"].as_u64().unwrap_or(0)),
        };
        println!(
            "{:<32}  {:>28}  {:>18}",
            q["quota"]["namespace"].as_str().unwrap_or(""),
            bytes,
            repos
        );
    }
    Ok(())
}

async fn immutable(args: ImmutableArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let change = match args.action {
        ImmutableAction::List => None,
        ImmutableAction::Add { repositories, tags } => Some(("add", repositories, tags)),
        ImmutableAction::Remove { repositories, tags } => Some(("remove", repositories, tags)),
    };
    let change = change.map(|(op, repositories, tags)| admin::ImmutableRequest {
        op: op.into(),
        repositories,
        tags,
    });
    let v = list_or_change(node, "/_stowage/immutable", change).await?;
    if node.json {
        return print_json(&v);
    }
    let rules = v["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        println!("no immutable-tag rules");
    }
    for r in rules {
        println!(
            "tags {} in {}",
            r["tags"].as_str().unwrap_or("?"),
            r["repositories"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn expiry(days: Option<u64>) -> Option<u64> {
    days.map(|d| crate::registry::now_ms() + d * 86_400_000)
}

fn new_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    secret(file, "STOWAGE_NEW_PASSWORD", "new password: ", true)
}

/// Prints accounts one per line, or the JSON.
fn print_accounts(v: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    for a in v["accounts"].as_array().into_iter().flatten() {
        let expires = a["expires_ms"]
            .as_u64()
            .map_or("never".to_owned(), |ms| format!("{ms} (unix ms)"));
        println!("{}\texpires {expires}", a["name"].as_str().unwrap_or(""));
    }
    Ok(())
}

async fn user(args: UserArgs) -> anyhow::Result<()> {
    let node = &args.node;
    match args.action {
        UserAction::Add {
            name,
            new_password_file,
            expires_days,
        } => {
            let password = new_password(new_password_file.as_deref())?;
            let body = serde_json::json!({ "name": name, "password": password, "expires_ms": expiry(expires_days) });
            call(
                node,
                http::Method::POST,
                "/_stowage/users",
                Some(serde_json::to_vec(&body)?),
            )
            .await?;
            println!("added user {name}");
        }
        UserAction::Remove { name } => {
            call(
                node,
                http::Method::DELETE,
                &format!("/_stowage/users/{name}"),
                None,
            )
            .await?;
            println!("removed user {name}");
        }
        UserAction::List => {
            let v = call(node, http::Method::GET, "/_stowage/users", None).await?;
            print_accounts(&v, node.json)?;
        }
        UserAction::Passwd {
            name,
            new_password_file,
        } => {
            let password = new_password(new_password_file.as_deref())?;
            let body = serde_json::json!({ "password": password });
            call(
                node,
                http::Method::PUT,
                &format!("/_stowage/users/{name}"),
                Some(serde_json::to_vec(&body)?),
            )
            .await?;
            println!("changed the password of {name}");
        }
    }
    Ok(())
}

async fn robot(args: RobotArgs) -> anyhow::Result<()> {
    let node = &args.node;
    match args.action {
        RobotAction::Create { name, expires_days } => {
            let body = serde_json::json!({ "name": name, "expires_ms": expiry(expires_days) });
            let v = call(
                node,
                http::Method::POST,
                "/_stowage/robots",
                Some(serde_json::to_vec(&body)?),
            )
            .await?;
            if node.json {
                return print_json(&v);
            }
            eprintln!("robot {name} created; its token (shown only now):");
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        RobotAction::Revoke { name } => {
            call(
                node,
                http::Method::DELETE,
                &format!("/_stowage/robots/{name}"),
                None,
            )
            .await?;
            println!("revoked robot {name}");
        }
        RobotAction::List => {
            let v = call(node, http::Method::GET, "/_stowage/robots", None).await?;
            print_accounts(&v, node.json)?;
        }
    }
    Ok(())
}

/// A rules file: `[[rule]]` tables of pattern, subject and actions.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    pattern: String,
    subject: String,
    actions: Actions,
}

/// `actions = "pull,push"` or `actions = ["pull", "push"]`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Actions {
    One(String),
    Many(Vec<String>),
}

impl Actions {
    fn words(&self) -> Vec<String> {
        match self {
            Actions::One(s) => s
                .split(',')
                .map(|w| w.trim().to_owned())
                .filter(|w| !w.is_empty())
                .collect(),
            Actions::Many(v) => v.clone(),
        }
    }
}

/// Rules as (pattern, subject, action) triples, so two sets diff per right.
fn triples(rules: &serde_json::Value) -> std::collections::BTreeSet<(String, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for r in rules["rules"].as_array().into_iter().flatten() {
        for a in r["actions"].as_array().into_iter().flatten() {
            out.insert((
                r["pattern"].as_str().unwrap_or("").to_owned(),
                r["subject"].as_str().unwrap_or("").to_owned(),
                a.as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

async fn access(args: AccessArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let change = |op: &str, pattern: String, subject: String, actions: String| serde_json::json!({ "op": op, "pattern": pattern, "subject": subject, "actions": actions });
    let v = match args.action {
        AccessAction::Grant {
            pattern,
            subject,
            actions,
        } => {
            let body = change("grant", pattern, subject, actions);
            call(
                node,
                http::Method::POST,
                "/_stowage/access",
                Some(serde_json::to_vec(&body)?),
            )
            .await?
        }
        AccessAction::Revoke {
            pattern,
            subject,
            actions,
        } => {
            let body = change("revoke", pattern, subject, actions);
            call(
                node,
                http::Method::POST,
                "/_stowage/access",
                Some(serde_json::to_vec(&body)?),
            )
            .await?
        }
        AccessAction::List => call(node, http::Method::GET, "/_stowage/access", None).await?,
        AccessAction::RotateKey => {
            let v = call(node, http::Method::POST, "/_stowage/keys", None).await?;
            println!(
                "tokens are now signed with key {}",
                v["kid"].as_str().unwrap_or("?")
            );
            return Ok(());
        }
        AccessAction::Apply { file, dry_run } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed: RulesFile =
                toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
            let wanted: Vec<serde_json::Value> = parsed
                .rule
                .iter()
                .map(|r| serde_json::json!({ "pattern": r.pattern, "subject": r.subject, "actions": r.actions.words().join(",") }))
                .collect();
            let want_triples = triples(&serde_json::json!({
                "rules": parsed.rule.iter().map(|r| serde_json::json!({
                    "pattern": r.pattern, "subject": r.subject, "actions": r.actions.words()
                })).collect::<Vec<_>>()
            }));
            let current = call(node, http::Method::GET, "/_stowage/access", None).await?;
            let have = triples(&current);
            let mut changes = 0;
            for (p, s, a) in have.difference(&want_triples) {
                println!("- {a} on {p} for {s}");
                changes += 1;
            }
            for (p, s, a) in want_triples.difference(&have) {
                println!("+ {a} on {p} for {s}");
                changes += 1;
            }
            if changes == 0 {
                println!("the cluster's rules already match {}", file.display());
                return Ok(());
            }
            if dry_run {
                return Ok(());
            }
            let body = serde_json::json!({ "rules": wanted });
            call(
                node,
                http::Method::PUT,
                "/_stowage/access",
                Some(serde_json::to_vec(&body)?),
            )
            .await?;
            println!("applied {changes} change(s)");
            return Ok(());
        }
    };
    if node.json {
        return print_json(&v);
    }
    for r in v["rules"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = r["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        println!(
            "{}\t{}\t{}",
            r["pattern"].as_str().unwrap_or(""),
            r["subject"].as_str().unwrap_or(""),
            actions.join(",")
        );
    }
    Ok(())
}
