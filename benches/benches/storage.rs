//! Criterion micro benchmarks of the storage engine, the parts a push and a
//! pull spend their time in:
//!
//! - `chunking_hashing`: `Chunker` over 64 MiB in network-sized frames,
//!   with the blob's sha256 and each sealed chunk's blake3 name, as the
//!   upload pipeline does (and each hash alone, to see which one costs).
//! - `chunk_write_fsync`: `ChunkStore::put` of distinct 4 MiB and 64 KiB
//!   chunks (temp file, write, fsync, rename, fsync of the directory).
//! - `chunk_read`: what a pull pays per 4 MiB chunk already in the page
//!   cache: `ChunkStore::read` with the recorded CRC32C (the pull path)
//!   and with the blake3 name (scrub), and each check alone over a buffer.
//! - `sled_apply_lookup`: `StateMachine::apply` of `PutBlob` and
//!   `PutManifest`, and the reads a pull makes (`blob_in_repo`, `tag`,
//!   `manifest_in_repo`) on a state machine holding thousands of records.
//! - `gc_pass`: garbage collection's metadata pass over 100,000 blob records
//!   in 100 repositories, half referenced by manifests and half unreferenced
//!   with their upload lease over: `gc_candidates` (the scan), and applying
//!   the `CollectBlobs` commands for the unreferenced half in batches of 512
//!   links, as the node proposes them. The anchor, in the same run, is one
//!   plain pass over every blob record (`for_each_blob`).
//!
//! Sample sizes and times are small so `cargo bench` stays short; pass
//! criterion's own flags (`-- --measurement-time 10`) for steadier numbers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use stowage_benches::data::{random_bytes, Rng};
use stowage_storage::chunker::{Chunker, DEFAULT_CHUNK_SIZE_BYTES};
use stowage_storage::chunks::Check;
use stowage_storage::meta::{ChunkRef, Command, GcPolicy, ManifestRecord, Outcome, CLOCK_SKEW_MS};
use stowage_storage::types::{ChunkId, Digest, DigestAlgorithm, NodeId, RepoName, Tag};
use stowage_storage::{ChunkStore, StateMachine, DEFAULT_META_CACHE_BYTES};

/// Bytes pushed through the chunker per iteration.
const CHUNKING_INPUT_MIB: usize = 64;
/// Frames the chunker is fed in, about what hyper hands over per read.
const FRAME_BYTES: usize = 64 * 1024;
/// Repositories and records the lookups search among.
const REPOS: usize = 100;
const BLOBS_PER_REPO: usize = 100;
const MANIFESTS_PER_REPO: usize = 10;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The GC pass's state: repositories × blobs each; the first half of each
/// repository's blobs are layers of its manifests, the rest unreferenced.
const GC_REPOS: usize = 100;
const GC_BLOBS_PER_REPO: usize = 1_000;
/// Layers per manifest, about a typical image.
const GC_LAYERS_PER_MANIFEST: usize = 10;
/// Links per `CollectBlobs` command, as the node batches them
/// (`LINKS_PER_COMMAND` in node/src/chunks/gc.rs).
const GC_LINKS_PER_COMMAND: usize = 512;
/// The upload lease and the grace period the pass runs under, the node's
/// defaults (`upload_expiry_secs`, `gc_grace_secs`: a day each); every
/// unreferenced link is older than both.
const GC_LEASE_MS: u64 = 24 * 3600 * 1000;
const GC_GRACE_MS: u64 = 24 * 3600 * 1000;

