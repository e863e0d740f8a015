//! Measures candidate block formats on the node_exporter-like workload:
//! bytes per sample of each, for the design in docs/design/block-format.md.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BinaryBuilder, Float64Builder, Int64Builder, ListBuilder, StringDictionaryBuilder};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use cairn_benches::workload::{Kind, Workload};
use cairn_common::chunk::XorAppender;
use cairn_common::{Labels, Sample};
use cairn_storage::block::{BlockWriter, WriteOptions, row_order};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use prost::Message;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 9)]
    targets: usize,
    /// Samples per series (480 = 2 hours at 15 s).
    #[arg(long, default_value_t = 480)]
    rounds: usize,
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
}

type LabelPairs = Vec<(String, String)>;
type SeriesData = (LabelPairs, Vec<(i64, f64)>);

fn load(w: &Workload) -> Vec<SeriesData> {
    let mut by_labels: std::collections::BTreeMap<LabelPairs, Vec<(i64, f64)>> = Default::default();
    for (body, _) in w.requests_v1(&(0..w.targets).collect::<Vec<_>>(), 100_000) {
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
        let req = cairn_proto::prometheus::WriteRequest::decode(raw.as_slice()).expect("proto");
        for ts in req.timeseries {
            let l: LabelPairs = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
            by_labels.entry(l).or_default().extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
        }
    }
    by_labels.into_iter().collect()
}

/// Label columns (one per label name, dictionary-encoded).
fn label_columns(series: &[SeriesData]) -> Vec<(String, ArrayRef)> {
    let mut names: Vec<String> = series.iter().flat_map(|s| s.0.iter().map(|l| l.0.clone())).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            for s in series {
                match s.0.iter().find(|l| l.0 == n) {
                    Some((_, v)) => b.append_value(v),
                    None => b.append_null(),
                }
            }
            (format!("l_{n}"), Arc::new(b.finish()) as ArrayRef)
        })
        .collect()
}

fn props(level: i32, encodings: &[(&[&str], Encoding)]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).expect("level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(100_000));
    for (path, enc) in encodings {
        let p = ColumnPath::from(path.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        b = b.set_column_dictionary_enabled(p.clone(), false).set_column_encoding(p, *enc);
    }
    b.build()
}

fn write(cols: Vec<(String, ArrayRef)>, props: WriterProperties) -> usize {
    let batch = RecordBatch::try_from_iter(cols).expect("batch");
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    buf.len()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let w = Workload::new(Kind::Node, a.targets, a.rounds, 15_000, 1_700_000_000_000, 11);
    let series = load(&w);
    let samples: usize = series.iter().map(|s| s.1.len()).sum();
    println!("{} series, {samples} samples", series.len());
    let per = |bytes: usize| bytes as f64 / samples as f64;

    // Baseline: Prometheus XOR chunks (120 samples each), raw bytes.
    let mut xor_total = 0;
    for (_, ss) in &series {
        for chunk in ss.chunks(120) {
            let mut app = XorAppender::new();
            for &(t, v) in chunk {
                app.append(t, v);
            }
            xor_total += app.len_bytes();
        }
    }
    println!("xor chunks alone (no labels): {:.3} B/sample", per(xor_total));

    // A: labels + one XOR chunk per series per block.
    let mut chunks = BinaryBuilder::new();
    for (_, ss) in &series {
        let mut app = XorAppender::new();
        for &(t, v) in ss {
            app.append(t, v);
        }
        chunks.append_value(app.bytes());
    }
    let mut cols = label_columns(&series);
    cols.push(("chunk".into(), Arc::new(chunks.finish())));
    println!(
        "A labels + xor chunk column: {:.3} B/sample",
        per(write(cols, props(a.zstd_level, &[(&["chunk"], Encoding::PLAIN)])))
    );

    // B: lists of timestamps (delta) and values (byte stream split).
    let mut ts = ListBuilder::new(Int64Builder::new());
    let mut vs = ListBuilder::new(Float64Builder::new());
    for (_, ss) in &series {
        for &(t, v) in ss {
            ts.values().append_value(t);
            vs.values().append_value(v);
        }
        ts.append(true);
        vs.append(true);
    }
    let mut cols = label_columns(&series);
    cols.push(("timestamps".into(), Arc::new(ts.finish())));
    cols.push(("values".into(), Arc::new(vs.finish())));
    let b = write(
        cols,
        props(
            a.zstd_level,
            &[
                (&["timestamps", "list", "item"], Encoding::DELTA_BINARY_PACKED),
                (&["values", "list", "item"], Encoding::BYTE_STREAM_SPLIT),
            ],
        ),
    );
    println!("B labels + timestamps delta + values byte-stream-split: {:.3} B/sample", per(b));

    // C: the format Cairn writes (cairn_storage::block): as B, but values
    // that are decimals stored as scaled integers (delta), plus per-series
    // time bounds; at the writer's default page size and at 1 MiB pages.
    let mut rows: Vec<(Labels, Vec<Sample>)> = series
        .iter()
        .map(|(l, ss)| {
            let labels = Labels::from_pairs(l.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            (labels, ss.iter().map(|&(t, v)| Sample::new(t, v)).collect())
        })
        .collect();
    rows.sort_by(|x, y| row_order(&x.0, &y.0));
    let names: std::collections::BTreeSet<String> =
        rows.iter().flat_map(|(l, _)| l.iter().map(|l| l.name.clone())).collect();
    for page_bytes in [WriteOptions::default().page_bytes, 1 << 20] {
        let opts = WriteOptions { zstd_level: a.zstd_level, page_bytes, ..WriteOptions::default() };
        let mut buf = Vec::new();
        let mut w = BlockWriter::new(&mut buf, "bench", names.iter().cloned(), &opts)?;
        for (l, ss) in &rows {
            w.append(l, ss)?;
        }
        w.finish()?;
        println!("C cairn block format, {} KiB pages: {:.3} B/sample", page_bytes >> 10, per(buf.len()));
    }
    Ok(())
}
