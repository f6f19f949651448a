//! Identifiers that validate on construction: a `Digest`, `RepoName`, `Tag`,
//! `ChunkId`, `NodeId` or `Zone` that exists is well formed, so bad input dies
//! at the edge with a clear error instead of deep inside the store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Longest repository name accepted. Clients cap `host/name` at 255
/// characters, so a longer name could never be pulled anyway.
pub const MAX_REPO_NAME_LEN: usize = 255;

/// Content digest algorithms the registry computes and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> DigestHasher {
        match self {
            DigestAlgorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// An OCI content digest such as `sha256:e3b0…`, kept in its canonical string
/// form so that keys, headers and JSON never re-format it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: DigestAlgorithm,
    text: String,
}

impl Digest {
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidDigest {
            input: input.chars().take(200).collect(),
            reason,
        };
        let (algo, hex) = input
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = match algo {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm (sha256 and sha512 are)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(
                "encoded part has the wrong length for its algorithm",
            ));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            text: input.to_owned(),
        })
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, data: &[u8]) -> Self {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hex part after `algorithm:`.
    pub fn encoded(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.text
    }
}

/// Incremental hashing for either supported algorithm.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            DigestHasher::Sha256(_) => DigestAlgorithm::Sha256,
            DigestHasher::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    /// The hash state, to resume hashing in a later request or after a
    /// restart; the first byte names the algorithm.
    pub fn to_state(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        let (tag, state) = match self {
            DigestHasher::Sha256(h) => (0u8, h.serialize().to_vec()),
            DigestHasher::Sha512(h) => (1u8, h.serialize().to_vec()),
        };
        let mut out = Vec::with_capacity(1 + state.len());
        out.push(tag);
        out.extend_from_slice(&state);
        out
    }

    pub fn from_state(bytes: &[u8]) -> Result<Self> {
        use sha2::digest::common::hazmat::SerializableState;
        let bad = || Error::SnapshotFormat("hash state does not decode");
        let (tag, state) = bytes.split_first().ok_or_else(bad)?;
        match tag {
            0 => sha2::Sha256::deserialize(state.try_into().map_err(|_| bad())?)
                .map(DigestHasher::Sha256)
                .map_err(|_| bad()),
            1 => sha2::Sha512::deserialize(state.try_into().map_err(|_| bad())?)
                .map(DigestHasher::Sha512)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (DigestAlgorithm::Sha256, hex::encode(h.finalize())),
            DigestHasher::Sha512(h) => (DigestAlgorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.name()),
        }
    }
}

/// A repository name per the distribution-spec grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidName {
            input: input.chars().take(300).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if input.len() > MAX_REPO_NAME_LEN {
            return Err(invalid("longer than 255 characters"));
        }
        for component in input.split('/') {
            if !valid_component(component) {
                return Err(invalid(
                    "each path component must be lowercase alphanumerics joined by '.', '_', '__' or dashes",
                ));
            }
        }
        Ok(RepoName(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl TryFrom<String> for RepoName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        RepoName::parse(&s)
    }
}

