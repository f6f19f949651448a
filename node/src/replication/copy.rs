//! `stowage copy SRC DST`: one image (or every tag of a repository) from
//! any registry to any other, blobs HEAD-first, several at once, each
//! upload resumable, an index after its children, with a progress bar.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::client::{descriptors, BlobSource, Pushed, Remote};
use crate::error::{Error, Result};

/// Blobs copied at once.
const BLOBS_IN_FLIGHT: usize = 4;

/// `[http[s]://]HOST[:PORT]/REPO[:TAG|@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub base: String,
    pub repo: String,
    /// A tag or digest; `None`: every tag.
    pub reference: Option<String>,
}

impl ImageRef {
    /// A bare host is `https://` unless `insecure` (plain HTTP).
    pub fn parse(text: &str, insecure: bool) -> std::result::Result<ImageRef, String> {
        let bad =
            || format!("{text:?}: an image is [http[s]://]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]");
        let (scheme, rest) = match text.split_once("://") {
            Some((s @ ("http" | "https"), r)) => (s, r),
            Some(_) => return Err(bad()),
            None => (if insecure { "http" } else { "https" }, text),
        };
        let (host, path) = rest.split_once('/').ok_or_else(bad)?;
        if host.is_empty() || path.is_empty() {
            return Err(bad());
        }
        let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
            (r, Some(d.to_owned()))
        } else {
            match path.rsplit_once(':') {
                // A colon after the last slash is a tag.
                Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
                _ => (path, None),
            }
        };
        stowage_storage::types::RepoName::parse(repo).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(ImageRef {
            base: format!("{scheme}://{host}"),
            repo: repo.to_owned(),
            reference,
        })
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub tags: Vec<String>,
    pub manifests: u64,
    pub blobs_uploaded: u64,
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    pub bytes_uploaded: u64,
    pub resumed_pieces: u64,
}

struct RemoteBlob<'a> {
    remote: &'a Remote,
    repo: &'a str,
    digest: &'a str,
}

impl BlobSource for RemoteBlob<'_> {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        self.remote
            .blob_range(self.repo, self.digest, offset, len)
            .await
    }
}

pub struct Copier<'a> {
    pub src: &'a Remote,
    pub dst: &'a Remote,
    /// Called with bytes as they are copied (a progress bar), and with the
    /// size of each blob before it starts.
    pub progress: &'a (dyn Fn(u64) + Sync),
    pub grow: &'a (dyn Fn(u64) + Sync),
}

impl Copier<'_> {
    /// Copies `reference` of `src_repo` to `dst_repo` under `dst_ref`
    /// (children and blobs first); returns the manifest's digest.
    pub async fn image(
        &self,
        src_repo: &str,
        dst_repo: &str,
        reference: &str,
        dst_ref: &str,
        report: &mut CopyReport,
    ) -> Result<String> {
        let Some((media_type, bytes)) = self.src.manifest(src_repo, reference).await? else {
            return Err(Error::Remote(format!(
                "{}/{src_repo}:{reference} does not exist",
                self.src.base
            )));
        };
        let all = descriptors(&bytes);
        // Children of an index first (each with its own blobs).
        for (digest, _, _) in all.iter().filter(|d| d.2) {
            Box::pin(self.image(src_repo, dst_repo, digest, digest, report)).await?;
        }
        let blobs: Vec<(String, u64)> = all
            .iter()
            .filter(|d| !d.2)
            .map(|d| (d.0.clone(), d.1))
            .collect();
        (self.grow)(blobs.iter().map(|b| b.1).sum());
        let uploaded = AtomicU64::new(0);
        let results: Vec<Pushed> = stream::iter(blobs.iter())
            .map(|(digest, size)| {
                let source = RemoteBlob {
                    remote: self.src,
                    repo: src_repo,
                    digest,
                };
                let uploaded = &uploaded;
                async move {
                    let p = self
                        .dst
                        .push_blob(dst_repo, digest, *size, None, &source, self.progress)
                        .await?;
                    if let Pushed::Uploaded { bytes, .. } = p {
                        uploaded.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Ok::<_, Error>(p)
                }
            })
            .buffer_unordered(BLOBS_IN_FLIGHT)
            .try_collect()
            .await?;
        for p in results {
            match p {
                Pushed::Present => report.blobs_present += 1,
                Pushed::Mounted => report.blobs_mounted += 1,
                Pushed::Uploaded { resumed, .. } => {
                    report.blobs_uploaded += 1;
                    report.resumed_pieces += u64::from(resumed);
                }
            }
        }
        report.bytes_uploaded += uploaded.load(Ordering::Relaxed);
        let digest = stowage_storage::types::Digest::of(
            stowage_storage::types::DigestAlgorithm::Sha256,
            &bytes,
        )
        .to_string();
        // The very bytes fetched, under the one reference asked for.
        self.dst
            .put_manifest(dst_repo, dst_ref, &media_type, bytes)
            .await?;
        report.manifests += 1;
        Ok(digest)
    }

    /// Copies `src` to `dst`: one reference, or every tag of the repository.
    pub async fn copy(&self, src: &ImageRef, dst: &ImageRef) -> Result<CopyReport> {
        let mut report = CopyReport::default();
        let refs = match &src.reference {
            Some(r) => vec![r.clone()],
            None => self.src.tags(&src.repo).await?,
        };
        for r in refs {
            let target = match (&src.reference, &dst.reference) {
                (Some(_), Some(d)) => d.clone(),
                _ => r.clone(),
            };
            self.image(&src.repo, &dst.repo, &r, &target, &mut report)
                .await?;
            report.tags.push(target);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_parse_like_docker_s() {
        let r = ImageRef::parse("http://127.0.0.1:5000/team/app:v1", false).unwrap();
        assert_eq!(
            (r.base.as_str(), r.repo.as_str(), r.reference.as_deref()),
            ("http://127.0.0.1:5000", "team/app", Some("v1"))
        );
        let r = ImageRef::parse("registry.example:443/app", false).unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference),
            ("https://registry.example:443", None)
        );
        let r = ImageRef::parse("localhost:5000/app@sha256:abc", true).unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference.as_deref()),
            ("http://localhost:5000", Some("sha256:abc"))
        );
        assert!(ImageRef::parse("ftp://x/app", false).is_err());
        assert!(ImageRef::parse("justahost", false).is_err());
        assert!(ImageRef::parse("host/Bad", false).is_err());
    }
}

