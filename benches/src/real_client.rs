//! The real-client workloads, `skopeo` and `docker`: the tools people push
//! and pull with, run as processes against the same targets as the other
//! workloads and timed as whole commands. Each round has a fresh image,
//! written by `real_image` before its clock starts, in a fresh repository.
//!
//! Pushes go to the first target, pulls come from the last (another node
//! in a cluster). A tool that does not answer skips its workload with one
//! `SKIPPED:` line on stderr and no result.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::real_image::{self, ImageSpec};
use crate::report::WorkloadResult;
use crate::rss;
use crate::stats::{nearest_rank, Tally};
use crate::workloads::{self, Config};

pub const DEFAULT_REAL_LAYERS: usize = 5;
/// The size of a mid-sized application image.
pub const DEFAULT_REAL_MIB: usize = 277;
pub const DEFAULT_ROUNDS: usize = 3;
/// A push or pull still running after this is killed and counts as an
/// error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `skopeo --version` and `docker version` answer within this or the tool
/// counts as absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// An untimed docker step (load, tag, rmi, login) still running after this
/// ends the workload.
const STEP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How much of a failed command's last stderr line an error quotes.
const STDERR_QUOTE_CHARS: usize = 300;
/// The tag of every round's image.
const TAG: &str = "real";

/// `--login` for the real clients, as they take it.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `USER:PASSWORD`, as skopeo's `--dest-creds` and `--src-creds` take it.
    fn joined(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Skopeo,
    Docker,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Skopeo => "skopeo",
            Tool::Docker => "docker",
        }
    }

    /// Keeps the two tools' images apart in the seed space.
    fn seed_index(self) -> u64 {
        match self {
            Tool::Skopeo => 1,
            Tool::Docker => 2,
        }
    }
}

/// The image of `tool`'s round `round`: `real_mib` MiB in `real_layers`
/// layers, every layer seeded on its own, so no round, tool or run shares
/// a blob with another.
fn image_spec(cfg: &Config, tool: Tool, round: usize) -> ImageSpec {
    let total_bytes = (cfg.real_mib.max(1) as u64) << 20;
    let seed_of = |layer: usize| {
        let index = (tool.seed_index() << 48) | ((round as u64) << 16) | layer as u64;
        cfg.seed(workloads::SEED_REAL, index)
    };
    let label = format!("{}-{:x}-{round}", tool.name(), cfg.run_id);
    ImageSpec::new(total_bytes, cfg.real_layers, seed_of, &label)
}

/// The repository of a round: new for every round of every run.
fn round_repo(cfg: &Config, tool: Tool, round: usize) -> String {
    format!("{}-{round}", cfg.repo(tool.name()))
}

/// `host:port` of a target (`http://host:port`, as the client checked).
fn host_of(target: &str) -> &str {
    target.strip_prefix("http://").unwrap_or(target)
}

/// Where pushes go and pulls come from: the first and the last target.
fn push_and_pull_hosts(targets: &[String]) -> Result<(String, String)> {
    match (targets.first(), targets.last()) {
        (Some(first), Some(last)) => Ok((host_of(first).to_owned(), host_of(last).to_owned())),
        _ => Err(Error::Usage("at least one --target is needed")),
    }
}

/// A temp dir under TMPDIR for one workload's images, removed on drop.
fn work_dir(tool: Tool) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("stowage-bench-{}.", tool.name()))
        .tempdir()
        .map_err(Error::io("create", "a temp dir under TMPDIR"))
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove", path.display().to_string())(e))
        }
        _ => Ok(()),
    }
}

fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(Error::io("remove", path.display().to_string()))
}

/// Writes everything back to disk, so that writing back the image just
/// generated (or loaded) does not overlap the timed push.
async fn sync_disks() -> Result<()> {
    Command::new("sync")
        .status()
        .await
        .map(|_| ())
        .map_err(Error::io("run", "sync"))
}

/// The last non-empty line of a command's stderr, shortened.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output on stderr)");
    line.chars().take(STDERR_QUOTE_CHARS).collect()
}

