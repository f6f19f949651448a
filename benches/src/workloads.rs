//! The named workloads and what each one measures.
//!
//! - `push-large`: `blobs` blobs of `blob_mib` MiB pushed in one piece, then
//!   as many again in `PATCH`es of `patch_mib` MiB, one at a time, each
//!   followed by a config and a manifest; MB/s over the time spent pushing.
//!   Latencies are per large blob.
//! - `pull-large`: the same blobs pulled back (manifest by tag, config,
//!   layer), from another node than the one they were pushed to when there
//!   are several, each digest verified. Latencies are per large blob.
//! - `push-many`: `clients` concurrent clients, each pushing
//!   `images_per_client` small images (3 layers of 1–64 KiB, a config, a
//!   manifest with a tag) into its own repository.
//! - `manifest-get`: `clients` concurrent clients fetching the manifests of
//!   16 images, first by tag (`manifest-get-tag`), then by digest
//!   (`manifest-get-digest`), `manifest_secs` each.
//! - `mixed`: `clients` concurrent clients for `duration_secs`, each
//!   operation a pull of a random image (90 %) or a push of a new one
//!   (10 %); pulls go to random nodes, so often not the one that took the
//!   push.
//! - `skopeo`, `docker`: the real clients (`real_client`), `rounds` pushes
//!   of a fresh `real_mib` MiB image of `real_layers` layers each
//!   (`skopeo-push`, `docker-push`), then pulls of them (`skopeo-pull`,
//!   `docker-pull`), each command timed whole. Latencies are per round.
//!
//! Test data is generated, and its digests computed, before the clock
//! starts wherever the workload allows it; request latencies are per HTTP
//! request unless said otherwise. Repositories are named after the run
//! (`<prefix>/<workload>-<run id>`), so runs against the same registry
//! never find each other's blobs already present.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::client::Registry;
use crate::data::{self, Blob, BlobRef, Image, ImageRef};
use crate::error::{Error, Result};
use crate::real_client::{self, Credentials};
use crate::report::WorkloadResult;
use crate::rss;
use crate::stats::Tally;

pub const DEFAULT_BLOBS: usize = 4;
pub const DEFAULT_BLOB_MIB: usize = 256;
/// Each `PATCH` of a chunked push carries this much (a multiple of
/// Stowage's 4 MiB chunk, so chunk boundaries fall where they would in a
/// monolithic push).
pub const DEFAULT_PATCH_MIB: usize = 16;
pub const DEFAULT_CLIENTS: usize = 16;
pub const DEFAULT_IMAGES_PER_CLIENT: usize = 25;
pub const DEFAULT_DURATION_SECS: u64 = 30;
/// `manifest-get` runs this long per phase unless told otherwise (or less
/// when `duration_secs` is shorter).
pub const DEFAULT_MANIFEST_SECS: u64 = 10;
/// Images whose manifests `manifest-get` fetches.
pub const MANIFEST_GET_IMAGES: usize = 16;
/// Images pushed before `mixed` starts, so its first pulls find something.
pub const MIXED_SEED_IMAGES: usize = 32;
/// Share of `mixed` operations that are pushes, in percent.
pub const MIXED_PUSH_PERCENT: u64 = 10;
/// A client that hit an error waits this long before its next request, so
/// a dead target does not turn into a busy loop of failures.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    PushLarge,
    PullLarge,
    PushMany,
    ManifestGet,
    Mixed,
    Skopeo,
    Docker,
}