fn chunking_hashing(c: &mut Criterion) {
    let data = random_bytes(1, CHUNKING_INPUT_MIB << 20);
    let mut g = c.benchmark_group("chunking_hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256+blake3", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(DigestAlgorithm::Sha256, DEFAULT_CHUNK_SIZE_BYTES);
            let mut sealed = Vec::new();
            let mut ids = Vec::new();
            for frame in data.chunks(FRAME_BYTES) {
                chunker.push(frame, &mut sealed);
                ids.extend(sealed.drain(..).map(|c| ChunkId::of(&c)));
            }
            ids.extend(chunker.flush().map(|c| ChunkId::of(&c)));
            black_box((chunker.digest(), ids))
        })
    });
    g.bench_function("sha256_only", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(DigestAlgorithm::Sha256, DEFAULT_CHUNK_SIZE_BYTES);
            let mut sealed = Vec::new();
            for frame in data.chunks(FRAME_BYTES) {
                chunker.push(frame, &mut sealed);
                sealed.clear();
            }
            black_box(chunker.digest())
        })
    });
    g.bench_function("blake3_only", |b| {
        b.iter(|| {
            let ids: Vec<ChunkId> = data
                .chunks(DEFAULT_CHUNK_SIZE_BYTES)
                .map(ChunkId::of)
                .collect();
            black_box(ids)
        })
    });
    g.finish();
}

fn chunk_write_fsync(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChunkStore::open(dir.path().join("chunks")).expect("chunk store");
    let mut g = c.benchmark_group("chunk_write_fsync");
    for (label, size) in [("4MiB", 4usize << 20), ("64KiB", 64 << 10)] {
        let mut buf = random_bytes(2, size);
        let mut n = 0u64;
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                // Every chunk distinct, so each put writes a new file.
                n += 1;
                buf[..8].copy_from_slice(&n.to_le_bytes());
                store.put(&buf).expect("chunk put")
            })
        });
    }
    g.finish();
}

fn chunk_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ChunkStore::open(dir.path().join("chunks")).expect("chunk store");
    let size = DEFAULT_CHUNK_SIZE_BYTES;
    let buf = random_bytes(3, size);
    let id = store.put(&buf).expect("chunk put");
    let mut g = c.benchmark_group("chunk_read");
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function("read_crc32c", |b| {
        b.iter(|| store.read(&id, Check::Recorded).expect("chunk read"))
    });
    g.bench_function("read_blake3", |b| {
        b.iter(|| store.read(&id, Check::Name).expect("chunk read"))
    });
    g.bench_function("crc32c_only", |b| {
        b.iter(|| crc32c::crc32c(black_box(&buf)))
    });
    g.bench_function("blake3_only", |b| b.iter(|| ChunkId::of(black_box(&buf))));
    g.finish();
}

fn digest_of(kind: &str, n: u64) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, format!("{kind}-{n}").as_bytes())
}

fn put_blob(repo: &RepoName, n: u64) -> (Digest, Command) {
    put_blob_at(repo, n, n, n)
}

/// Blob `n` uploaded into `repo` at `now_ms`, its chunks written since
/// `written_since_ms`.
fn put_blob_at(repo: &RepoName, n: u64, now_ms: u64, written_since_ms: u64) -> (Digest, Command) {
    let digest = digest_of("blob", n);
    let cmd = Command::PutBlob {
        repo: repo.clone(),
        digest: digest.clone(),
        size: 4 << 20,
        chunks: vec![ChunkRef {
            id: ChunkId::of(&n.to_le_bytes()),
            len: 4 << 20,
        }],
        holders: vec![NodeId(1)],
        now_ms,
        written_since_ms,
    };
    (digest, cmd)
}

fn put_manifest(repo: &RepoName, blobs: &[Digest], n: u64) -> (Digest, Tag, Command) {
    let layers: Vec<String> = blobs
        .iter()
        .map(|b| format!(r#"{{"digest":"{b}"}}"#))
        .collect();
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[{}],"n":{n}}}"#,
        layers.join(",")
    )
    .into_bytes();
    let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
    let tag = Tag::parse(&format!("t{n}")).expect("tag");
    let cmd = Command::PutManifest {
        repo: repo.clone(),
        digest: digest.clone(),
        record: Box::new(ManifestRecord {
            media_type: OCI_MANIFEST.to_owned(),
            bytes,
            blobs: blobs.to_vec(),
            children: vec![],
            subject: None,
            created_ms: n,
        }),
        tags: vec![tag.clone()],
        referrer: None,
    };
    (digest, tag, cmd)
}

