//! The nemesis: a seeded schedule of faults applied one at a time to an
//! `NsCluster`, each held for a while, healed, and followed by a wait until
//! the cluster is healthy again (so the next fault starts from a cluster
//! that can take it, and the time to recover is measured).

use std::time::{Duration, Instant};

use super::history::Clock;
use super::rng::Rng;
use crate::netns::NsCluster;

/// The faults the runner knows, by their `--faults` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL a random node, restart it on the same data.
    Kill,
    /// SIGKILL the leader, restart it.
    LeaderKill,
    /// SIGSTOP a random node, SIGCONT it.
    Pause,
    /// One zone (random node) cut off from the other two; clients still
    /// reach it.
    Partition,
    /// The leader cut off from the other two.
    LeaderPartition,
    /// A random node's packets to the others dropped, not theirs to it.
    Asymmetric,
    /// Random packet loss on one node's link.
    Loss,
    /// Delay on one node's link (needs `tc netem`).
    Delay,
    /// A whole zone gone without notice (every packet dropped, clients
    /// too; half the time its process dies as well) for `--zone-loss-secs`.
    ZoneLoss,
    /// A node's disk replaced by an empty one, then the documented
    /// replacement procedure.
    Wipe,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::LeaderKill,
        Fault::Pause,
        Fault::Partition,
        Fault::LeaderPartition,
        Fault::Asymmetric,
        Fault::Loss,
        Fault::Delay,
        Fault::ZoneLoss,
        Fault::Wipe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::LeaderKill => "leader-kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::LeaderPartition => "leader-partition",
            Fault::Asymmetric => "asymmetric",
            Fault::Loss => "loss",
            Fault::Delay => "delay",
            Fault::ZoneLoss => "zone-loss",
            Fault::Wipe => "wipe",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// A comma-separated list (`all` for every fault).
    pub fn parse_list(list: &str) -> Result<Vec<Fault>, String> {
        if list.trim() == "all" {
            return Ok(Fault::ALL.to_vec());
        }
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Fault::parse(s).ok_or_else(|| format!("unknown fault {s:?}")))
            .collect()
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub fault: Fault,
    pub detail: String,
    /// Nodes the fault hit; the others are the survivors.
    pub affected: Vec<u64>,
    pub start_us: u64,
    /// When the fault was fully in place (every iptables rule in, the
    /// process killed): the cut.
    pub cut_us: u64,
    pub healed_us: u64,
    /// When the cluster was healthy again after the heal.
    pub recovered_us: Option<u64>,
    /// What went wrong applying, healing or recovering, if anything.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NemesisConfig {
    pub faults: Vec<Fault>,
    /// How long a whole-zone loss lasts.
    pub zone_loss: Duration,
    /// Shortest and longest hold of the other faults.
    pub hold_min: Duration,
    pub hold_max: Duration,
    /// Quiet time between faults.
    pub quiet: Duration,
    /// Fault-free time at the start (the latency baseline); at least
    /// `quiet`.
    pub baseline: Duration,
    /// How long the cluster gets to be healthy after a heal.
    pub recover_limit: Duration,
}

/// What must be undone at heal time.
enum Applied {
    Restart(u64),
    Resume(u64),
    Network,
    ZoneLoss { id: u64, killed: bool },
    Replace(u64),
    Nothing,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs faults until `end`; returns what happened.
pub async fn run(
    cluster: &mut NsCluster,
    cfg: &NemesisConfig,
    mut rng: Rng,
    clock: Clock,
    end: Instant,
) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    if cfg.faults.is_empty() {
        tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
        return records;
    }
    tokio::time::sleep(cfg.baseline.saturating_sub(cfg.quiet)).await;
    loop {
        tokio::time::sleep(cfg.quiet).await;
        let fault = cfg.faults[rng.index(cfg.faults.len())];
        let hold = match fault {
            Fault::ZoneLoss => cfg.zone_loss,
            Fault::Wipe => cfg.hold_min,
            _ => Duration::from_millis(rng.range(millis(cfg.hold_min), millis(cfg.hold_max))),
        };
        if Instant::now() + hold > end {
            break;
        }
        cluster.sample_rss();
        let start_us = clock.now_us();
        let mut rec = FaultRecord {
            fault,
            detail: String::new(),
            affected: Vec::new(),
            start_us,
            cut_us: start_us,
            healed_us: start_us,
            recovered_us: None,
            error: None,
        };
        let applied = match apply(cluster, fault, &mut rng, &mut rec).await {
            Ok(a) => a,
            Err(e) => {
                rec.error = Some(format!("apply: {e}"));
                Applied::Nothing
            }
        };
        rec.cut_us = clock.now_us();
        tokio::time::sleep(hold).await;
        if let Err(e) = heal(cluster, applied).await {
            rec.error = Some(format!("heal: {e}"));
        }
        rec.healed_us = clock.now_us();
        match cluster.wait_healthy(cfg.recover_limit).await {
            Ok(()) => rec.recovered_us = Some(clock.now_us()),
            Err(e) => {
                let prior = rec
                    .error
                    .take()
                    .map(|p| format!("{p}; "))
                    .unwrap_or_default();
                rec.error = Some(format!("{prior}recover: {e}"));
                // Give the next fault a healed cluster even so.
                let _ = heal_everything(cluster).await;
            }
        }
        eprintln!(
            "chaos: {} {} on {:?}: held {} ms, recovered {}",
            fault.name(),
            rec.detail,
            rec.affected,
            rec.healed_us.saturating_sub(rec.start_us) / 1000,
            match (rec.recovered_us, &rec.error) {
                (Some(t), None) => format!("{} ms after heal", (t - rec.healed_us) / 1000),
                (_, Some(e)) => format!("with error: {e}"),
                (None, None) => "never".into(),
            }
        );
        records.push(rec);
        if Instant::now() >= end {
            break;
        }
    }
    records
}

