//! Images for the real clients, written as files before any clock starts:
//! layers that are valid uncompressed tars (one regular file of
//! incompressible bytes each), a valid OCI image config and manifest, laid
//! out as an OCI layout directory (for skopeo) or a docker-archive tar (for
//! `docker load`, which in engine 20.10 takes no OCI layout).
//!
//! Layers are uncompressed, so each layer's digest is also its diff_id. All
//! of it streams to disk with its sha256 computed on the way: an image of
//! any size needs only a 1 MiB buffer.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::data::{BlobRef, Rng, OCI_MANIFEST};
use crate::error::{Error, Result};

/// The media type of an uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation that names an image in an OCI layout's index.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Shares of the image each layer gets, in percent, so an image looks like
/// a real one (a large base, then smaller layers); layers past the fifth
/// take the shares again from the start.
const LAYER_SHARES_PERCENT: [u64; 5] = [40, 25, 15, 12, 8];
/// A tar is made of 512-byte blocks.
const TAR_BLOCK_BYTES: u64 = 512;
/// Two zero blocks end a tar archive.
const TAR_END_BYTES: u64 = 2 * TAR_BLOCK_BYTES;
/// The largest size the 11 octal digits of a ustar header can hold.
const TAR_MAX_ENTRY_BYTES: u64 = (1 << 33) - 1;
/// Every file in the images has this mtime (and the config this creation
/// time), so the same seeds give the same bytes.
const MTIME_UNIX_SECS: u64 = 0;
const CREATED: &str = "1970-01-01T00:00:00Z";
/// Random content is generated and written this much at a time.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// One layer: the size of its one file and the seed of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    pub seed: u64,
    pub content_bytes: u64,
}

/// What an image is made of; the same spec always gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub layers: Vec<LayerSpec>,
    /// Makes the config, hence the image, unique (a label in the config).
    pub label: String,
}

impl ImageSpec {
    /// `layers` layers holding `total_bytes` between them in unequal
    /// shares, the content of layer `i` seeded by `seed_of(i)`.
    pub fn new(
        total_bytes: u64,
        layers: usize,
        seed_of: impl Fn(usize) -> u64,
        label: &str,
    ) -> Self {
        ImageSpec {
            layers: layer_sizes(total_bytes, layers)
                .into_iter()
                .enumerate()
                .map(|(i, content_bytes)| LayerSpec {
                    seed: seed_of(i),
                    content_bytes,
                })
                .collect(),
            label: label.to_owned(),
        }
    }
}

/// Splits `total_bytes` over `layers` layers (at least one) by
/// `LAYER_SHARES_PERCENT`; the last layer takes what rounding left, and no
/// layer is empty.
pub fn layer_sizes(total_bytes: u64, layers: usize) -> Vec<u64> {
    let layers = layers.max(1);
    let share = |i: usize| LAYER_SHARES_PERCENT[i % LAYER_SHARES_PERCENT.len()];
    let shares: u64 = (0..layers).map(share).sum();
    let mut sizes: Vec<u64> = (0..layers)
        .map(|i| {
            let size = u128::from(total_bytes) * u128::from(share(i)) / u128::from(shares);
            u64::try_from(size).unwrap_or(u64::MAX)
        })
        .collect();
    let assigned: u64 = sizes.iter().sum();
    if let Some(last) = sizes.last_mut() {
        *last += total_bytes.saturating_sub(assigned);
    }
    for size in &mut sizes {
        *size = (*size).max(1);
    }
    sizes
}

/// An image written to disk: its blobs as a pull sees them.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    /// The layer tars; uncompressed, so their digests are the diff_ids.
    pub layers: Vec<BlobRef>,
    pub config: BlobRef,
    /// The OCI manifest (an OCI layout has one; a docker archive has none,
    /// the engine writes its own when it pushes).
    pub manifest: Option<BlobRef>,
}

impl WrittenImage {
    /// Bytes of the image's blobs: layers, config and manifest.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>()
            + self.config.size
            + self.manifest.as_ref().map_or(0, |m| m.size)
    }

    /// The image ID docker gives it: the config's digest.
    pub fn docker_id(&self) -> &str {
        &self.config.digest
    }
}

