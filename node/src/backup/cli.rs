//! `stowage backup ...` and `stowage restore ...`. `create` asks a node
//! (it reads the live state and chunks); `list`, `verify`, `prune` and
//! `restore` read the repository directly and need no node at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use stowage_storage::types::{ChunkId, NodeId, RepoName, Zone};

use super::archive;
use super::repo::{Key, Repo};
use super::restore::{self, parse_time, rfc3339, Target};
use super::{read_state, snapshots, state_chunks, JobStatus, SnapshotInfo};
use crate::cli::{call, NodeArg};
use crate::registry::now_ms;

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: BackupAction,
}

/// The repository and its key, for commands that read it directly.
#[derive(Debug, Args)]
pub struct RepoArg {
    /// The repository: a directory, file:///DIR or s3://BUCKET[/PREFIX]
    /// (S3 settings from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP).
    #[arg(long, value_name = "REPO", env = "STOWAGE_BACKUP_REPO")]
    pub repo: String,
    /// The repository's key file, if it is encrypted.
    #[arg(long, value_name = "FILE", env = "STOWAGE_BACKUP_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl RepoArg {
    async fn open(&self) -> anyhow::Result<Repo> {
        let key = self.key_file.as_deref().map(Key::from_file).transpose()?;
        Ok(Repo::open(&self.repo, key.as_ref()).await?)
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Take a snapshot now, through any node (a follower is fine): the
    /// state at one log index and every chunk it needs that the repository
    /// lacks. Makes the repository if there is none.
    Create {
        /// The repository [default: the node's backup_repo].
        #[arg(long, value_name = "REPO")]
        to: Option<String>,
        /// Encrypt with this key file (a new repository) or open with it
        /// [default: the node's backup_key_file].
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArg,
    },
    /// The node's running or last backup.
    Status {
        #[command(flatten)]
        node: NodeArg,
    },
    /// The snapshots in a repository: id, time, log index, size, new bytes.
    List {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Check a repository: every snapshot's state against its checksum,
    /// every chunk it needs present, and with --read-data every chunk's
    /// bytes against its hash.
    Verify {
        #[command(flatten)]
        repo: RepoArg,
        /// Read and hash every chunk.
        #[arg(long)]
        read_data: bool,
        /// Read and hash this share of the chunks, chosen at random (e.g. 10%).
        #[arg(long, value_name = "PERCENT", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
    },
    /// Forget snapshots outside the policy, then remove the chunks and
    /// archive segments no kept snapshot needs.
    Prune {
        #[command(flatten)]
        repo: RepoArg,
        /// Keep the N newest snapshots.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: usize,
        /// Keep the newest snapshot of each of the last D days that have one.
        #[arg(long, value_name = "D", default_value_t = 0)]
        keep_daily: usize,
        /// Keep the newest snapshot of each of the last W weeks that have one.
        #[arg(long, value_name = "W", default_value_t = 0)]
        keep_weekly: usize,
        /// Chunks written less than this long ago stay even if unneeded: a
        /// backup or the archive may be about to record them.
        #[arg(long, value_name = "SECS", default_value_t = 900)]
        grace_secs: u64,
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a new random key file (64 hex digits, mode 0600).
    Keygen {
        /// Where to write it (must not exist).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["snapshot", "at", "latest"])))]
#[command(group(clap::ArgGroup::new("dest").required(true).args(["data_dir", "repository"])))]
pub struct RestoreArgs {
    /// The backup repository.
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// The repository's key file, if it is encrypted.
    #[arg(long, value_name = "FILE", env = "STOWAGE_BACKUP_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// A snapshot id (or a prefix of one).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// The state at this moment (RFC 3339): the newest snapshot at or
    /// before it, rolled forward by the continuous archive.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The newest snapshot.
    #[arg(long)]
    pub latest: bool,
    /// Build this new data directory: the first node of a new cluster.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The restored node's id [default: 1].
    #[arg(long, value_name = "N", default_value_t = 1, requires = "data_dir")]
    pub node_id: u64,
    /// Its zone [default: default].
    #[arg(long, value_name = "ZONE", requires = "data_dir")]
    pub zone: Option<Zone>,
    /// Where its cluster RPC will be reached (its --cluster-listen or
    /// cluster_advertise); needed if other nodes will join it.
    #[arg(long, value_name = "ADDR", requires = "data_dir")]
    pub cluster_advertise: Option<String>,
    /// Put this one repository back into a running cluster (--into).
    #[arg(long, value_name = "NAME", requires = "into")]
    pub repository: Option<String>,
    /// ... under this name [default: its own].
    #[arg(long = "as", value_name = "NAME", requires = "repository")]
    pub as_name: Option<String>,
    /// The node (or any OCI registry) to put it into.
    #[arg(long, value_name = "URL", requires = "repository")]
    pub into: Option<String>,
    /// The account to push as.
    #[arg(long, env = "STOWAGE_USER")]
    pub user: Option<String>,
    /// A file holding its password (else $STOWAGE_PASSWORD, else a prompt).
    #[arg(long, value_name = "FILE", env = "STOWAGE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The CA an https:// target's certificate is checked against.
    #[arg(long, value_name = "FILE", env = "STOWAGE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn bar(json: bool, len: u64, bytes: bool) -> ProgressBar {
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    let template = if bytes {
        "{msg:10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:10} [{bar:40}] {pos}/{len} eta {eta}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

fn encryption_line(repo: &Repo) -> String {
    if repo.encrypted() {
        format!(
            "repository {} ({}): encrypted\n",
            repo.location, repo.config.id
        )
    } else {
        format!(
            "repository {} ({}): NOT ENCRYPTED: anyone who can read it can read every image \
             and setting in it (make one with --key-file to encrypt)\n",
            repo.location, repo.config.id
        )
    }
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    match args.action {
        BackupAction::Create { to, key_file, node } => create(to, key_file, &node).await,
        BackupAction::Status { node } => {
            let v = call(&node, http::Method::GET, "/_stowage/backup", None).await?;
            println!("{}", serde_json::to_string_pretty(&v["job"])?);
            Ok(())
        }
        BackupAction::List { repo } => list(&repo).await,
        BackupAction::Verify {
            repo,
            read_data,
            read_data_subset,
        } => {
            let share = match (read_data, read_data_subset) {
                (true, _) => 1.0,
                (false, Some(p)) => parse_share(&p)?,
                (false, None) => 0.0,
            };
            verify(&repo, share).await
        }
        BackupAction::Prune {
            repo,
            keep_last,
            keep_daily,
            keep_weekly,
            grace_secs,
            dry_run,
        } => {
            let policy = Keep {
                last: keep_last,
                daily: keep_daily,
                weekly: keep_weekly,
            };
            prune(&repo, &policy, grace_secs, dry_run).await
        }
        BackupAction::Keygen { file } => {
            use std::io::Write;
            let key = Key::generate()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            writeln!(f, "{}", key.to_hex())?;
            f.sync_all()?;
            println!(
                "wrote a new key to {} (keep a copy elsewhere: without it the backups cannot be read)",
                file.display()
            );
            Ok(())
        }
    }
}

/// Whether a request to `url` stays private: HTTPS, or plain HTTP to
/// this machine.
fn sends_privately(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.starts_with("https://");
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

fn parse_share(text: &str) -> anyhow::Result<f64> {
    let n: f64 = text
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("--read-data-subset {text:?}: a percentage such as 10%"))?;
    if !(0.0..=100.0).contains(&n) {
        bail!("--read-data-subset {text:?}: between 0% and 100%");
    }
    Ok(n / 100.0)
}

async fn create(
    to: Option<String>,
    key_file: Option<PathBuf>,
    node: &NodeArg,
) -> anyhow::Result<()> {
    let key = key_file.as_deref().map(Key::from_file).transpose()?;
    if key.is_some() && !sends_privately(&node.node) {
        bail!(
            "--key-file would send the key to {} over plain HTTP: use https:// (or give the node \
             its own backup_key_file and leave --key-file out)",
            node.node
        );
    }
    // A relative directory means one under the caller's directory (the
    // node, usually on the same machine, has its own working directory).
    let to = to.map(|t| match std::path::Path::new(&t) {
        p if !t.contains("://") && p.is_relative() => std::env::current_dir()
            .map(|d| d.join(p).display().to_string())
            .unwrap_or(t),
        _ => t,
    });
    let req = crate::admin::BackupRequest {
        repo: to,
        key: key.map(|k| k.to_hex()),
    };
    let v = call(
        node,
        http::Method::POST,
        "/_stowage/backup",
        Some(serde_json::to_vec(&req)?),
    )
    .await?;
    let started: JobStatus = serde_json::from_value(v["job"].clone())?;
    let pb = bar(node.json, 0, false);
    pb.set_message("state");
    let last = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = call(node, http::Method::GET, "/_stowage/backup", None).await?;
        let Ok(s) = serde_json::from_value::<JobStatus>(v["job"].clone()) else {
            continue;
        };
        if s.started_ms != started.started_ms {
            bail!("the node's backup job was replaced (did the node restart?)");
        }
        pb.set_length(s.chunks_total);
        pb.set_position(s.chunks_done);
        pb.set_message(s.phase.clone());
        if s.state != "running" {
            break s;
        }
    };
    pb.finish_and_clear();
    if let Some(e) = &last.error {
        bail!("backup failed: {e}");
    }
    print(node.json, &last, || match &last.snapshot {
        Some(s) => format!(
            "snapshot {} of {} at log index {}: {} chunks, {} new ({} bytes written)\n",
            s.id, last.repo, s.log_index, s.chunks, s.new_chunks, s.new_bytes
        ),
        None => "done\n".into(),
    })
}

#[derive(Serialize)]
struct Listing {
    repository: String,
    encrypted: bool,
    snapshots: Vec<SnapshotInfo>,
    archive_entries: u64,
    archive_last_index: Option<u64>,
}

async fn list(arg: &RepoArg) -> anyhow::Result<()> {
    let repo = arg.open().await?;
    let snaps = snapshots(&repo).await?;
    let segs = archive::segments(&repo, None).await?;
    let listing = Listing {
        repository: repo.location.clone(),
        encrypted: repo.encrypted(),
        archive_entries: segs.iter().map(|(a, b, _)| b - a + 1).sum(),
        archive_last_index: segs.last().map(|s| s.1),
        snapshots: snaps,
    };
    if !arg.json && !repo.encrypted() {
        eprint!("{}", encryption_line(&repo));
    }
    print(arg.json, &listing, || {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<16}  {:<24}  {:>9}  {:>7}  {:>12}  {:>12}\n",
            "ID", "TIME", "LOG INDEX", "CHUNKS", "SIZE", "NEW BYTES"
        ));
        for s in &listing.snapshots {
            out.push_str(&format!(
                "{:<16}  {:<24}  {:>9}  {:>7}  {:>12}  {:>12}\n",
                s.id,
                rfc3339(s.time_ms),
                s.log_index,
                s.chunks,
                s.chunk_bytes,
                s.new_bytes
            ));
        }
        if let Some(last) = listing.archive_last_index {
            out.push_str(&format!(
                "archive: {} entries, through log index {last}\n",
                listing.archive_entries
            ));
        }
        out
    })
}

#[derive(Serialize, Default)]
struct VerifyReport {
    repository: String,
    encrypted: bool,
    snapshots: usize,
    archive_segments: usize,
    chunks_needed: usize,
    chunks_read: usize,
    /// Problems: each names the object and what is wrong.
    problems: Vec<String>,
}

async fn verify(arg: &RepoArg, share: f64) -> anyhow::Result<()> {
    let repo = arg.open().await?;
    if !arg.json {
        eprint!("{}", encryption_line(&repo));
    }
    let mut report = VerifyReport {
        repository: repo.location.clone(),
        encrypted: repo.encrypted(),
        ..Default::default()
    };
    // chunk -> who needs it, for the report.
    let mut needed: BTreeMap<ChunkId, String> = BTreeMap::new();
    let snaps = match snapshots(&repo).await {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(e.to_string());
            Vec::new()
        }
    };
    report.snapshots = snaps.len();
    for s in &snaps {
        match read_state(&repo, s)
            .await
            .and_then(|st| state_chunks(&repo, &st))
        {
            Ok(chunks) => {
                for c in chunks {
                    needed
                        .entry(c.id)
                        .or_insert_with(|| format!("snapshot {}", s.id));
                }
            }
            Err(e) => report.problems.push(format!("snapshot {}: {e}", s.id)),
        }
    }
    let segs = archive::segments(&repo, None).await?;
    report.archive_segments = segs.len();
    for (_, _, path) in &segs {
        match archive::read_segment(&repo, path).await {
            Ok(entries) => {
                for e in entries {
                    for id in e
                        .command
                        .as_ref()
                        .map(archive::command_chunks)
                        .unwrap_or_default()
                    {
                        needed
                            .entry(id)
                            .or_insert_with(|| format!("archived entry {}", e.log_id.index));
                    }
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    report.chunks_needed = needed.len();
    let present = repo.chunk_paths().await?;
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let mut to_read = Vec::new();
    for (id, who) in &needed {
        if !present.contains(&repo.chunk_path(id)) {
            report
                .problems
                .push(format!("chunk {id} is missing (needed by {who})"));
        } else if chosen(&salt, id, share) {
            to_read.push((*id, who.clone()));
        }
    }
    let pb = bar(arg.json, to_read.len() as u64, false);
    pb.set_message("reading");
    for (id, who) in &to_read {
        if let Err(e) = repo.get_chunk(id).await {
            report
                .problems
                .push(format!("chunk {id} (needed by {who}): {e}"));
        }
        report.chunks_read += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    print(arg.json, &report, || {
        let mut out = format!(
            "{} snapshots, {} archive segments, {} chunks needed, {} read and hashed\n",
            report.snapshots, report.archive_segments, report.chunks_needed, report.chunks_read
        );
        for p in &report.problems {
            out.push_str(&format!("PROBLEM: {p}\n"));
        }
        if report.problems.is_empty() {
            out.push_str("no problems found\n");
        }
        out
    })?;
    if !report.problems.is_empty() {
        bail!("{} problems in {}", report.problems.len(), repo.location);
    }
    Ok(())
}

/// A random share of chunks (the salt is new per run).
fn chosen(salt: &[u8; 32], id: &ChunkId, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let h = blake3::keyed_hash(salt, id.as_bytes());
    let x = u32::from_le_bytes([
        h.as_bytes()[0],
        h.as_bytes()[1],
        h.as_bytes()[2],
        h.as_bytes()[3],
    ]);
    f64::from(x) < share * f64::from(u32::MAX)
}

/// Which snapshots prune keeps (restic's `--keep-*`).
pub struct Keep {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
}

impl Keep {
    /// The ids kept out of `snaps` (oldest first).
    pub fn apply(&self, snaps: &[SnapshotInfo]) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        let newest_first: Vec<&SnapshotInfo> = snaps.iter().rev().collect();
        for s in newest_first.iter().take(self.last) {
            kept.insert(s.id.clone());
        }
        const DAY_MS: u64 = 24 * 3600 * 1000;
        // Unix day 0 was a Thursday; weeks here start on Monday.
        let buckets = |span: u64, offset: u64, n: usize, kept: &mut BTreeSet<String>| {
            let mut seen = HashSet::new();
            for s in &newest_first {
                if seen.len() == n {
                    break;
                }
                if seen.insert((s.time_ms + offset) / span) {
                    kept.insert(s.id.clone());
                }
            }
        };
        buckets(DAY_MS, 0, self.daily, &mut kept);
        buckets(7 * DAY_MS, 3 * DAY_MS, self.weekly, &mut kept);
        kept
    }
}

#[derive(Serialize, Default)]
struct PruneReport {
    kept: Vec<String>,
    forgotten: Vec<String>,
    chunks_removed: u64,
    bytes_removed: u64,
    archive_segments_removed: u64,
    dry_run: bool,
}

async fn prune(arg: &RepoArg, keep: &Keep, grace_secs: u64, dry_run: bool) -> anyhow::Result<()> {
    if keep.last + keep.daily + keep.weekly == 0 {
        bail!("say what to keep: --keep-last, --keep-daily and/or --keep-weekly (a prune keeping nothing would empty the repository)");
    }
    let repo = arg.open().await?;
    let now = now_ms();
    let lock = repo.lock(true, "prune").await?;
    let result = prune_locked(&repo, keep, grace_secs, dry_run, now, arg.json).await;
    repo.unlock(&lock).await;
    result
}

async fn prune_locked(
    repo: &Repo,
    keep: &Keep,
    grace_secs: u64,
    dry_run: bool,
    now: u64,
    json: bool,
) -> anyhow::Result<()> {
    let repo = repo.clone();
    let snaps = snapshots(&repo).await?;
    let kept_ids = keep.apply(&snaps);
    let (kept, gone): (Vec<_>, Vec<_>) = snaps.iter().partition(|s| kept_ids.contains(&s.id));
    let mut report = PruneReport {
        kept: kept.iter().map(|s| s.id.clone()).collect(),
        forgotten: gone.iter().map(|s| s.id.clone()).collect(),
        dry_run,
        ..Default::default()
    };
    // What the kept snapshots, and the archive after the oldest of them, need.
    let mut needed = HashSet::new();
    for s in &kept {
        let state = read_state(&repo, s).await?;
        for c in state_chunks(&repo, &state)? {
            needed.insert(repo.chunk_path(&c.id));
        }
    }
    // Per cluster (log indexes of different clusters are unrelated): the
    // archive before its oldest kept snapshot serves no restore.
    let mut oldest_kept: BTreeMap<String, u64> = BTreeMap::new();
    for s in &kept {
        let c = s.cluster_id.clone().unwrap_or_default();
        let e = oldest_kept.entry(c).or_insert(u64::MAX);
        *e = (*e).min(s.log_index);
    }
    let mut dead_segments = Vec::new();
    for (_, last, path) in archive::segments(&repo, None).await? {
        let cluster = path.split('/').nth(1).unwrap_or_default();
        if oldest_kept
            .get(cluster)
            .is_none_or(|oldest| last <= *oldest)
        {
            dead_segments.push(path);
            continue;
        }
        for e in archive::read_segment(&repo, &path).await? {
            for id in e
                .command
                .as_ref()
                .map(archive::command_chunks)
                .unwrap_or_default()
            {
                needed.insert(repo.chunk_path(&id));
            }
        }
    }
    if !dry_run {
        // Headers first: a snapshot without its header is not listed, so a
        // prune that stops halfway leaves only unlisted leftovers.
        for s in &gone {
            repo.delete(&s.path()).await?;
            repo.delete(&s.state_path()).await?;
        }
        for p in &dead_segments {
            repo.delete(p).await?;
        }
    }
    report.archive_segments_removed = dead_segments.len() as u64;
    let grace_ms = grace_secs.saturating_mul(1000);
    for (path, size, modified_ms) in repo.list_with_times("chunks").await? {
        if needed.contains(&path) || now.saturating_sub(modified_ms) < grace_ms {
            continue;
        }
        if !dry_run {
            repo.delete(&path).await?;
        }
        report.chunks_removed += 1;
        report.bytes_removed += size;
    }
    print(json, &report, || {
        format!(
            "{}kept {} snapshots, forgot {}; removed {} chunks ({} bytes) and {} archive segments\n",
            if dry_run { "(dry run) " } else { "" },
            report.kept.len(),
            report.forgotten.len(),
            report.chunks_removed,
            report.bytes_removed,
            report.archive_segments_removed
        )
    })
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let key = args.key_file.as_deref().map(Key::from_file).transpose()?;
    let repo = Repo::open(&args.from, key.as_ref()).await?;
    let target = match (&args.snapshot, &args.at, args.latest) {
        (Some(id), _, _) => Target::Snapshot(id.clone()),
        (_, Some(t), _) => Target::At(parse_time(t).map_err(anyhow::Error::msg)?),
        _ => Target::Latest,
    };
    if let Some(dir) = &args.data_dir {
        let node = restore::NewNode {
            id: NodeId(args.node_id),
            zone: args.zone.clone().unwrap_or_default(),
            rpc_addr: args.cluster_advertise.clone().unwrap_or_default(),
        };
        let pb = bar(args.json, 0, true);
        let done = restore::data_dir(&repo, &target, dir, node, &pb).await?;
        for r in &done.replication_rules_removed {
            eprintln!(
                "replication rule {r} was left out of the restored cluster: add it again \
                 with `stowage replication add` once the new cluster should push"
            );
        }
        return print(args.json, &done, || {
            format!(
                "restored snapshot {} (log index {}, {} archived entries after it) into {}: \
                 {} chunks, {} bytes\nstart it alone (no peers) with its own settings, \
                 `stowage serve --data-dir {} --node-id {} --zone {}` (with --cluster-listen for \
                 a cluster); it is a new cluster of one node: add the others one at a time with \
                 `stowage members add`, and give it its peers before it restarts\n",
                done.point.snapshot.id,
                done.point.log_index,
                done.point.rolled_forward,
                dir.display(),
                done.chunks,
                done.bytes,
                dir.display(),
                args.node_id,
                args.zone.clone().unwrap_or_default()
            )
        });
    }
    let (Some(name), Some(into)) = (&args.repository, &args.into) else {
        bail!("--repository NAME --into URL, or --data-dir DIR");
    };
    let name = RepoName::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let as_name = match &args.as_name {
        Some(n) => RepoName::parse(n).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => name.clone(),
    };
    let node = NodeArg {
        node: into.clone(),
        json: args.json,
        user: args.user.clone(),
        password_file: args.password_file.clone(),
        ca_file: args.ca_file.clone(),
    };
    let registry = crate::replication::client::Remote::with_authorization(
        into,
        node.authorization()?,
        crate::cli::http_client(args.ca_file.as_deref())?,
    );
    let pb = bar(args.json, 0, true);
    let done = restore::repository(&repo, &target, &name, &as_name, &registry, &pb).await?;
    print(args.json, &done, || {
        let mut out = format!(
            "put {} back into {} as of log index {}: {} manifests, tags {}; {} blobs uploaded ({} bytes), {} already there\n",
            done.repository,
            done.into,
            done.log_index,
            done.manifests,
            done.tags.join(", "),
            done.blobs_uploaded,
            done.bytes_uploaded,
            done.blobs_present
        );
        for r in &done.refused {
            out.push_str(&format!("REFUSED: {r}\n"));
        }
        out
    })?;
    if !done.refused.is_empty() {
        bail!("{} tags were refused", done.refused.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, time_ms: u64) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            cluster_id: None,
            node: 1,
            log_index: time_ms / 1000,
            term: 1,
            time_ms,
            state_bytes: 0,
            state_blake3: String::new(),
            chunks: 0,
            chunk_bytes: 0,
            new_chunks: 0,
            new_bytes: 0,
        }
    }

    #[test]
    fn keep_policies_pick_the_newest_of_each_bucket() {
        const H: u64 = 3600 * 1000;
        const D: u64 = 24 * H;
        // Monday 2026-11-30 00:00 UTC is day 20787.
        let monday = 20787 * D;
        let snaps = vec![
            snap("w1-mon", monday - 7 * D + H),
            snap("w1-fri", monday - 3 * D + H),
            snap("d1-a", monday + H),
            snap("d1-b", monday + 2 * H),
            snap("d2-a", monday + D + H),
            snap("d2-b", monday + D + 2 * H),
        ];
        let ids = |k: Keep| k.apply(&snaps).into_iter().collect::<Vec<_>>();
        assert_eq!(
            ids(Keep {
                last: 2,
                daily: 0,
                weekly: 0
            }),
            ["d2-a", "d2-b"]
        );
        assert_eq!(
            ids(Keep {
                last: 0,
                daily: 2,
                weekly: 0
            }),
            ["d1-b", "d2-b"]
        );
        assert_eq!(
            ids(Keep {
                last: 0,
                daily: 0,
                weekly: 2
            }),
            ["d2-b", "w1-fri"]
        );
        assert_eq!(
            ids(Keep {
                last: 1,
                daily: 3,
                weekly: 0
            }),
            ["d1-b", "d2-b", "w1-fri"]
        );
        assert!(ids(Keep {
            last: 0,
            daily: 0,
            weekly: 0
        })
        .is_empty());
    }

    #[test]
    fn a_subset_share_reads_about_that_share() {
        let salt = [7u8; 32];
        let n = (0..10_000u32)
            .filter(|i| chosen(&salt, &ChunkId::of(&i.to_le_bytes()), 0.1))
            .count();
        assert!((700..1300).contains(&n), "{n}");
        assert!(chosen(&salt, &ChunkId::of(b"x"), 1.0));
        assert!(!chosen(&salt, &ChunkId::of(b"x"), 0.0));
    }
}
