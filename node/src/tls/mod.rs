//! TLS on the registry (OCI HTTP) port: the rustls server configuration
//! built from the PEM files `tls_cert_file` and `tls_key_file`, and its
//! reload on SIGHUP, which new connections pick up while open ones keep
//! the configuration they were accepted with.
//!
//! Layout: this file (loading, the reloadable configuration, errors),
//! `certs.rs` (the cluster CA and the node certificates `stowage cert`
//! makes).

pub mod certs;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// What can go wrong loading or making certificates. It never reaches the
/// HTTP edge: a bad file stops start-up, is logged on reload, or fails a
/// `stowage cert` command.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("cannot use the certificate in {cert} with the key in {key}: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set the mode of {path}: {source}")]
    Mode {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; remove it first to make a new CA (certificates it signed stop being trusted)")]
    Exists { path: PathBuf },
    #[error("a node certificate needs at least one --dns name or --ip address")]
    NoNames,
    #[error("invalid DNS name {name:?}: {source}")]
    DnsName { name: String, source: rcgen::Error },
    #[error("making the certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Write(#[from] stowage_storage::Error),
}

/// The certificate chain and key files a node serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads both files and builds a server configuration offering HTTP/2 and
/// HTTP/1.1 by ALPN (hyper-util's auto builder serves either).
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect())
        .map_err(|source| TlsError::Pem {
            what: "tls_cert_file",
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "tls_cert_file",
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        what: "tls_key_file",
        path: files.key.clone(),
        source,
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    // ring explicitly, not the process default: nothing else installs one
    // in the node, and aws-lc would need a C toolchain.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        // This also checks that the key is the certificate's, so a cert
        // replaced without its key is refused rather than served broken.
        .with_single_cert(chain, key)
        .map_err(unusable)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA in `ca` (PEM): how a node
/// reaches its peers' HTTPS ports (upload forwarding).
pub fn client_trusting(ca: &std::path::Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect())
        .map_err(|source| TlsError::Pem {
            what: "cluster_tls_ca_file",
            path: ca.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "cluster_tls_ca_file",
            path: ca.to_path_buf(),
        });
    }
    let bad = |source| TlsError::Unusable {
        cert: ca.to_path_buf(),
        key: ca.to_path_buf(),
        source,
    };
    for c in certs {
        roots.add(c).map_err(bad)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration for other registries (replication targets,
/// mirror upstreams, `stowage copy`): the system's roots, plus `extra`
/// (a private CA) if given.
pub fn client_for_registries(
    extra: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        // A system root rustls cannot use is skipped, as browsers do.
        let _ = roots.add(c);
    }
    if let Some(ca) = extra {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect())
            .map_err(|source| TlsError::Pem {
                what: "CA file",
                path: ca.to_path_buf(),
                source,
            })?;
        for c in certs {
            roots.add(c).map_err(|source| TlsError::Unusable {
                cert: ca.to_path_buf(),
                key: ca.to_path_buf(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Unusable {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that trusts no certificate (the CLI without
/// `--ca-file`: an https node then fails with a certificate error).
pub fn client_trusting_nothing() -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Unusable {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            source,
        })?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// The configuration new connections are accepted with, replaced on
/// reload. A connection takes its own `Arc` when accepted, so replacing
/// this one never disturbs connections already open.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files once; a node with bad files does not start.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = load(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(config),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads both files again; on any error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::certs::{self, NodeNames};
    use super::*;

    fn issue(dir: &std::path::Path, id: u64) -> TlsFiles {
        certs::init_ca(dir).unwrap();
        let names = NodeNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let issued = certs::issue_node(dir, id, &names).unwrap();
        TlsFiles {
            cert: issued.cert,
            key: issued.key,
        }
    }

    #[test]
    fn loads_what_cert_node_makes_and_offers_h2_then_http1() {
        let tmp = tempfile::tempdir().unwrap();
        let files = issue(tmp.path(), 1);
        let config = load(&files).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_reload_keeps_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let a = issue(&tmp.path().join("a"), 1);
        let b = issue(&tmp.path().join("b"), 1);

        // A key that is not the certificate's.
        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load(&mismatched).unwrap_err();
        assert!(matches!(e, TlsError::Unusable { .. }), "{e}");

        let missing = TlsFiles {
            cert: tmp.path().join("nope.pem"),
            key: a.key.clone(),
        };
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("tls_cert_file") && e.contains("nope.pem"), "{e}");

        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(&garbage, "not a pem file\n").unwrap();
        let e = load(&TlsFiles {
            cert: garbage.clone(),
            key: a.key.clone(),
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = load(&TlsFiles {
            cert: a.cert.clone(),
            key: garbage,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls_key_file"), "{e}");

        let tls = Tls::load(a.clone()).unwrap();
        let before = tls.current();
        std::fs::write(&a.key, "broken\n").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current()), "the old config stays");
        std::fs::copy(&b.cert, &a.cert).unwrap();
        std::fs::copy(&b.key, &a.key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current()));
    }
}
