//! Criterion micro benchmarks of the storage engine, the parts a push and a
//! pull spend their time in:
//!
//! - `chunking_hashing`: `Chunker` over 64 MiB in network-sized frames,
//!   with the blob's sha256 and each sealed chunk's blake3 name, as the
//!   upload pipeline does (and each hash alone, to see which one costs).
//! - `chunk_write_fsync`: `ChunkStore::put` of distinct 4 MiB and 64 KiB
//!   chunks (temp file, write, fsync, rename, fsync of the directory).
//! - `sled_apply_lookup`: `StateMachine::apply` of `PutBlob` and
//!   `PutManifest`, and the reads a pull makes (`blob_in_repo`, `tag`,
//!   `manifest_in_repo`) on a state machine holding thousands of records.
//!
//! Sample sizes and times are small so `cargo bench` stays short; pass
//! criterion's own flags (`-- --measurement-time 10`) for steadier numbers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use stowage_benches::data::{random_bytes, Rng};
use stowage_storage::chunker::{Chunker, DEFAULT_CHUNK_SIZE_BYTES};
use stowage_storage::meta::{ChunkRef, Command, ManifestRecord, Outcome};
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

fn digest_of(kind: &str, n: u64) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, format!("{kind}-{n}").as_bytes())
}

fn put_blob(repo: &RepoName, n: u64) -> (Digest, Command) {
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
        now_ms: n,
    };
    (digest, cmd)
}

fn put_manifest(repo: &RepoName, blob: &Digest, n: u64) -> (Digest, Tag, Command) {
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{blob}"}},"n":{n}}}"#
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
            blobs: vec![blob.clone()],
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

fn sled_apply_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Configured as the node configures it.
    let db = sled::Config::new()
        .path(dir.path().join("meta"))
        .cache_capacity(DEFAULT_META_CACHE_BYTES)
        .flush_every_ms(Some(1000))
        .open()
        .expect("sled");
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
            let (digest, tag, cmd) = put_manifest(repo, &blob, mark);
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
                (next, put_manifest(repo, blob, next).2)
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

criterion_group! {
    name = storage;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = chunking_hashing, chunk_write_fsync, sled_apply_lookup
}
criterion_main!(storage);