/// Runs `program args` to its end, stdout discarded, and returns how long
/// it took from spawn to exit. `what` names it in errors (never the
/// arguments, which may hold a password).
async fn run(
    what: &'static str,
    program: &str,
    args: &[String],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Duration> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(Error::io("start", what))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(Error::io("write to", what))?;
        // Closing it ends the input.
        drop(pipe);
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(Error::io("wait for", what))?,
        // Dropping the child kills it.
        Err(_) => {
            return Err(Error::CommandTimeout {
                command: what,
                timeout,
            })
        }
    };
    let took = started.elapsed();
    if output.status.success() {
        Ok(took)
    } else {
        Err(Error::Command {
            command: what,
            status: output.status,
            stderr_last_line: last_line(&output.stderr),
        })
    }
}

/// The first line of what `program args` prints when it succeeds; the
/// reason it did not, otherwise.
async fn probe(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROBE_TIMEOUT, output).await {
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(o)) if !o.status.success() => Err(last_line(&o.stderr)),
        Ok(Ok(o)) => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()),
    }
}

/// The round times and bytes of one half (push or pull) of a workload.
#[derive(Debug, Default)]
struct Rounds {
    tally: Tally,
    times: Vec<Duration>,
}

impl Rounds {
    /// A round that moved an image of `bytes` in the time `outcome` says,
    /// or failed.
    fn record(&mut self, outcome: Result<Duration>, bytes: u64) {
        match outcome {
            Ok(took) => {
                self.tally.requests += 1;
                self.tally.bytes += bytes;
                self.tally.operation(took);
                self.times.push(took);
            }
            Err(e) => self.tally.error(&e),
        }
    }

    /// The result: MB/s is an image's bytes over the median round time,
    /// p50 the median, p99 the nearest-rank 99th percentile of the rounds
    /// (the slowest, with fewer than 100).
    fn result(mut self, name: &str, targets: &[String]) -> WorkloadResult {
        self.times.sort();
        let total: Duration = self.times.iter().sum();
        let mut result = WorkloadResult::new(name, targets, &self.tally, total, "round");
        let rounds = self.times.len() as u64;
        let (Some(median), Some(image_bytes)) =
            (median(&self.times), self.tally.bytes.checked_div(rounds))
        else {
            result.mb_per_s = 0.0;
            return result;
        };
        let p99 = self.times[usize::try_from(nearest_rank(99.0, rounds) - 1).unwrap_or(0)];
        result.mb_per_s = image_bytes as f64 / median.as_secs_f64().max(1e-9) / 1e6;
        result.p50_ms = median.as_secs_f64() * 1e3;
        result.p99_ms = p99.as_secs_f64() * 1e3;
        result
            .extra
            .insert("median_secs".into(), median.as_secs_f64());
        result
    }
}

/// The median of sorted times (the mean of the middle two of an even
/// count).
fn median(sorted: &[Duration]) -> Option<Duration> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// skopeo's global flags: no signature policy file is needed or consulted
/// (nothing here is signed, and a machine without
/// `/etc/containers/policy.json` still runs the workload).
fn skopeo_copy() -> Vec<String> {
    vec!["--insecure-policy".into(), "copy".into()]
}