/// Size of a tar holding one file of `content_bytes`: header, content
/// padded to whole blocks, end of archive.
pub fn layer_tar_bytes(content_bytes: u64) -> u64 {
    TAR_BLOCK_BYTES + content_bytes.div_ceil(TAR_BLOCK_BYTES) * TAR_BLOCK_BYTES + TAR_END_BYTES
}

/// Writes `value` as zero-padded octal filling `field` but its last byte,
/// which is NUL (the ustar convention).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// The ustar header of a regular file `name` of `size` bytes (mode 0644,
/// owned by root).
pub fn ustar_header(name: &str, size: u64) -> Result<[u8; 512]> {
    if name.len() > 100 {
        return Err(Error::Usage("a tar entry name must fit in 100 bytes"));
    }
    if size > TAR_MAX_ENTRY_BYTES {
        return Err(Error::Usage("a tar entry must be smaller than 8 GiB"));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], MTIME_UNIX_SECS);
    // The checksum is computed with its own field read as spaces.
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    // Six octal digits, NUL, space: what tar itself writes.
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    Ok(h)
}

/// Passes writes through while hashing and counting them.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, BlobRef) {
        let blob = BlobRef {
            digest: format!("sha256:{}", hex::encode(self.sha.finalize())),
            size: self.bytes,
        };
        (self.inner, blob)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `len` bytes of zeros.
fn zeros(out: &mut impl Write, len: u64) -> io::Result<()> {
    io::copy(&mut io::Read::take(io::repeat(0), len), out).map(|_| ())
}

/// Fills `buf` with the next bytes of `rng`'s stream: whole 8-byte words,
/// and one more word's first bytes for a tail. Filling a content in pieces
/// of whole words and a last piece gives the same bytes as one
/// `Rng::fill` of all of it (which draws a word for the tail even when
/// there is none, so it cannot be called piece by piece).
fn fill_stream(rng: &mut Rng, buf: &mut [u8]) {
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&rng.next_u64().to_le_bytes()[..n]);
    }
}

/// The name of layer `index`'s one file (at the root of the filesystem).
fn layer_file_name(index: usize) -> String {
    format!("stowage-bench-{index}.bin")
}

/// Writes one layer: a tar holding one regular file of the layer's random
/// content. Returns the tar's digest and size.
fn write_layer_tar(out: impl Write, index: usize, layer: &LayerSpec) -> Result<BlobRef> {
    let mut out = Hashing::new(out);
    let header = ustar_header(&layer_file_name(index), layer.content_bytes)?;
    let io_error = Error::io("write", format!("layer {index}"));
    let result = (|| {
        out.write_all(&header)?;
        let mut rng = Rng::new(layer.seed);
        let mut buf = vec![0u8; WRITE_BUFFER_BYTES];
        let mut left = layer.content_bytes;
        while left > 0 {
            let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            fill_stream(&mut rng, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        let padded = layer.content_bytes.div_ceil(TAR_BLOCK_BYTES) * TAR_BLOCK_BYTES;
        zeros(&mut out, padded - layer.content_bytes + TAR_END_BYTES)?;
        out.flush()
    })();
    result.map_err(io_error)?;
    Ok(out.finish().1)
}

/// The image config: amd64 linux, the layers' diff_ids, a command and a
/// label that makes it unique. Never run: `Cmd` is there because real
/// images have one.
pub fn config_json(layers: &[BlobRef], label: &str) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let history: Vec<_> = (0..layers.len())
        .map(|i| json!({ "created": CREATED, "created_by": format!("stowage-bench layer {i}") }))
        .collect();
    let config = json!({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "dev.stowage.bench": label },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

/// The OCI manifest over a config and uncompressed layers.
pub fn manifest_json(config: &BlobRef, layers: &[BlobRef]) -> Vec<u8> {
    crate::data::manifest_bytes(config, layers, OCI_LAYER_TAR)
}

fn blob_ref(data: &[u8]) -> BlobRef {
    BlobRef {
        digest: crate::data::sha256_digest(data),
        size: data.len() as u64,
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).map_err(Error::io("write", path.display().to_string()))
}

/// Writes the image as an OCI layout in `dir` (created; it must not hold
/// another image): `oci-layout`, `index.json` naming the manifest with
/// `tag`, every blob under `blobs/sha256/<hex>`.
pub fn write_oci_layout(dir: &Path, spec: &ImageSpec, tag: &str) -> Result<WrittenImage> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(Error::io("create", blobs.display().to_string()))?;
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        // Named after its digest once the digest is known.
        let partial = blobs.join(format!("layer-{i}.partial"));
        let path = partial.display().to_string();
        let file = File::create(&partial).map_err(Error::io("create", path.clone()))?;
        let written = write_layer_tar(BufWriter::new(file), i, layer)?;
        let named = blobs.join(hex_of(&written.digest));
        fs::rename(&partial, &named).map_err(Error::io("rename", path))?;
        layers.push(written);
    }
    let config_bytes = config_json(&layers, &spec.label);
    let config = blob_ref(&config_bytes);
    write_file(&blobs.join(hex_of(&config.digest)), &config_bytes)?;
    let manifest_bytes = manifest_json(&config, &layers);
    let manifest = blob_ref(&manifest_bytes);
    write_file(&blobs.join(hex_of(&manifest.digest)), &manifest_bytes)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::data::OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": { REF_NAME_ANNOTATION: tag },
        }],
    });
    write_file(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).unwrap_or_default(),
    )?;
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(WrittenImage {
        layers,
        config,
        manifest: Some(manifest),
    })
}

