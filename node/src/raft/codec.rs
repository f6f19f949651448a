//! How openraft values are encoded: postcard behind a format version byte,
//! in the log, in the state machine's applied mark, in snapshot metadata
//! and on the wire. postcard is positional, so any change to a stored type
//! bumps `FORMAT_VERSION` and old data is refused with a clear error
//! instead of being misread.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of everything this module encodes.
/// 2: `NodeInfo` gained the incarnation.
pub const FORMAT_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored data has format version {found}, this build reads {FORMAT_VERSION}")]
    Version { found: u8 },
    #[error("empty record")]
    Empty,
    #[error("record does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding plain data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).unwrap_or_default());
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(CodecError::Version { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let v = (7u64, "x".to_string());
        let b = encode(&v);
        assert_eq!(decode::<(u64, String)>(&b).unwrap(), v);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<(u64, String)>(&bad),
            Err(CodecError::Version { found: 9 })
        ));
        assert!(decode::<u64>(&[]).is_err());
    }
}