impl Workload {
    /// Every workload, in the order `all` runs them (pull-large reads what
    /// push-large wrote; the real clients come last).
    pub const ALL: [Workload; 7] = [
        Workload::PushLarge,
        Workload::PullLarge,
        Workload::PushMany,
        Workload::ManifestGet,
        Workload::Mixed,
        Workload::Skopeo,
        Workload::Docker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::PushLarge => "push-large",
            Workload::PullLarge => "pull-large",
            Workload::PushMany => "push-many",
            Workload::ManifestGet => "manifest-get",
            Workload::Mixed => "mixed",
            Workload::Skopeo => "skopeo",
            Workload::Docker => "docker",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--workload` value: one workload, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection(pub Vec<Workload>);

impl FromStr for Selection {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "all" {
            return Ok(Selection(Workload::ALL.to_vec()));
        }
        Workload::ALL
            .iter()
            .find(|w| w.name() == s)
            .map(|w| Selection(vec![*w]))
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?}; one of {}, all", names.join(", "))
            })
    }
}

/// The workloads of several `--workload` values, each once, in run order.
pub fn selected(selections: &[Selection]) -> Vec<Workload> {
    let mut all: Vec<Workload> = selections.iter().flat_map(|s| s.0.clone()).collect();
    all.sort();
    all.dedup();
    all
}

/// The sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub blobs: usize,
    pub blob_mib: usize,
    pub patch_mib: usize,
    pub clients: usize,
    pub images_per_client: usize,
    pub duration: Duration,
    pub manifest_duration: Duration,
    pub repo_prefix: String,
    pub rss_pids: Vec<u32>,
    /// Names this run's repositories and seeds its data.
    pub run_id: u64,
    /// Drop the page cache before pull-large and before every pull round
    /// of the real clients (see `--drop-caches`).
    pub drop_caches: bool,
    /// skopeo, docker: layers of each image, and their total size.
    pub real_layers: usize,
    pub real_mib: usize,
    /// skopeo, docker: push rounds (and as many pulls), a fresh image each.
    pub rounds: usize,
    /// skopeo, docker: what they log in with (the load generator's own
    /// client has its copy in `Registry`).
    pub login: Option<Credentials>,
}

impl Config {
    pub(crate) fn repo(&self, workload: &str) -> String {
        format!("{}/{workload}-{:x}", self.repo_prefix, self.run_id)
    }

    pub(crate) fn seed(&self, kind: u64, index: u64) -> u64 {
        data::mix(data::mix(self.run_id ^ data::mix(kind)).wrapping_add(index))
    }
}

/// The second pull-large pass, over whatever the first one left cached.
pub const PULL_LARGE_WARM: &str = "pull-large-warm";

/// Writes dirty pages back and drops the page cache, so the next reads come
/// from the registry's storage. Needs root.
pub(crate) fn drop_page_cache() -> Result<()> {
    let synced = std::process::Command::new("sync").status();
    let dropped = synced.is_ok_and(|s| s.success())
        && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    if dropped {
        Ok(())
    } else {
        Err(Error::Usage(
            "--drop-caches needs root (writes /proc/sys/vm/drop_caches)",
        ))
    }
}

/// Seed kinds, so that blobs of different workloads never coincide.
const SEED_LARGE: u64 = 1;
const SEED_MANY: u64 = 2;
const SEED_MANIFEST: u64 = 3;
const SEED_MIXED: u64 = 4;
pub(crate) const SEED_REAL: u64 = 5;

/// A large blob push-large left for pull-large.
#[derive(Debug, Clone)]
struct LargeBlob {
    tag: String,
    node: usize,
    config: BlobRef,
    layer: BlobRef,
    manifest: BlobRef,
}

#[derive(Debug, Clone)]
struct LargeSet {
    repo: String,
    blobs: Vec<LargeBlob>,
}

/// Runs workloads against one registry, keeping what one workload leaves
/// for the next (the large blobs).
pub struct Runner {
    reg: Registry,
    cfg: Config,
    large: Option<LargeSet>,
}

impl Runner {
    pub fn new(reg: Registry, cfg: Config) -> Self {
        Runner {
            reg,
            cfg,
            large: None,
        }
    }

    /// Runs one workload; most give one result, manifest-get gives two.
    pub async fn run(&mut self, workload: Workload) -> Result<Vec<WorkloadResult>> {
        let results = match workload {
            Workload::PushLarge => {
                let monitor = rss::Monitor::start(&self.cfg.rss_pids);
                let r = self.push_large().await;
                vec![r?.with_rss(&monitor.finish())]
            }
            Workload::PullLarge => {
                if self.large.is_none() {
                    // Nothing to pull yet: push the blobs, unmeasured.
                    self.push_large()
                        .await
                        .map_err(|e| Error::Setup(e.into()))?;
                }
                if self.cfg.drop_caches {
                    drop_page_cache()?;
                }
                let monitor = rss::Monitor::start(&self.cfg.rss_pids);
                let cold = self.pull_large(Workload::PullLarge.name()).await;
                let cold = cold?.with_rss(&monitor.finish());
                let monitor = rss::Monitor::start(&self.cfg.rss_pids);
                let warm = self.pull_large(PULL_LARGE_WARM).await;
                vec![cold, warm?.with_rss(&monitor.finish())]
            }
            Workload::PushMany => {
                let monitor = rss::Monitor::start(&self.cfg.rss_pids);
                let r = self.push_many().await;
                vec![r?.with_rss(&monitor.finish())]
            }
            Workload::ManifestGet => self.manifest_get().await?,
            Workload::Mixed => {
                let monitor = rss::Monitor::start(&self.cfg.rss_pids);
                let r = self.mixed().await;
                vec![r?.with_rss(&monitor.finish())]
            }
            // Each watches memory over its push rounds, then its pull rounds.
            Workload::Skopeo => real_client::skopeo(&self.cfg, self.reg.targets()).await?,
            Workload::Docker => real_client::docker(&self.cfg, self.reg.targets()).await?,
        };
        let pushes = matches!(
            workload,
            Workload::PushLarge | Workload::PushMany | Workload::Mixed
        );
        Ok(results
            .into_iter()
            .map(|mut r| {
                if pushes {
                    // Says how many requests a one-piece push took.
                    r.notes.insert(
                        "monolithic".to_owned(),
                        self.reg.monolithic().name().to_owned(),
                    );
                }
                r
            })
            .collect())
    }

    async fn push_large(&mut self) -> Result<WorkloadResult> {
        let cfg = &self.cfg;
        let reg = &self.reg;
        let repo = cfg.repo("large");
        let size_bytes = cfg.blob_mib.max(1) << 20;
        let patch_bytes = cfg.patch_mib.max(1) << 20;
        let mut tally = Tally::per_operation();
        // Time spent pushing (blobs, configs, manifests), not generating.
        let mut pushing = Duration::ZERO;
        let mut by_mode = [(Duration::ZERO, 0u64); 2];
        let mut pushed = Vec::new();
        for i in 0..2 * cfg.blobs {
            let chunked = i >= cfg.blobs;
            let node = i % reg.nodes();
            let index = i as u64;
            // Generated and hashed before the clock starts.
            let blob = Blob::new(data::random_bytes(cfg.seed(SEED_LARGE, index), size_bytes));
            let started = Instant::now();
            let result = if chunked {
                reg.push_blob_chunked(node, &repo, &blob, patch_bytes, &mut tally)
                    .await
            } else {
                reg.push_blob(node, &repo, &blob, &mut tally).await
            };
            let took = started.elapsed();
            pushing += took;
            if let Err(e) = result {
                tally.error(&e);
                continue;
            }
            tally.operation(took);
            let mode = &mut by_mode[usize::from(chunked)];
            mode.0 += took;
            mode.1 += blob.size();
            let layer = BlobRef::from(&blob);
            // Only one large blob is in memory at a time.
            drop(blob);

            let config = data::config_for(std::slice::from_ref(&layer), &format!("large-{i}"));
            let manifest =
                data::manifest_for(&BlobRef::from(&config), std::slice::from_ref(&layer));
            let tag = format!("large-{i}");
            let started = Instant::now();
            let result = async {
                reg.push_blob(node, &repo, &config, &mut tally).await?;
                reg.put_manifest(node, &repo, &tag, &manifest, &mut tally)
                    .await
            }
            .await;
            pushing += started.elapsed();
            match result {
                Ok(()) => pushed.push(LargeBlob {
                    tag,
                    node,
                    config: BlobRef::from(&config),
                    layer,
                    manifest: BlobRef::from(&manifest),
                }),
                Err(e) => tally.error(&e),
            }
        }
        self.large = Some(LargeSet {
            repo,
            blobs: pushed,
        });
        let mut result = WorkloadResult::new(
            Workload::PushLarge.name(),
            reg.targets(),
            &tally,
            pushing,
            "blob",
        );
        let [(mono_time, mono_bytes), (chunked_time, chunked_bytes)] = by_mode;
        result
            .extra
            .insert("mono_mb_per_s".into(), mb_per_s(mono_bytes, mono_time));
        result.extra.insert(
            "chunked_mb_per_s".into(),
            mb_per_s(chunked_bytes, chunked_time),
        );
        Ok(result)
    }

    async fn pull_large(&mut self, name: &str) -> Result<WorkloadResult> {
        let reg = &self.reg;
        let set = self
            .large
            .clone()
            .ok_or(Error::Usage("pull-large needs push-large's blobs"))?;
        let mut tally = Tally::per_operation();
        let started = Instant::now();
        for blob in &set.blobs {
            // Another node than the one that took the push, if there is one.
            let node = (blob.node + 1) % reg.nodes();
            let result = async {
                reg.get_manifest(node, &set.repo, &blob.tag, &blob.manifest, &mut tally)
                    .await?;
                reg.get_blob(node, &set.repo, &blob.config, &mut tally)
                    .await?;
                let layer_started = Instant::now();
                reg.get_blob(node, &set.repo, &blob.layer, &mut tally)
                    .await?;
                Ok::<_, Error>(layer_started.elapsed())
            }
            .await;
            match result {
                Ok(took) => tally.operation(took),
                Err(e) => tally.error(&e),
            }
        }
        Ok(WorkloadResult::new(
            name,
            reg.targets(),
            &tally,
            started.elapsed(),
            "blob",
        ))
    }

    async fn push_many(&mut self) -> Result<WorkloadResult> {
        let cfg = &self.cfg;
        let clients = cfg.clients.max(1);
        // Every image is built before any client starts.
        let work: Vec<(String, Vec<Image>)> = (0..clients)
            .map(|k| {
                let repo = format!("{}/c{k}", cfg.repo("many"));
                let images = (0..cfg.images_per_client)
                    .map(|j| Image::small(cfg.seed(SEED_MANY, ((k as u64) << 32) | j as u64)))
                    .collect();
                (repo, images)
            })
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .enumerate()
            .map(|(k, (repo, images))| {
                let reg = self.reg.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::per_request();
                    for (j, image) in images.iter().enumerate() {
                        let node = (k + j) % reg.nodes();
                        let tag = format!("v{j}");
                        if let Err(e) = reg.push_image(node, &repo, &tag, image, &mut tally).await {
                            tally.error(&e);
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    tally
                })
            })
            .collect();
        let tally = join_all(tasks).await?;
        let elapsed = started.elapsed();
        let images = ((clients * cfg.images_per_client) as u64).saturating_sub(tally.errors);
        let mut result = WorkloadResult::new(
            Workload::PushMany.name(),
            self.reg.targets(),
            &tally,
            elapsed,
            "request",
        );
        result.extra.insert(
            "images_per_s".into(),
            images as f64 / elapsed.as_secs_f64().max(1e-9),
        );
        Ok(result)
    }

    async fn manifest_get(&mut self) -> Result<Vec<WorkloadResult>> {
        let cfg = self.cfg.clone();
        let repo = cfg.repo("manifests");
        // Seeding is not measured (nor watched for memory).
        let mut seeded = Vec::new();
        let mut tally = Tally::default();
        for i in 0..MANIFEST_GET_IMAGES {
            let image = Image::small(cfg.seed(SEED_MANIFEST, i as u64));
            let tag = format!("t{i}");
            self.reg
                .push_image(i % self.reg.nodes(), &repo, &tag, &image, &mut tally)
                .await
                .map_err(|e| Error::Setup(e.into()))?;
            seeded.push((tag, BlobRef::from(&image.manifest)));
        }
        let seeded = Arc::new(seeded);
        let mut results = Vec::new();
        for by_tag in [true, false] {
            let monitor = rss::Monitor::start(&cfg.rss_pids);
            let deadline = Instant::now() + cfg.manifest_duration;
            let started = Instant::now();
            let tasks: Vec<_> = (0..cfg.clients.max(1))
                .map(|k| {
                    let reg = self.reg.clone();
                    let repo = repo.clone();
                    let seeded = seeded.clone();
                    tokio::spawn(async move {
                        let mut tally = Tally::per_request();
                        let mut i = k;
                        while Instant::now() < deadline {
                            let (tag, manifest) = &seeded[i % seeded.len()];
                            let reference = if by_tag { tag } else { &manifest.digest };
                            let node = (k + i) % reg.nodes();
                            if let Err(e) = reg
                                .get_manifest(node, &repo, reference, manifest, &mut tally)
                                .await
                            {
                                tally.error(&e);
                                tokio::time::sleep(ERROR_BACKOFF).await;
                            }
                            i += 1;
                        }
                        tally
                    })
                })
                .collect();
            let tally = join_all(tasks).await?;
            let name = if by_tag {
                "manifest-get-tag"
            } else {
                "manifest-get-digest"
            };
            results.push(
                WorkloadResult::new(
                    name,
                    self.reg.targets(),
                    &tally,
                    started.elapsed(),
                    "request",
                )
                .with_rss(&monitor.finish()),
            );
        }
        Ok(results)
    }

    async fn mixed(&mut self) -> Result<WorkloadResult> {
        let cfg = self.cfg.clone();
        let repo = cfg.repo("mixed");
        let mut setup = Tally::default();
        let mut seeded = Vec::new();
        for i in 0..MIXED_SEED_IMAGES {
            let image = Image::small(cfg.seed(SEED_MIXED, i as u64));
            let tag = format!("seed{i}");
            self.reg
                .push_image(i % self.reg.nodes(), &repo, &tag, &image, &mut setup)
                .await
                .map_err(|e| Error::Setup(e.into()))?;
            seeded.push((tag, image.pull_ref()));
        }
        // Images pushed so far, which pulls pick from; pushes add to it.
        let images: Arc<RwLock<Vec<(String, ImageRef)>>> = Arc::new(RwLock::new(seeded));
        let deadline = Instant::now() + cfg.duration;
        let started = Instant::now();
        let tasks: Vec<_> = (0..cfg.clients.max(1))
            .map(|k| {
                let reg = self.reg.clone();
                let repo = repo.clone();
                let images = images.clone();
                let cfg = cfg.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::per_request();
                    let mut rng = data::Rng::new(cfg.seed(SEED_MIXED, u64::MAX - k as u64));
                    let (mut pulls, mut pushes) = (0u64, 0u64);
                    let mut j = 0u64;
                    while Instant::now() < deadline {
                        let node = rng.index(reg.nodes());
                        let result = if rng.percent(MIXED_PUSH_PERCENT) {
                            j += 1;
                            let image =
                                Image::small(cfg.seed(SEED_MIXED, ((k as u64 + 1) << 32) | j));
                            let tag = format!("c{k}-{j}");
                            let r = reg.push_image(node, &repo, &tag, &image, &mut tally).await;
                            if r.is_ok() {
                                pushes += 1;
                                images
                                    .write()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push((tag, image.pull_ref()));
                            }
                            r
                        } else {
                            let (tag, image) = {
                                let list = images.read().unwrap_or_else(|e| e.into_inner());
                                list[rng.index(list.len())].clone()
                            };
                            let r = reg.pull_image(node, &repo, &tag, &image, &mut tally).await;
                            if r.is_ok() {
                                pulls += 1;
                            }
                            r
                        };
                        if let Err(e) = result {
                            tally.error(&e);
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    (tally, pulls, pushes)
                })
            })
            .collect();
        let mut tally = Tally::per_request();
        let (mut pulls, mut pushes) = (0u64, 0u64);
        for task in tasks {
            let (t, pl, ps) = task.await?;
            tally.merge(&t);
            pulls += pl;
            pushes += ps;
        }
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut result = WorkloadResult::new(
            Workload::Mixed.name(),
            self.reg.targets(),
            &tally,
            elapsed,
            "request",
        );
        result
            .extra
            .insert("pulls_per_s".into(), pulls as f64 / secs);
        result
            .extra
            .insert("pushes_per_s".into(), pushes as f64 / secs);
        Ok(result)
    }
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Result<Tally> {
    let mut total = Tally::per_request();
    for task in tasks {
        total.merge(&task.await?);
    }
    Ok(total)
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    if time.is_zero() {
        return 0.0;
    }
    bytes as f64 / time.as_secs_f64() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse_and_order() {
        let all: Selection = "all".parse().unwrap();
        assert_eq!(all.0, Workload::ALL.to_vec());
        let picked = selected(&[
            "mixed".parse().unwrap(),
            "push-large".parse().unwrap(),
            "mixed".parse().unwrap(),
        ]);
        assert_eq!(picked, vec![Workload::PushLarge, Workload::Mixed]);
        assert!("push".parse::<Selection>().is_err());
    }
}
