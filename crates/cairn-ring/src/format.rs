//! Format versions of what the ring sends and stores.
//!
//! Raft messages, ring commands and ring reads carry the sender's format;
//! log entries and metadata in redb start with a version byte; snapshots
//! have a `format` field. Whatever this build cannot read is refused with an
//! error naming both versions, never misread. Version 0 is what builds
//! before versioning wrote (plain JSON) and is read as it is.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format of messages between ring members and readers.
pub const MESSAGE_FORMAT: u32 = 1;
/// Format of log entries and metadata values in redb.
pub const LOG_FORMAT: u8 = 1;
/// Format of snapshots (`snapshot.json`, and InstallSnapshot's data).
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{what} has format version {found}, newer than this build reads ({supported}): upgrade this node")]
    TooNew { what: &'static str, found: u32, supported: u32 },
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
}

/// Refuses a message whose sender's format is newer than this build's.
pub fn check_message(what: &'static str, found: u32) -> Result<(), FormatError> {
    if found > MESSAGE_FORMAT {
        return Err(FormatError::TooNew { what, found, supported: MESSAGE_FORMAT });
    }
    Ok(())
}

/// A value as stored in redb: the version byte, then JSON.
pub fn encode_stored<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![LOG_FORMAT];
    serde_json::to_writer(&mut out, v)?;
    Ok(out)
}

/// Reads a value stored by [`encode_stored`], or by a build before
/// versioning (plain JSON, which never starts with a byte below 0x09).
pub fn decode_stored<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, FormatError> {
    let json = match bytes.first() {
        None => return Err(FormatError::Empty { what }),
        Some(&LOG_FORMAT) => &bytes[1..],
        Some(&v) if v < 0x09 => {
            return Err(FormatError::TooNew { what, found: u32::from(v), supported: LOG_FORMAT.into() });
        }
        Some(_) => bytes,
    };
    serde_json::from_slice(json).map_err(|source| FormatError::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_of_every_version_are_read_and_newer_ones_refused() {
        let v = vec![1u64, 2, 3];
        let now = encode_stored(&v).expect("encode");
        assert_eq!(now[0], LOG_FORMAT);
        assert_eq!(decode_stored::<Vec<u64>>("entry", &now).expect("current"), v);
        let legacy = serde_json::to_vec(&v).expect("json");
        assert_eq!(decode_stored::<Vec<u64>>("entry", &legacy).expect("version 0"), v);
        let null = serde_json::to_vec(&Option::<u64>::None).expect("json");
        assert_eq!(decode_stored::<Option<u64>>("entry", &null).expect("version 0 null"), None);
        let mut newer = now.clone();
        newer[0] = LOG_FORMAT + 1;
        let e = decode_stored::<Vec<u64>>("log entry 7", &newer).expect_err("newer");
        assert_eq!(
            e.to_string(),
            "log entry 7 has format version 2, newer than this build reads (1): upgrade this node"
        );
        assert!(matches!(decode_stored::<Vec<u64>>("x", &[]), Err(FormatError::Empty { .. })));
        assert!(check_message("AppendEntries", MESSAGE_FORMAT).is_ok());
        assert!(check_message("AppendEntries", 0).is_ok(), "builds before versioning");
        assert!(check_message("AppendEntries", MESSAGE_FORMAT + 1).is_err());
    }
}
