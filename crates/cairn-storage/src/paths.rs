//! The bucket layout. This module is the only place that knows it.
//!
//! ```text
//! <tenant>/blocks/<block id>/meta.json
//! <tenant>/blocks/<block id>/data.parquet
//! <tenant>/blocks/<block id>/deletion-mark.json
//! <tenant>/bucket-index/<generation, 20 digits>.json
//! ```

use cairn_common::TenantId;
use object_store::path::Path;
use ulid::Ulid;

pub fn block_dir(tenant: &TenantId, id: Ulid) -> Path {
    Path::from(format!("{tenant}/blocks/{id}"))
}

pub fn meta(tenant: &TenantId, id: Ulid) -> Path {
    block_dir(tenant, id).join("meta.json")
}

pub fn data(tenant: &TenantId, id: Ulid) -> Path {
    block_dir(tenant, id).join("data.parquet")
}

pub fn deletion_mark(tenant: &TenantId, id: Ulid) -> Path {
    block_dir(tenant, id).join("deletion-mark.json")
}

pub fn index_dir(tenant: &TenantId) -> Path {
    Path::from(format!("{tenant}/bucket-index"))
}

pub fn index(tenant: &TenantId, generation: u64) -> Path {
    index_dir(tenant).join(format!("{generation:020}.json"))
}

/// The generation of an index object's path, if it is one.
pub fn index_generation(p: &Path) -> Option<u64> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let t = TenantId::new("team-a").expect("tenant");
        let id = Ulid::from_parts(1, 2);
        assert_eq!(data(&t, id).as_ref(), format!("team-a/blocks/{id}/data.parquet"));
        assert_eq!(index(&t, 42).as_ref(), "team-a/bucket-index/00000000000000000042.json");
        assert_eq!(index_generation(&index(&t, 42)), Some(42));
    }
}
