//! Compiles `proto/` with protox, a protobuf compiler written in Rust, so that
//! building Cairn needs no `protoc` on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "prometheus/types.proto",
        "prometheus/remote.proto",
        "io/prometheus/write/v2/types.proto",
        "cairn/ingester/v1/ingester.proto",
        "cairn/ring/v1/ring.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    // Chunk bytes are handed on (to the decoder) without a copy.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".cairn.ingester.v1.Chunk.data")
        .compile_fds(fds)?;
    Ok(())
}
