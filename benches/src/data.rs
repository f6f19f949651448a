//! Test data: incompressible pseudo-random bytes and small OCI images made
//! of them, each with its digest computed before anything is pushed, so
//! that the timed part of a workload is only the registry's work.
//!
//! Every blob is generated whole from its own seed (xorshift64*, several
//! GB/s on one core): no two blobs, and no two chunks of a blob, share
//! content, so no registry can make a push cheaper by deduplicating chunks
//! the other registry would have to write.

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Layers per small image (push-many, manifest-get, mixed).
pub const SMALL_IMAGE_LAYERS: usize = 3;
/// Smallest and largest layer of a small image, in bytes.
pub const SMALL_LAYER_MIN_BYTES: u64 = 1024;
pub const SMALL_LAYER_MAX_BYTES: u64 = 64 * 1024;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// splitmix64: turns related seeds (a run id plus a counter) into
/// unrelated ones.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small, fast pseudo-random generator (xorshift64*). Not for anything
/// but test data and choosing what to do next.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at zero.
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `low..=high` (the modulo bias is irrelevant here).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// An index below `len` (which must not be 0).
    pub fn index(&mut self, len: usize) -> usize {
        let len64 = len as u64;
        usize::try_from(self.next_u64() % len64).unwrap_or(0)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&last[..n]);
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Rng::new(seed).fill(&mut buf);
    buf
}

/// A blob with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub data: Bytes,
}

impl Blob {
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Blob {
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// What a pull needs to know about a pushed blob (the bytes are not kept).
#[derive(Debug, Clone)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

impl From<&Blob> for BlobRef {
    fn from(b: &Blob) -> Self {
        BlobRef {
            digest: b.digest.clone(),
            size: b.size(),
        }
    }
}

/// An OCI image manifest over a config and layers, as bytes with digest.
pub fn manifest_for(config: &BlobRef, layers: &[BlobRef]) -> Blob {
    Blob::new(manifest_bytes(config, layers, OCI_LAYER))
}

/// The OCI image manifest JSON over a config and layers of `layer_type`.
pub fn manifest_bytes(config: &BlobRef, layers: &[BlobRef], layer_type: &str) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| json!({ "mediaType": layer_type, "digest": l.digest, "size": l.size }))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size },
        "layers": layers,
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// A minimal image config naming its layers; `label` makes it unique so
/// that configs of different images have different digests.
pub fn config_for(layers: &[BlobRef], label: &str) -> Blob {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "dev.stowage.bench": label } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    Blob::new(serde_json::to_vec(&config).unwrap_or_default())
}

/// A small image: a few random layers of 1–64 KiB, a config and a manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Blob,
}

impl Image {
    /// The image numbered `seed`; different seeds give different layers,
    /// configs and manifests.
    pub fn small(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let layers: Vec<Blob> = (0..SMALL_IMAGE_LAYERS)
            .map(|_| {
                let len = rng.range(SMALL_LAYER_MIN_BYTES, SMALL_LAYER_MAX_BYTES);
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(1024)];
                rng.fill(&mut buf);
                Blob::new(buf)
            })
            .collect();
        let refs: Vec<BlobRef> = layers.iter().map(BlobRef::from).collect();
        let config = config_for(&refs, &format!("{seed:016x}"));
        let manifest = manifest_for(&BlobRef::from(&config), &refs);
        Image {
            layers,
            config,
            manifest,
        }
    }

    /// Bytes a push of this image sends (layers, config, manifest).
    pub fn push_bytes(&self) -> u64 {
        self.layers.iter().map(Blob::size).sum::<u64>() + self.config.size() + self.manifest.size()
    }

    /// What a pull of this image needs.
    pub fn pull_ref(&self) -> ImageRef {
        ImageRef {
            manifest: BlobRef::from(&self.manifest),
            blobs: std::iter::once(&self.config)
                .chain(&self.layers)
                .map(BlobRef::from)
                .collect(),
        }
    }
}

/// A pushed image, as a pull sees it: the manifest's digest and the blobs
/// (config first) to fetch after it.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub manifest: BlobRef,
    pub blobs: Vec<BlobRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_by_seed_and_fill_odd_lengths() {
        let a = random_bytes(1, 1001);
        let b = random_bytes(2, 1001);
        assert_eq!(a.len(), 1001);
        assert_ne!(a, b);
        assert_eq!(a, random_bytes(1, 1001));
        // Not constant at the tail.
        assert_ne!(&a[993..], &[0u8; 8][..]);
    }

    #[test]
    fn small_images_are_distinct_and_well_formed() {
        let a = Image::small(7);
        let b = Image::small(8);
        assert_ne!(a.manifest.digest, b.manifest.digest);
        assert_ne!(a.config.digest, b.config.digest);
        assert_eq!(a.layers.len(), SMALL_IMAGE_LAYERS);
        for l in &a.layers {
            assert!((SMALL_LAYER_MIN_BYTES..=SMALL_LAYER_MAX_BYTES).contains(&l.size()));
        }
        let m: serde_json::Value = serde_json::from_slice(&a.manifest.data).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["config"]["digest"], a.config.digest.as_str());
        assert_eq!(m["layers"][2]["size"], a.layers[2].size());
        assert_eq!(a.pull_ref().blobs.len(), SMALL_IMAGE_LAYERS + 1);
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