/// `skopeo`: `rounds` pushes of a fresh image from an OCI layout to the
/// first target, then pulls of each into a fresh `dir:` from the last.
pub async fn skopeo(cfg: &Config, targets: &[String]) -> Result<Vec<WorkloadResult>> {
    let tool = Tool::Skopeo;
    let Ok(version) = probe("skopeo", &["--version"]).await else {
        eprintln!("SKIPPED: skopeo not installed");
        return Ok(Vec::new());
    };
    let (push_host, pull_host) = push_and_pull_hosts(targets)?;
    let work = work_dir(tool)?;
    let mut pushed = Vec::new();
    let mut push = Rounds::default();
    let monitor = rss::Monitor::start(&cfg.rss_pids);
    for round in 0..cfg.rounds.max(1) {
        let layout = work.path().join(format!("oci-{round}"));
        let image = real_image::write_oci_layout(&layout, &image_spec(cfg, tool, round), TAG)?;
        let repo = round_repo(cfg, tool, round);
        let mut args = skopeo_copy();
        // The blobs go as they are: without this skopeo gzips uncompressed
        // layers on the way, and the push would time the client's
        // compression of incompressible bytes instead of the registry.
        args.push("--preserve-digests".into());
        args.push("--dest-tls-verify=false".into());
        if let Some(login) = &cfg.login {
            args.extend(["--dest-creds".into(), login.joined()]);
        }
        args.push(format!("oci:{}", layout.display()));
        args.push(format!("docker://{push_host}/{repo}:{TAG}"));
        sync_disks().await?;
        let outcome = run("skopeo copy (push)", "skopeo", &args, None, COMMAND_TIMEOUT).await;
        push.record(outcome, image.bytes());
        remove_dir(&layout)?;
        pushed.push((repo, image.bytes()));
    }
    let mut push = push
        .result("skopeo-push", targets)
        .with_rss(&monitor.finish());

    let mut pull = Rounds::default();
    let monitor = rss::Monitor::start(&cfg.rss_pids);
    for (round, (repo, bytes)) in pushed.iter().enumerate() {
        let out = work.path().join(format!("pull-{round}"));
        let mut args = skopeo_copy();
        args.push("--src-tls-verify=false".into());
        if let Some(login) = &cfg.login {
            args.extend(["--src-creds".into(), login.joined()]);
        }
        args.push(format!("docker://{pull_host}/{repo}:{TAG}"));
        args.push(format!("dir:{}", out.display()));
        if cfg.drop_caches {
            workloads::drop_page_cache()?;
            // The tool's own binary back in the cache: only the registry
            // reads cold.
            let _ = probe("skopeo", &["--version"]).await;
        }
        let outcome = run("skopeo copy (pull)", "skopeo", &args, None, COMMAND_TIMEOUT).await;
        pull.record(outcome, *bytes);
        remove_dir(&out)?;
    }
    let mut pull = pull
        .result("skopeo-pull", targets)
        .with_rss(&monitor.finish());
    let version = version.rsplit(' ').next().unwrap_or("").to_owned();
    for r in [&mut push, &mut pull] {
        r.notes.insert("skopeo".into(), version.clone());
    }
    Ok(vec![push, pull])
}

/// The docker CLI, with its own config directory when it logs in (so the
/// user's `~/.docker/config.json` never gets this run's credentials).
#[derive(Debug, Clone)]
struct Docker {
    config_dir: Option<PathBuf>,
}