async fn leader_or_random(cluster: &NsCluster, rng: &mut Rng) -> u64 {
    match cluster
        .wait_leader_among(&cluster.ids(), Duration::from_secs(10))
        .await
    {
        Ok((id, _)) => id,
        Err(_) => {
            let ids = cluster.ids();
            ids[rng.index(ids.len())]
        }
    }
}

async fn apply(
    cluster: &mut NsCluster,
    fault: Fault,
    rng: &mut Rng,
    rec: &mut FaultRecord,
) -> Result<Applied, String> {
    let ids = cluster.ids();
    let random = ids[rng.index(ids.len())];
    let target = match fault {
        Fault::LeaderKill | Fault::LeaderPartition => leader_or_random(cluster, rng).await,
        _ => random,
    };
    rec.affected = vec![target];
    let host = cluster.host(target)?;
    let others: Vec<usize> = ids
        .iter()
        .filter(|&&id| id != target)
        .map(|&id| cluster.host(id))
        .collect::<Result<_, _>>()?;
    Ok(match fault {
        Fault::Kill | Fault::LeaderKill => {
            cluster.kill(target)?;
            Applied::Restart(target)
        }
        Fault::Pause => {
            cluster.pause(target)?;
            Applied::Resume(target)
        }
        Fault::Partition | Fault::LeaderPartition => {
            cluster.net.partition(&[host], &others)?;
            Applied::Network
        }
        Fault::Asymmetric => {
            if rng.chance(50) {
                rec.detail = "outbound dropped".into();
                cluster.net.one_way(&[host], &others)?;
            } else {
                rec.detail = "inbound dropped".into();
                cluster.net.one_way(&others, &[host])?;
            }
            Applied::Network
        }
        Fault::Loss => {
            let pct = u32::try_from(rng.range(15, 40)).unwrap_or(20);
            rec.detail = format!("{pct}% loss");
            cluster.net.loss(host, pct)?;
            Applied::Network
        }
        Fault::Delay => {
            let ms = u32::try_from(rng.range(50, 300)).unwrap_or(100);
            rec.detail = format!("{ms} ms delay");
            cluster.net.delay(host, ms, ms / 4)?;
            Applied::Network
        }
        Fault::ZoneLoss => {
            cluster.net.isolate(host)?;
            let killed = rng.chance(50);
            if killed {
                rec.detail = "network and process".into();
                cluster.kill(target)?;
            } else {
                rec.detail = "network only".into();
            }
            Applied::ZoneLoss { id: target, killed }
        }
        Fault::Wipe => {
            rec.detail = "disk replaced".into();
            cluster.wipe(target)?;
            Applied::Replace(target)
        }
    })
}

async fn heal(cluster: &mut NsCluster, applied: Applied) -> Result<(), String> {
    match applied {
        Applied::Restart(id) => tokio::task::block_in_place(|| cluster.start_node(id)),
        Applied::Resume(id) => cluster.resume(id),
        Applied::Network => cluster.net.heal_all(),
        Applied::ZoneLoss { id, killed } => {
            cluster.net.heal_all()?;
            if killed {
                tokio::task::block_in_place(|| cluster.start_node(id))?;
            }
            Ok(())
        }
        Applied::Replace(id) => {
            let via = cluster
                .ids()
                .into_iter()
                .find(|&i| i != id)
                .ok_or_else(|| "no survivor".to_string())?;
            cluster.replace_wiped(id, via).await
        }
        Applied::Nothing => heal_everything(cluster).await,
    }
}

/// Heals the network, resumes paused nodes and starts stopped ones.
pub async fn heal_everything(cluster: &mut NsCluster) -> Result<(), String> {
    cluster.net.heal_all()?;
    let mut errors = Vec::new();
    for id in cluster.ids() {
        let (paused, running) = {
            let n = cluster.node(id)?;
            (n.paused, n.process.is_some())
        };
        if paused {
            if let Err(e) = cluster.resume(id) {
                errors.push(e);
            }
        }
        if !running {
            if let Err(e) = tokio::task::block_in_place(|| cluster.start_node(id)) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
