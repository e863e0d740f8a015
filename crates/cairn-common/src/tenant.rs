//! Tenant ids. They become object-store path segments and file names, so
//! they are restricted to a safe alphabet.

use std::fmt;
use std::sync::Arc;

/// The tenant used when a request carries no `X-Scope-OrgID` header.
pub const DEFAULT_TENANT: &str = "anonymous";
/// The HTTP header that carries the tenant, as in Cortex and Mimir.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// Longest accepted tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 150;

/// A validated tenant id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_LEN} bytes")]
    TooLong,
    #[error("tenant id {0:?} is not allowed")]
    Reserved(String),
    #[error("tenant id {id:?} contains {ch:?}: only letters, digits and !-_.*'() are allowed")]
    BadChar { id: String, ch: char },
}

impl TenantId {
    /// Validates a tenant id: 1 to 150 bytes of `[A-Za-z0-9!-_.*'()]`, not
    /// `.` or `..`, and not starting with `__` (reserved for Cairn).
    pub fn new(id: &str) -> Result<Self, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong);
        }
        if id == "." || id == ".." || id.starts_with("__") {
            return Err(TenantError::Reserved(id.to_owned()));
        }
        if let Some(ch) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c))) {
            return Err(TenantError::BadChar { id: id.to_owned(), ch });
        }
        Ok(Self(id.into()))
    }

    /// The tenant of a request: the header's value, or `anonymous`.
    pub fn from_header(value: Option<&str>) -> Result<Self, TenantError> {
        Self::new(value.unwrap_or(DEFAULT_TENANT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_ids() {
        for id in ["anonymous", "team-a", "Tenant_1.prod", "a*b'c(d)!"] {
            assert_eq!(TenantId::new(id).expect(id).as_str(), id);
        }
        assert_eq!(TenantId::from_header(None).expect("default").as_str(), "anonymous");
    }

    #[test]
    fn rejects_path_tricks_and_odd_characters() {
        assert_eq!(TenantId::new(""), Err(TenantError::Empty));
        assert!(matches!(TenantId::new(".."), Err(TenantError::Reserved(_))));
        assert!(matches!(TenantId::new("__system"), Err(TenantError::Reserved(_))));
        assert!(matches!(TenantId::new("a/b"), Err(TenantError::BadChar { ch: '/', .. })));
        assert!(matches!(TenantId::new("a b"), Err(TenantError::BadChar { ch: ' ', .. })));
        assert!(matches!(TenantId::new("é"), Err(TenantError::BadChar { .. })));
        assert_eq!(TenantId::new(&"a".repeat(151)), Err(TenantError::TooLong));
    }
}