/// `stowage copy`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The source: [http[s]://]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]; no tag
    /// or digest copies every tag.
    pub src: String,
    /// The destination: [http[s]://]HOST[:PORT]/REPOSITORY[:TAG].
    pub dst: String,
    /// Plain HTTP for a source given without a scheme.
    #[arg(long)]
    pub src_insecure: bool,
    /// Plain HTTP for a destination given without a scheme.
    #[arg(long)]
    pub dest_insecure: bool,
    /// The source's account (its password from --src-password-file or
    /// $STOWAGE_SRC_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub src_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub src_password_file: Option<std::path::PathBuf>,
    /// The destination's account (--dest-password-file or
    /// $STOWAGE_DEST_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub dest_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub dest_password_file: Option<std::path::PathBuf>,
    /// A CA (PEM) that https:// registries' certificates are checked
    /// against, besides the system's roots.
    #[arg(long, value_name = "FILE", env = "STOWAGE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn password(file: Option<&std::path::Path>, env: &str) -> anyhow::Result<String> {
    match file {
        Some(f) => Ok(std::fs::read_to_string(f)?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()),
        None => std::env::var(env)
            .map_err(|_| anyhow::anyhow!("give the password with a file or ${env}")),
    }
}

pub async fn cli(args: CopyArgs) -> anyhow::Result<()> {
    let src = ImageRef::parse(&args.src, args.src_insecure).map_err(anyhow::Error::msg)?;
    let dst = ImageRef::parse(&args.dst, args.dest_insecure).map_err(anyhow::Error::msg)?;
    if src.reference.is_none() && dst.reference.is_some() {
        anyhow::bail!(
            "copying every tag of {} needs a destination without a tag",
            src.repo
        );
    }
    let client = crate::cli::registry_client(args.ca_file.as_deref())?;
    let src_pw = match &args.src_user {
        Some(_) => Some(password(
            args.src_password_file.as_deref(),
            "STOWAGE_SRC_PASSWORD",
        )?),
        None => None,
    };
    let dst_pw = match &args.dest_user {
        Some(_) => Some(password(
            args.dest_password_file.as_deref(),
            "STOWAGE_DEST_PASSWORD",
        )?),
        None => None,
    };
    let creds = |u: &Option<String>, p: &Option<String>| match (u, p) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let (sc, dc) = (
        creds(&args.src_user, &src_pw),
        creds(&args.dest_user, &dst_pw),
    );
    let src_remote = Remote::new(
        &src.base,
        sc.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        client.clone(),
    );
    let dst_remote = Remote::new(
        &dst.base,
        dc.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        client,
    );
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(format!("{} -> {}", args.src, args.dst));
        b
    };
    let inc = |n: u64| bar.inc(n);
    let grow = |n: u64| bar.inc_length(n);
    let copier = Copier {
        src: &src_remote,
        dst: &dst_remote,
        progress: &inc,
        grow: &grow,
    };
    let report = copier.copy(&src, &dst).await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "copied {} ({} manifests): {} blobs uploaded ({} bytes), {} already there, {} mounted{}",
            report.tags.join(", "),
            report.manifests,
            report.blobs_uploaded,
            report.bytes_uploaded,
            report.blobs_present,
            report.blobs_mounted,
            if report.resumed_pieces > 0 {
                format!(", {} pieces resumed after failures", report.resumed_pieces)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
