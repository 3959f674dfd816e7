//! The versioned binary encoding of everything the store writes: one format
//! byte, then the value in postcard. A reader refuses a format it does not
//! know instead of misreading it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The format byte written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` behind the format byte.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    postcard::to_io(value, &mut out).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| Error::Decode {
            what,
            reason: e.to_string(),
        }),
        Some((v, _)) => Err(Error::Decode {
            what,
            reason: format!("unknown format version {v} (this build reads {FORMAT_VERSION})"),
        }),
        None => Err(Error::Decode {
            what,
            reason: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Op, Txn};

    #[test]
    fn round_trip_and_version_check() {
        let cmd = Command::Txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: "a".into(),
                value: b"v".to_vec(),
            }],
        });
        let bytes = encode("command", &cmd).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: Command = decode("command", &bytes).expect("decode");
        assert_eq!(back, cmd);

        let mut other = bytes.clone();
        other[0] = 9;
        let err = decode::<Command>("command", &other).expect_err("version 9 is unknown");
        assert!(
            err.to_string().contains("unknown format version 9"),
            "{err}"
        );
        assert!(decode::<Command>("command", &[]).is_err());
    }
}
