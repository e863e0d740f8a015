//! Entry points for coverage-guided fuzzing of what the ingester reads
//! from disk and from distributors (`tests/fuzz`); the corpora are
//! replayed as ordinary tests. Each must return, whatever the bytes: no
//! panic, no unbounded memory.

use cairn_common::push::SeriesInput;

use crate::checkpoint;
use crate::head::Head;
use crate::wal::frame::{FrameReader, Next};
use crate::wal::record;

/// A WAL segment's bytes after its magic: frames, then record bodies,
/// applied to a head as replay applies them.
pub fn wal_segment(data: &[u8]) {
    let head = Head::new();
    let mut r = FrameReader::new(data, 0);
    let (mut series, mut samples, mut md) = (Vec::new(), Vec::new(), Vec::new());
    while let Next::Record(body) = r.next_record() {
        match body[0] {
            record::SERIES => {
                series.clear();
                if record::decode_series(body, &mut series).is_ok() {
                    for (r, packed) in series.drain(..) {
                        let labels = packed.to_labels();
                        let _ = head.create(labels.hash64(), &labels, Some(r));
                    }
                }
            }
            record::SAMPLES => {
                samples.clear();
                if record::decode_samples(body, &mut samples).is_ok() {
                    for &(r, t, v) in &samples {
                        if let Some(s) = head.get_by_ref(r) {
                            let mut d = s.data.lock();
                            if let crate::head::Admit::InOrder = d.admit(d.last(), t, v, 0) {
                                d.append(t, v);
                            }
                        }
                    }
                }
            }
            record::METADATA => {
                md.clear();
                let _ = record::decode_metadata(body, &mut md);
            }
            _ => {}
        }
    }
    let _ = head.time_bounds();
}

/// A gRPC `Ingester.Push` request's bytes, decoded as the ingester does
/// (labels borrowed from the request) and applied to a head: each series
/// looked up by its borrowed labels, created when new, its samples
/// admitted.
pub fn push_request(data: &[u8]) {
    let Ok(push) = cairn_rpc::codec::decode_push_borrowed(data) else { return };
    let head = Head::new();
    for s in push.series() {
        let hash = s.labels_hash();
        let series = match head.get_input(hash, &s) {
            Some(series) => series,
            None => match s.to_labels().and_then(|labels| head.create(hash, &labels, None)) {
                Ok((series, _)) => series,
                Err(_) => continue,
            },
        };
        assert!(series.labels.equals_pairs(s.label_pairs()), "found the series of other labels");
        let mut d = series.data.lock();
        for x in s.samples() {
            if let crate::head::Admit::InOrder = d.admit(d.last(), x.t, x.v, 0) {
                d.append(x.t, x.v);
            }
        }
    }
}

/// A checkpoint file's bytes.
pub fn checkpoint_file(data: &[u8]) {
    let head = Head::new();
    let _ = checkpoint::decode(data, |item| {
        if let checkpoint::Restored::Series(s) = item {
            let labels = s.labels.to_labels();
            if let Ok((series, _)) = head.create(labels.hash64(), &labels, Some(s.series_ref)) {
                *series.data.lock() = s.data;
            }
        }
    });
    // Read everything back, as a query would.
    for s in head.all_series() {
        let snap = s.data.lock().snapshot(i64::MIN, i64::MAX);
        let mut out = Vec::new();
        snap.decode_into(i64::MIN, i64::MAX, &mut out);
    }
}