fn apply(sm: &StateMachine, cmd: &Command, n: u64) {
    let outcome = sm.apply(cmd, &n.to_be_bytes()).expect("apply");
    assert_eq!(outcome, Outcome::Done);
}

/// A sled database in `dir`, configured as the node configures it.
fn node_sled(dir: &tempfile::TempDir) -> sled::Db {
    sled::Config::new()
        .path(dir.path().join("meta"))
        .cache_capacity(DEFAULT_META_CACHE_BYTES)
        .flush_every_ms(Some(1000))
        .open()
        .expect("sled")
}

fn sled_apply_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = node_sled(&dir);
    let sm = StateMachine::open(&db).expect("state machine");
    let repos: Vec<RepoName> = (0..REPOS)
        .map(|i| RepoName::parse(&format!("bench/repo{i}")).expect("repo"))
        .collect();
    // Populate: blobs in every repository, manifests referencing them.
    let mut mark = 0u64;
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for repo in &repos {
        let mut first = None;
        for _ in 0..BLOBS_PER_REPO {
            mark += 1;
            let (digest, cmd) = put_blob(repo, mark);
            apply(&sm, &cmd, mark);
            first.get_or_insert(digest.clone());
            blobs.push((repo.clone(), digest));
        }
        let blob = first.expect("a blob");
        for _ in 0..MANIFESTS_PER_REPO {
            mark += 1;
            let (digest, tag, cmd) = put_manifest(repo, std::slice::from_ref(&blob), mark);
            apply(&sm, &cmd, mark);
            manifests.push((repo.clone(), digest, tag));
        }
    }

    let mut g = c.benchmark_group("sled_apply_lookup");
    g.throughput(Throughput::Elements(1));
    let mut next = mark;
    g.bench_function("apply_put_blob", |b| {
        b.iter_batched(
            || {
                next += 1;
                let repo = &repos[usize::try_from(next).unwrap_or(0) % repos.len()];
                (next, put_blob(repo, next).1)
            },
            |(n, cmd)| apply(&sm, &cmd, n),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("apply_put_manifest", |b| {
        b.iter_batched(
            || {
                next += 1;
                let (repo, blob) = &blobs[usize::try_from(next).unwrap_or(0) % blobs.len()];
                (next, put_manifest(repo, std::slice::from_ref(blob), next).2)
            },
            |(n, cmd)| apply(&sm, &cmd, n),
            BatchSize::SmallInput,
        )
    });
    let mut rng = Rng::new(3);
    g.bench_function("blob_in_repo", |b| {
        b.iter(|| {
            let (repo, digest) = &blobs[rng.index(blobs.len())];
            black_box(sm.blob_in_repo(repo, digest).expect("read"))
        })
    });
    g.bench_function("tag", |b| {
        b.iter(|| {
            let (repo, _, tag) = &manifests[rng.index(manifests.len())];
            black_box(sm.tag(repo, tag).expect("read"))
        })
    });
    g.bench_function("manifest_in_repo", |b| {
        b.iter(|| {
            let (repo, digest, _) = &manifests[rng.index(manifests.len())];
            black_box(sm.manifest_in_repo(repo, digest).expect("read"))
        })
    });
    g.finish();
}

/// Uploads every unreferenced blob of the GC pass's state again, linked
/// at `linked_ms` (long ago, so the lease is over) but with chunks written
/// after the tombstones the last collection left (so the records are
/// accepted), which restores the state the pass began with.
fn put_unreferenced(
    sm: &StateMachine,
    blobs: &[(RepoName, u64)],
    mark: &mut u64,
    policy: &GcPolicy,
) {
    let written_since_ms = policy.now_ms + CLOCK_SKEW_MS + 1;
    for (repo, n) in blobs {
        *mark += 1;
        apply(sm, &put_blob_at(repo, *n, 1, written_since_ms).1, *mark);
    }
}

/// Blob records and, among them, links a GC pass would collect.
fn gc_state(sm: &StateMachine, policy: &GcPolicy) -> (usize, usize) {
    let mut blobs = 0usize;
    sm.for_each_blob(|_, _| blobs += 1).expect("scan");
    let found = sm.gc_candidates(policy, |_| true).expect("candidates");
    assert!(found.manifests.is_empty() && found.tombstones.is_empty());
    (blobs, found.links.len())
}

fn gc_pass(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = node_sled(&dir);
    let sm = StateMachine::open(&db).expect("state machine");
    // Everything is stored at small clock values; the pass runs a day and
    // more later, so every lease and grace period is over.
    let policy = GcPolicy {
        now_ms: 10 * GC_LEASE_MS,
        grace_ms: GC_GRACE_MS,
        lease_ms: GC_LEASE_MS,
    };
    let mut mark = 0u64;
    let mut unreferenced = Vec::new();
    for r in 0..GC_REPOS {
        let repo = RepoName::parse(&format!("gc/repo{r}")).expect("repo");
        let mut layers = Vec::new();
        for i in 0..GC_BLOBS_PER_REPO {
            mark += 1;
            let n = u64::try_from(r * GC_BLOBS_PER_REPO + i).expect("small");
            let (digest, cmd) = put_blob(&repo, n);
            apply(&sm, &cmd, mark);
            if i < GC_BLOBS_PER_REPO / 2 {
                layers.push(digest);
            } else {
                unreferenced.push((repo.clone(), n));
            }
        }
        for image in layers.chunks(GC_LAYERS_PER_MANIFEST) {
            mark += 1;
            apply(&sm, &put_manifest(&repo, image, mark).2, mark);
        }
    }
    let records = GC_REPOS * GC_BLOBS_PER_REPO;
    let half = unreferenced.len();
    assert_eq!(gc_state(&sm, &policy), (records, half));
    let found = sm.gc_candidates(&policy, |_| true).expect("candidates");
    let commands: Vec<Command> = found
        .links
        .chunks(GC_LINKS_PER_COMMAND)
        .map(|batch| Command::CollectBlobs {
            links: batch.to_vec(),
            policy,
        })
        .collect();
    // Collecting takes exactly the unreferenced half, and putting it back
    // restores the state, so every timed pass starts from the same one.
    for cmd in &commands {
        mark += 1;
        apply(&sm, cmd, mark);
    }
    assert_eq!(gc_state(&sm, &policy), (records - half, 0));
    put_unreferenced(&sm, &unreferenced, &mut mark, &policy);
    assert_eq!(gc_state(&sm, &policy), (records, half));

    let mut g = c.benchmark_group("gc_pass");
    // One iteration is a whole pass (tens to hundreds of ms): the same
    // iteration count in every sample keeps the run short.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(u64::try_from(records).expect("small")));
    g.bench_function("anchor_for_each_blob", |b| {
        b.iter(|| {
            let mut bytes = 0u64;
            sm.for_each_blob(|_, r| bytes += r.size).expect("scan");
            black_box(bytes)
        })
    });
    g.bench_function("gc_candidates", |b| {
        b.iter(|| black_box(sm.gc_candidates(&policy, |_| true).expect("candidates")))
    });
    g.throughput(Throughput::Elements(u64::try_from(half).expect("small")));
    g.bench_function("collect_blobs_apply", |b| {
        b.iter_custom(|iters| {
            let mut taken = Duration::ZERO;
            for _ in 0..iters {
                let started = std::time::Instant::now();
                for cmd in &commands {
                    mark += 1;
                    apply(&sm, cmd, mark);
                }
                taken += started.elapsed();
                // Untimed: the unreferenced half comes back for the next
                // pass (its links as old as before).
                put_unreferenced(&sm, &unreferenced, &mut mark, &policy);
            }
            taken
        })
    });
    g.finish();
    assert_eq!(gc_state(&sm, &policy), (records, half));
}

criterion_group! {
    name = storage;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = chunking_hashing, chunk_write_fsync, chunk_read, sled_apply_lookup, gc_pass
}
criterion_main!(storage);
