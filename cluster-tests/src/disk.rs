//! A node's data directory seen from outside, as an operator would: which
//! chunk files it holds (named by their blake3 hash, under `chunks/ab/cd/`),
//! their sizes, the quarantine, and a way to rot a chunk on purpose. The
//! chunk names a test expects are computed from the bytes it pushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every chunk file of the node: hex name → size in bytes.
pub fn chunk_files(data_dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let root = data_dir.join("chunks");
    let Ok(level1) = std::fs::read_dir(&root) else {
        return out;
    };
    for a in level1.flatten() {
        if a.file_name().len() != 2 {
            continue; // tmp/, quarantine/
        }
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    out.insert(f.file_name().to_string_lossy().into_owned(), m.len());
                }
            }
        }
    }
    out
}

/// The chunk names of a blob pushed in one request to a node with
/// `chunk_size` (monolithic uploads cut fixed-size chunks).
pub fn chunk_names(blob: &[u8], chunk_size: usize) -> Vec<String> {
    if blob.is_empty() {
        return vec![blake3::hash(b"").to_hex().to_string()];
    }
    blob.chunks(chunk_size)
        .map(|c| blake3::hash(c).to_hex().to_string())
        .collect()
}

pub fn chunk_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("chunks")
        .join(&name[0..2])
        .join(&name[2..4])
        .join(name)
}

/// Flips one byte in the middle of a chunk file (bit rot).
pub fn corrupt_chunk(data_dir: &Path, name: &str) {
    let path = chunk_path(data_dir, name);
    let mut bytes = std::fs::read(&path).expect("chunk file readable");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&path, bytes).expect("chunk file writable");
}

/// Files in the node's quarantine.
pub fn quarantined(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("chunks").join("quarantine"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