impl From<RepoName> for String {
    fn from(n: RepoName) -> String {
        n.0
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn parse(input: &str) -> Result<Self> {
        let b = input.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .skip(1)
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(Error::InvalidTag {
                input: input.chars().take(200).collect(),
            });
        }
        Ok(Tag(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl TryFrom<String> for Tag {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Tag::parse(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

/// The `<reference>` of a manifest path: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self> {
        if input.contains(':') {
            Digest::parse(input).map(Reference::Digest)
        } else {
            Tag::parse(input).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The blake3 hash that names a chunk file; chunks are stored once per node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkId(bytes)
    }

    pub fn parse(hex_text: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut out).map_err(|_| Error::InvalidChunkId {
            input: hex_text.chars().take(80).collect(),
        })?;
        Ok(ChunkId(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

/// Names an upload session and the node that owns it (`<node>-<32 hex>`), so
/// any node can route the session's requests to its owner.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId {
    owner: NodeId,
    text: String,
}

impl UploadId {
    pub fn new(owner: NodeId) -> Self {
        UploadId {
            owner,
            text: format!("{}-{}", owner.0, uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn parse(input: &str) -> Result<Self> {
        let invalid = || Error::InvalidUploadId {
            input: input.chars().take(100).collect(),
        };
        let (owner, rest) = input.split_once('-').ok_or_else(invalid)?;
        let owner: NodeId = owner.parse().map_err(|_| invalid())?;
        if rest.len() != 32 || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(UploadId {
            owner,
            text: input.to_owned(),
        })
    }

    pub fn owner(&self) -> NodeId {
        self.owner
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for UploadId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        UploadId::parse(&s)
    }
}

impl From<UploadId> for String {
    fn from(u: UploadId) -> String {
        u.text
    }
}

/// A cluster member's id; 1-based by convention, never 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl From<u64> for NodeId {
    fn from(n: u64) -> Self {
        NodeId(n)
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(NodeId(n)),
            _ => Err(Error::InvalidNodeId { input: s.into() }),
        }
    }
}

/// A failure domain (a rack, a building, a cloud zone): placement keeps
/// copies in distinct zones first.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(String);

impl Zone {
    pub fn parse(input: &str) -> Result<Self> {
        let ok = !input.is_empty()
            && input.len() <= 63
            && input
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Error::InvalidZone {
                input: input.chars().take(80).collect(),
            });
        }
        Ok(Zone(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone("default".into())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Zone::parse(s)
    }
}

impl TryFrom<String> for Zone {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Zone::parse(&s)
    }
}

impl From<Zone> for String {
    fn from(z: Zone) -> String {
        z.0
    }
}

/// A user or robot account name: 1-64 of `[a-z0-9._-]`, starting with a
/// letter or digit. `anonymous` and `authenticated` are taken: they name
/// the groups access rules grant to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

/// Names access rules use for every caller and for every signed-in one.
pub const RESERVED_ACCOUNT_NAMES: [&str; 2] = ["anonymous", "authenticated"];

impl AccountName {
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidAccount {
            input: input.chars().take(100).collect(),
            reason,
        };
        let b = input.as_bytes();
        if b.is_empty() || b.len() > 64 {
            return Err(bad("must be 1-64 characters"));
        }
        if !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
            return Err(bad("must start with a lowercase letter or a digit"));
        }
        if !b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        }) {
            return Err(bad("may hold only a-z, 0-9, '.', '_' and '-'"));
        }
        if RESERVED_ACCOUNT_NAMES.contains(&input) {
            return Err(bad("is reserved for access rules"));
        }
        Ok(AccountName(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl TryFrom<String> for AccountName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        AccountName::parse(&s)
    }
}

impl From<AccountName> for String {
    fn from(n: AccountName) -> String {
        n.0
    }
}

impl FromStr for AccountName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AccountName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn account_names_validate() {
        for ok in ["admin", "ci-bot", "a.b_c", "0day"] {
            assert!(super::AccountName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Admin",
            "-x",
            "a b",
            "anonymous",
            "authenticated",
            &"a".repeat(65),
        ] {
            assert!(super::AccountName::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn repo_names_follow_the_spec_grammar() {
        for ok in [
            "a",
            "library/ubuntu",
            "a/b/c/d",
            "my-org/my_repo",
            "a__b",
            "a---b",
            "a.b/c-d/e_f",
            "0/1",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a___b", "a..b", "a._b", "a b", "a/B", "a:b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad} should be invalid");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_validate_algorithm_and_hex() {
        let d = Digest::of(DigestAlgorithm::Sha256, b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        let d512 = Digest::of(DigestAlgorithm::Sha512, b"abc");
        assert_eq!(
            Digest::parse(d512.as_str()).unwrap().algorithm(),
            DigestAlgorithm::Sha512
        );
        for bad in [
            "sha256",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(Digest::of(DigestAlgorithm::Sha256, b"x").as_str()),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:zz").is_err());
    }

    #[test]
    fn hasher_state_resumes() {
        for algo in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            let mut h = algo.hasher();
            h.update(b"hello ");
            let mut h = DigestHasher::from_state(&h.to_state()).unwrap();
            h.update(b"world");
            assert_eq!(h.finish(), Digest::of(algo, b"hello world"));
        }
        assert!(DigestHasher::from_state(b"\x00short").is_err());
    }

    #[test]
    fn upload_ids_name_their_owner() {
        let id = UploadId::new(NodeId(7));
        let back = UploadId::parse(id.as_str()).unwrap();
        assert_eq!(back.owner(), NodeId(7));
        for bad in [
            "",
            "7",
            "x-0123",
            "0-00000000000000000000000000000000",
            "7-zz",
        ] {
            assert!(UploadId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trips_validate() {
        let z: Zone = serde_json::from_str("\"zone-a\"").unwrap();
        assert_eq!(z.as_str(), "zone-a");
        assert!(serde_json::from_str::<Zone>("\"bad zone\"").is_err());
        assert!(serde_json::from_str::<RepoName>("\"Bad\"").is_err());
    }
}