/// Writes the image as a docker-archive tar at `path`, as `docker save`
/// does for the legacy format: each layer tar as `layer-<i>.tar`, the
/// config as `config.json`, and `manifest.json` naming them and tagging
/// the image `repo_tag` when loaded.
pub fn write_docker_archive(path: &Path, spec: &ImageSpec, repo_tag: &str) -> Result<WrittenImage> {
    let shown = path.display().to_string();
    let io_error = || Error::io("write", shown.clone());
    let file = File::create(path).map_err(Error::io("create", shown.clone()))?;
    let mut out = BufWriter::new(file);
    let mut layers = Vec::with_capacity(spec.layers.len());
    let mut layer_names = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = format!("layer-{i}.tar");
        let header = ustar_header(&name, layer_tar_bytes(layer.content_bytes))?;
        out.write_all(&header).map_err(io_error())?;
        // A whole number of blocks already: no padding after it.
        layers.push(write_layer_tar(&mut out, i, layer)?);
        layer_names.push(name);
    }
    let config_bytes = config_json(&layers, &spec.label);
    let config = blob_ref(&config_bytes);
    let manifest = json!([{
        "Config": "config.json",
        "RepoTags": [repo_tag],
        "Layers": layer_names,
    }]);
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    for (name, data) in [
        ("config.json", &config_bytes),
        ("manifest.json", &manifest_bytes),
    ] {
        let header = ustar_header(name, data.len() as u64)?;
        let padding =
            (data.len() as u64).div_ceil(TAR_BLOCK_BYTES) * TAR_BLOCK_BYTES - data.len() as u64;
        (|| {
            out.write_all(&header)?;
            out.write_all(data)?;
            zeros(&mut out, padding)
        })()
        .map_err(io_error())?;
    }
    zeros(&mut out, TAR_END_BYTES).map_err(io_error())?;
    out.flush().map_err(io_error())?;
    Ok(WrittenImage {
        layers,
        config,
        manifest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::OCI_CONFIG;
    use crate::data::{random_bytes, sha256_digest};

    /// One entry of a tar, checked by hand: header checksum, fields.
    struct Entry {
        name: String,
        size: u64,
        data: Vec<u8>,
    }

    fn parse_octal(field: &[u8]) -> u64 {
        let text = std::str::from_utf8(field).unwrap();
        let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
        u64::from_str_radix(digits, 8).unwrap()
    }

    /// Checks a header the way tar does (checksum over the block with its
    /// own field read as spaces, ustar magic, a regular file of mode 0644)
    /// and returns the name and size it gives.
    fn check_header(h: &[u8]) -> (String, u64) {
        let stored = parse_octal(&h[148..156]);
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        assert_eq!(stored, sum, "header checksum");
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(&h[263..265], b"00");
        assert_eq!(h[156], b'0', "a regular file");
        assert_eq!(parse_octal(&h[100..108]), 0o644);
        let name_len = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..name_len].to_vec()).unwrap();
        (name, parse_octal(&h[124..136]))
    }

    /// Reads every entry of a tar made of regular files, checking each
    /// header, the padding and the two zero blocks at the end.
    fn parse_tar(tar: &[u8]) -> Vec<Entry> {
        assert_eq!(tar.len() % 512, 0, "a tar is whole blocks");
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            let h = &tar[at..at + 512];
            if h.iter().all(|b| *b == 0) {
                assert_eq!(tar.len() - at, 1024, "two zero blocks end the tar");
                assert!(tar[at..].iter().all(|b| *b == 0));
                return entries;
            }
            let (name, size) = check_header(h);
            let start = at + 512;
            let end = start + usize::try_from(size).unwrap();
            let padded = start + usize::try_from(size.div_ceil(512) * 512).unwrap();
            assert!(tar[end..padded].iter().all(|b| *b == 0), "padding");
            entries.push(Entry {
                name,
                size,
                data: tar[start..end].to_vec(),
            });
            at = padded;
        }
    }

    fn spec(total: u64, layers: usize) -> ImageSpec {
        ImageSpec::new(total, layers, |i| 1000 + i as u64, "test")
    }

    #[test]
    fn layer_sizes_are_unequal_and_add_up() {
        let sizes = layer_sizes(277 << 20, 5);
        assert_eq!(sizes.iter().sum::<u64>(), 277 << 20);
        let total = (277u64 << 20) as f64;
        let shares: Vec<f64> = sizes.iter().map(|s| *s as f64 / total * 100.0).collect();
        for (share, want) in shares.iter().zip([40.0, 25.0, 15.0, 12.0, 8.0]) {
            assert!((share - want).abs() < 0.01, "{shares:?}");
        }
        assert_eq!(layer_sizes(100, 0), vec![100]);
        assert_eq!(layer_sizes(3, 7).len(), 7);
        assert!(layer_sizes(3, 7).iter().all(|s| *s >= 1));
        assert_eq!(layer_sizes(1000, 7).iter().sum::<u64>(), 1000);
    }

    #[test]
    fn header_is_valid_ustar() {
        let h = ustar_header("a.bin", 1_234_567).unwrap();
        assert_eq!(check_header(&h), ("a.bin".to_owned(), 1_234_567));
        // Six octal digits, NUL, space.
        assert_eq!(h[154], 0);
        assert_eq!(h[155], b' ');
        let largest = ustar_header("big", TAR_MAX_ENTRY_BYTES).unwrap();
        assert_eq!(check_header(&largest).1, TAR_MAX_ENTRY_BYTES);
        assert!(ustar_header(&"x".repeat(101), 1).is_err());
        assert!(ustar_header("big", TAR_MAX_ENTRY_BYTES + 1).is_err());
        // An empty file: the header and the end of the archive.
        let empty = [ustar_header("e", 0).unwrap().as_slice(), &[0u8; 1024]].concat();
        let entries = parse_tar(&empty);
        assert_eq!((entries[0].name.as_str(), entries[0].size), ("e", 0));
    }

    #[test]
    fn layer_tars_round_trip() {
        // One size across a generator buffer, one odd, one below a block.
        for (i, len) in [(0usize, (1u64 << 20) + 3), (1, 4095), (2, 1)] {
            let layer = LayerSpec {
                seed: 42 + len,
                content_bytes: len,
            };
            let mut tar = Vec::new();
            let written = write_layer_tar(&mut tar, i, &layer).unwrap();
            assert_eq!(written.size, tar.len() as u64);
            assert_eq!(written.size, layer_tar_bytes(len));
            assert_eq!(written.digest, sha256_digest(&tar));
            let entries = parse_tar(&tar);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].name, layer_file_name(i));
            assert_eq!(entries[0].size, len);
            let want = random_bytes(layer.seed, usize::try_from(len).unwrap());
            assert!(entries[0].data == want, "content round-trips");
        }
    }

    #[test]
    fn oci_layout_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(300_000, 5);
        let image = write_oci_layout(dir.path(), &spec, "real").unwrap();
        let layout: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"][REF_NAME_ANNOTATION], "real");
        let blobs = dir.path().join("blobs").join("sha256");
        let read_blob = |digest: &str| fs::read(blobs.join(hex_of(digest))).unwrap();
        // Every blob's file name is its digest.
        let mut files = 0;
        for f in fs::read_dir(&blobs).unwrap() {
            let f = f.unwrap();
            let data = fs::read(f.path()).unwrap();
            assert_eq!(
                sha256_digest(&data),
                format!("sha256:{}", f.file_name().to_str().unwrap())
            );
            files += 1;
        }
        assert_eq!(files, 5 + 2);
        let manifest_digest = entry["digest"].as_str().unwrap();
        let manifest_bytes = read_blob(manifest_digest);
        assert_eq!(sha256_digest(&manifest_bytes), manifest_digest);
        assert_eq!(entry["size"], manifest_bytes.len());
        assert_eq!(image.manifest.as_ref().unwrap().digest, manifest_digest);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config: serde_json::Value = serde_json::from_slice(&read_blob(config_digest)).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert!(config["config"]["Cmd"].is_array());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 5);
        let mut content = 0;
        for (i, l) in layers.iter().enumerate() {
            assert_eq!(l["mediaType"], OCI_LAYER_TAR);
            let digest = l["digest"].as_str().unwrap();
            // Uncompressed: the diff_id is the layer's own digest.
            assert_eq!(config["rootfs"]["diff_ids"][i], digest);
            let tar = read_blob(digest);
            assert_eq!(l["size"], tar.len());
            let entries = parse_tar(&tar);
            assert_eq!(entries[0].size, spec.layers[i].content_bytes);
            content += entries[0].size;
        }
        assert_eq!(content, 300_000);
        assert_eq!(
            image.bytes(),
            image.layers.iter().map(|l| l.size).sum::<u64>()
                + image.config.size
                + manifest_bytes.len() as u64
        );
    }

    #[test]
    fn docker_archive_is_loadable_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        let image = write_docker_archive(&path, &spec(100_000, 3), "local/x:real").unwrap();
        let archive = fs::read(&path).unwrap();
        let entries = parse_tar(&archive);
        let by_name = |n: &str| &entries.iter().find(|e| e.name == n).unwrap().data;
        let manifest: serde_json::Value = serde_json::from_slice(by_name("manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "local/x:real");
        let config_bytes = by_name(manifest[0]["Config"].as_str().unwrap());
        assert_eq!(sha256_digest(config_bytes), image.docker_id());
        let config: serde_json::Value = serde_json::from_slice(config_bytes).unwrap();
        let layers = manifest[0]["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (i, name) in layers.iter().enumerate() {
            let tar = by_name(name.as_str().unwrap());
            assert_eq!(config["rootfs"]["diff_ids"][i], sha256_digest(tar));
            assert_eq!(image.layers[i].digest, sha256_digest(tar));
            assert_eq!(parse_tar(tar).len(), 1);
        }
        assert!(image.manifest.is_none());
    }

    #[test]
    fn seeds_make_images_differ() {
        let a = ImageSpec::new(10_000, 2, |i| i as u64, "a");
        let b = ImageSpec::new(10_000, 2, |i| 100 + i as u64, "b");
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ia = write_oci_layout(da.path(), &a, "t").unwrap();
        let ib = write_oci_layout(db.path(), &b, "t").unwrap();
        for (x, y) in ia.layers.iter().zip(&ib.layers) {
            assert_ne!(x.digest, y.digest);
        }
        assert_ne!(ia.config.digest, ib.config.digest);
        // The same spec gives the same bytes.
        let dc = tempfile::tempdir().unwrap();
        let ic = write_oci_layout(dc.path(), &a, "t").unwrap();
        assert_eq!(ia.manifest.unwrap().digest, ic.manifest.unwrap().digest);
    }
}
