//! The cluster's own certificate authority and the node certificates it
//! signs (`stowage cert init`, `stowage cert node`): ECDSA P-256 keys made
//! with rcgen over ring, every file written through the durable write
//! path, key files with mode 0600 from the moment they exist.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use stowage_storage::durable::{create_dir_durable, TempFile};

use super::TlsError;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The CA outlives many node certificates, and replacing it means
/// redistributing trust to every client.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Node certificates are cheap to reissue (`cert node` and a SIGHUP);
/// 825 days is the longest lifetime Apple's clients accept.
const NODE_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// Certificates start a day back, so a client whose clock is somewhat
/// behind the issuing machine's still accepts a fresh one.
const BACKDATE: Duration = DAY;

pub fn node_cert_file(id: u64) -> String {
    format!("node-{id}.pem")
}

pub fn node_key_file(id: u64) -> String {
    format!("node-{id}-key.pem")
}

/// The two files a command wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The names a node certificate is valid for.
#[derive(Debug, Clone, Default)]
pub struct NodeNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Makes a new CA in `dir`; refuses if one is there, since replacing it
/// would silently orphan every certificate it signed.
pub fn init_ca(dir: &Path) -> Result<Issued, TlsError> {
    let issued = Issued {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    for path in [&issued.cert, &issued.key] {
        if path.exists() {
            return Err(TlsError::Exists { path: path.clone() });
        }
    }
    create_dir_durable(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stowage");
    dn.push(DnType::CommonName, "Stowage cluster CA");
    params.distinguished_name = dn;
    // It signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    // The key first: a CA certificate without its key is useless, the
    // reverse is merely incomplete.
    write(dir, &issued.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write(dir, &issued.cert, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(issued)
}

/// Makes node `id`'s certificate and key, signed by the CA in `dir`,
/// replacing any previous ones atomically (so a node reloading on SIGHUP
/// reads either the old pair or the new).
pub fn issue_node(dir: &Path, id: u64, names: &NodeNames) -> Result<Issued, TlsError> {
    if names.dns.is_empty() && names.ips.is_empty() {
        return Err(TlsError::NoNames);
    }
    let ca_cert = read(&dir.join(CA_CERT_FILE))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join(CA_KEY_FILE))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stowage");
    dn.push(DnType::CommonName, format!("stowage node {id}"));
    params.distinguished_name = dn;
    for name in &names.dns {
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|source| TlsError::DnsName {
                name: name.clone(),
                source,
            })?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params
        .subject_alt_names
        .extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client auth too, so the same certificate can serve for mutual TLS
    // between nodes later.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let issued = Issued {
        cert: dir.join(node_cert_file(id)),
        key: dir.join(node_key_file(id)),
    };
    write(dir, &issued.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write(dir, &issued.cert, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(issued)
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

/// Only the owner reads a private key.
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Durably, with the mode set on the temp file before any byte is in it,
/// so a key is never readable by others even for a moment.
fn write(dir: &Path, dest: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp = TempFile::create_in(dir)?;
    tmp.as_file_mut()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|source| TlsError::Mode {
            path: dest.to_path_buf(),
            source,
        })?;
    tmp.write_all(data)?;
    tmp.persist(dest)?;
    Ok(())
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_to_replace_a_ca_and_keys_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let ca = init_ca(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&ca.cert), 0o644);
        let before = std::fs::read(&ca.key).unwrap();
        assert!(matches!(init_ca(&dir), Err(TlsError::Exists { .. })));
        assert_eq!(
            std::fs::read(&ca.key).unwrap(),
            before,
            "the CA is untouched"
        );

        let names = NodeNames {
            dns: vec!["reg.example".into()],
            ips: vec![],
        };
        let node = issue_node(&dir, 3, &names).unwrap();
        assert!(node.cert.ends_with("node-3.pem") && node.key.ends_with("node-3-key.pem"));
        assert_eq!(mode(&node.key), 0o600);
        // Reissuing replaces the pair.
        let first = std::fs::read(&node.cert).unwrap();
        issue_node(&dir, 3, &names).unwrap();
        assert_ne!(std::fs::read(&node.cert).unwrap(), first);
    }

    #[test]
    fn a_node_certificate_needs_a_name_and_a_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let names = NodeNames {
            dns: vec!["localhost".into()],
            ips: vec![],
        };
        let e = issue_node(tmp.path(), 1, &names).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        init_ca(tmp.path()).unwrap();
        assert!(matches!(
            issue_node(tmp.path(), 1, &NodeNames::default()),
            Err(TlsError::NoNames)
        ));
    }
}
