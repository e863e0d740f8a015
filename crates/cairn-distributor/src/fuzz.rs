//! Entry points for coverage-guided fuzzing of what the distributor reads
//! from the network (`tests/fuzz`); the corpora are replayed as ordinary
//! tests. Each must return, whatever the bytes: no panic, no unbounded
//! memory.

use crate::config::ValidationConfig;
use cairn_common::wire;

use crate::{http, validate};

/// A remote write body as it arrives: snappy, then protobuf of either
/// version, then validation. The first byte picks the version, so that one
/// corpus covers both.
pub fn remote_write(data: &[u8]) {
    let Some((&version, body)) = data.split_first() else { return };
    // A small limit: the lying-length check must hold whatever the header.
    let Ok(decompressed) = http::decompress(body, 1 << 20) else { return };
    let raw = if version % 2 == 0 { wire::decode_v1(&decompressed) } else { wire::decode_v2(&decompressed) };
    if let Ok(raw) = raw {
        let _ = validate::validate(raw, &ValidationConfig::default(), 1_700_000_000_000);
    }
}

/// An uncompressed remote write body of either version (the first byte
/// picks), decoded and validated: reaches the protobuf decoder without
/// the fuzzer having to produce valid snappy.
pub fn remote_write_protobuf(data: &[u8]) {
    let Some((&version, body)) = data.split_first() else { return };
    let raw = if version % 2 == 0 { wire::decode_v1(body) } else { wire::decode_v2(body) };
    if let Ok(raw) = raw {
        let _ = validate::validate(raw, &ValidationConfig::default(), 1_700_000_000_000);
    }
}
