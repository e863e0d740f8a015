//! Protobuf and gRPC types, generated at build time from `proto/`.
//!
//! This is the only crate that compiles protobuf definitions. It holds no
//! logic: conversions live with the components that own the semantics.
//! Modules mirror the protobuf packages so that generated cross-package
//! references resolve; `write_v2` and `ingester` are the short names.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

/// Prometheus's remote write 1.0 and remote read messages.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

pub mod io {
    pub mod prometheus {
        pub mod write {
            pub mod v2 {
                include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
            }
        }
    }
}

pub mod cairn {
    pub mod ingester {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/cairn.ingester.v1.rs"));
        }
    }
    pub mod ring {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/cairn.ring.v1.rs"));
        }
    }
}

/// Cairn's ingester gRPC service.
pub use cairn::ingester::v1 as ingester;
/// Cairn's ring service (Raft transport, ring reads and writes).
pub use cairn::ring::v1 as ring;
/// Remote write 2.0 (`io.prometheus.write.v2`).
pub use io::prometheus::write::v2 as write_v2;

/// `Content-Type` of a remote write 2.0 body, as Prometheus sends it.
pub const RW2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