impl Docker {
    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = Vec::new();
        if let Some(dir) = &self.config_dir {
            all.extend(["--config".to_owned(), dir.display().to_string()]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// A timed command (push, pull).
    async fn timed(&self, what: &'static str, args: &[&str]) -> Result<Duration> {
        run(what, "docker", &self.args(args), None, COMMAND_TIMEOUT).await
    }

    /// An untimed step the workload cannot go on without (load, tag, rmi,
    /// login): its failure ends the workload.
    async fn step(&self, what: &'static str, args: &[&str], stdin: Option<&str>) -> Result<()> {
        run(what, "docker", &self.args(args), stdin, STEP_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| Error::Setup(Box::new(e)))
    }

    /// Whether the engine still has the image `id`.
    async fn has_image(&self, id: &str) -> bool {
        let args = self.args(&["image", "inspect", "--format", "{{.Id}}", id]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        probe("docker", &args).await.is_ok()
    }
}

/// The images this workload gave the engine, removed (with every tag) when
/// it ends, however it ends.
struct EngineImages {
    docker: Docker,
    ids: Vec<String>,
}

impl Drop for EngineImages {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut args = vec!["rmi", "-f"];
        args.extend(self.ids.iter().map(String::as_str));
        // Most are gone already; the engine's complaints about those do
        // not matter.
        let _ = std::process::Command::new("docker")
            .args(self.docker.args(&args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `docker`: `rounds` times, `docker load` of a fresh image (a
/// docker-archive), `docker tag` for the first target and a timed `docker
/// push`, then every tag removed; then a timed `docker pull` of each from
/// the last target, removed again after.
pub async fn docker(cfg: &Config, targets: &[String]) -> Result<Vec<WorkloadResult>> {
    let tool = Tool::Docker;
    let version = match probe("docker", &["version", "--format", "{{.Server.Version}}"]).await {
        Ok(v) => v,
        Err(why) => {
            eprintln!("SKIPPED: docker: no engine (docker version: {why})");
            return Ok(Vec::new());
        }
    };
    let (push_host, pull_host) = push_and_pull_hosts(targets)?;
    let work = work_dir(tool)?;
    let docker = Docker {
        config_dir: cfg
            .login
            .as_ref()
            .map(|_| work.path().join("docker-config")),
    };
    if let Some(login) = &cfg.login {
        let mut hosts = vec![push_host.as_str(), pull_host.as_str()];
        hosts.dedup();
        for host in hosts {
            let args = ["login", "--username", &login.user, "--password-stdin", host];
            docker
                .step("docker login", &args, Some(&login.password))
                .await?;
        }
    }
    // Declared after `work`, so dropped before it (while the config is there).
    let mut images = EngineImages {
        docker: docker.clone(),
        ids: Vec::new(),
    };
    let mut pushed = Vec::new();
    let mut push = Rounds::default();
    let monitor = rss::Monitor::start(&cfg.rss_pids);
    for round in 0..cfg.rounds.max(1) {
        let repo = round_repo(cfg, tool, round);
        let local = format!("stowage-bench-local/{repo}:{TAG}");
        let archive = work.path().join(format!("image-{round}.tar"));
        let image =
            real_image::write_docker_archive(&archive, &image_spec(cfg, tool, round), &local)?;
        let id = image.docker_id().to_owned();
        images.ids.push(id.clone());
        let archive_path = archive.display().to_string();
        docker
            .step("docker load", &["load", "--input", &archive_path], None)
            .await?;
        remove_file(&archive)?;
        let push_ref = format!("{push_host}/{repo}:{TAG}");
        docker
            .step("docker tag", &["tag", &local, &push_ref], None)
            .await?;
        sync_disks().await?;
        let outcome = docker.timed("docker push", &["push", &push_ref]).await;
        push.record(outcome, image.bytes());
        // Every tag, so the engine drops the image and its layers and the
        // pull has to download all of it.
        docker
            .step("docker rmi", &["rmi", &local, &push_ref], None)
            .await?;
        if docker.has_image(&id).await {
            return Err(Error::ImageStillPresent { id });
        }
        pushed.push((repo, image.bytes()));
    }
    let mut push = push
        .result("docker-push", targets)
        .with_rss(&monitor.finish());

    let mut pull = Rounds::default();
    let monitor = rss::Monitor::start(&cfg.rss_pids);
    for (repo, bytes) in &pushed {
        let pull_ref = format!("{pull_host}/{repo}:{TAG}");
        if cfg.drop_caches {
            workloads::drop_page_cache()?;
            // The CLI back in the cache, as for skopeo (the image is not
            // there yet: this finds nothing).
            let _ = docker.has_image(&pull_ref).await;
        }
        let outcome = docker.timed("docker pull", &["pull", &pull_ref]).await;
        let pulled = outcome.is_ok();
        pull.record(outcome, *bytes);
        if pulled {
            docker.step("docker rmi", &["rmi", &pull_ref], None).await?;
        }
    }
    let mut pull = pull
        .result("docker-pull", targets)
        .with_rss(&monitor.finish());
    for r in [&mut push, &mut pull] {
        r.notes.insert("docker_engine".into(), version.clone());
    }
    drop(images);
    Ok(vec![push, pull])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rounds_give_median_throughput_and_slowest_round() {
        let mut rounds = Rounds::default();
        rounds.record(Ok(ms(2000)), 100_000_000);
        rounds.record(Ok(ms(1000)), 100_000_000);
        rounds.record(Ok(ms(4000)), 100_000_000);
        rounds.record(Err(Error::Usage("a failed round")), 100_000_000);
        let r = rounds.result("skopeo-push", &["http://x".to_owned()]);
        // 100 MB over the median round, 2 s.
        assert!((r.mb_per_s - 50.0).abs() < 1e-9, "{}", r.mb_per_s);
        assert!((r.p50_ms - 2000.0).abs() < 1e-9);
        assert!((r.p99_ms - 4000.0).abs() < 1e-9);
        assert_eq!(r.extra["median_secs"], 2.0);
        assert_eq!(r.requests, 3);
        assert_eq!(r.errors, 1);
        assert_eq!(r.latency_of, "round");
        assert_eq!(
            r.first_error.as_deref(),
            Some("invalid argument: a failed round")
        );

        let none = Rounds::default().result("docker-pull", &[]);
        assert_eq!(none.mb_per_s, 0.0);
        assert_eq!(none.requests, 0);
        assert_eq!(median(&[ms(1), ms(3)]), Some(ms(2)));
    }

    #[test]
    fn failed_commands_quote_their_last_stderr_line() {
        assert_eq!(last_line(b"one\ntwo \n\n"), "two");
        assert_eq!(last_line(b""), "(no output on stderr)");
        assert_eq!(
            last_line("x".repeat(1000).as_bytes()).len(),
            STDERR_QUOTE_CHARS
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let args = [
            "-c".to_owned(),
            "echo first >&2; echo last words >&2; exit 3".to_owned(),
        ];
        let e = rt
            .block_on(run("sh -c", "sh", &args, None, COMMAND_TIMEOUT))
            .unwrap_err();
        assert_eq!(e.to_string(), "sh -c: exit status: 3: last words");
        let args = ["-c".to_owned(), "read x; test \"$x\" = secret".to_owned()];
        assert!(rt
            .block_on(run("sh -c", "sh", &args, Some("secret\n"), COMMAND_TIMEOUT))
            .is_ok());
        let args = ["-c".to_owned(), "sleep 5".to_owned()];
        let e = rt
            .block_on(run("sleep", "sh", &args, None, ms(100)))
            .unwrap_err();
        assert!(matches!(e, Error::CommandTimeout { .. }), "{e}");
        assert!(rt
            .block_on(probe("no-such-tool-here", &["--version"]))
            .is_err());
    }

    fn config(run_id: u64) -> Config {
        Config {
            blobs: 1,
            blob_mib: 1,
            patch_mib: 1,
            clients: 1,
            images_per_client: 1,
            duration: Duration::ZERO,
            manifest_duration: Duration::ZERO,
            repo_prefix: "bench".into(),
            rss_pids: Vec::new(),
            run_id,
            drop_caches: false,
            real_layers: 5,
            real_mib: 277,
            rounds: 3,
            login: None,
        }
    }

    #[test]
    fn every_round_has_its_own_image_and_repository() {
        let (a, b) = (config(0xabc), config(0xdef));
        let mut seeds = std::collections::HashSet::new();
        let mut repos = std::collections::HashSet::new();
        for cfg in [&a, &b] {
            for tool in [Tool::Skopeo, Tool::Docker] {
                for round in 0..3 {
                    let spec = image_spec(cfg, tool, round);
                    assert_eq!(spec.layers.len(), 5);
                    let bytes: u64 = spec.layers.iter().map(|l| l.content_bytes).sum();
                    assert_eq!(bytes, 277 << 20);
                    for layer in &spec.layers {
                        assert!(seeds.insert(layer.seed), "a seed repeats");
                    }
                    assert!(repos.insert(round_repo(cfg, tool, round)));
                }
            }
        }
        assert_eq!(round_repo(&a, Tool::Skopeo, 2), "bench/skopeo-abc-2");
        assert_eq!(round_repo(&a, Tool::Docker, 0), "bench/docker-abc-0");
    }

    #[test]
    fn hosts_are_first_and_last_targets() {
        let targets = [
            "http://a:1".to_owned(),
            "http://b:2".to_owned(),
            "http://c:3".to_owned(),
        ];
        assert_eq!(
            push_and_pull_hosts(&targets).unwrap(),
            ("a:1".to_owned(), "c:3".to_owned())
        );
        assert!(push_and_pull_hosts(&[]).is_err());
        let creds = Credentials {
            user: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(creds.joined(), "u:p:w");
        assert!(!format!("{creds:?}").contains("p:w"));
    }
}
