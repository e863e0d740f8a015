//! Errors of the long-term tier.

use cairn_common::ErrorCode;
use cairn_common::status::{CodedError, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid block data: {0}")]
    Invalid(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("block {block}: {msg}")]
    Corrupt { block: String, msg: String },
    #[error("block {block} has format version {version}, newer than this Cairn reads ({supported})")]
    UnsupportedVersion { block: String, version: u32, supported: u32 },
    /// A query's read budget refused more data.
    #[error("{}", .0.message)]
    Limit(cairn_common::status::ServiceError),
    /// A block read panicked, or the read threads stopped.
    #[error("block read: {0}")]
    Executor(#[from] cairn_common::executor::ExecutorError),
    /// Object storage is failing reads, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// Whether the error says object storage itself is failing (rather
    /// than a block being bad or missing).
    pub fn is_outage(&self) -> bool {
        match self {
            Error::ObjectStore(e) => !matches!(
                e,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotModified { .. }
            ),
            Error::Io(_) | Error::Unavailable(_) => true,
            // Reads through the Parquet reader fail as its external errors.
            Error::Parquet(parquet::errors::ParquetError::External(e)) => !e
                .downcast_ref::<object_store::Error>()
                .is_some_and(|e| matches!(e, object_store::Error::NotFound { .. })),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl CodedError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Error::ObjectStore(_) | Error::Io(_) | Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Limit(e) => e.code,
            Error::Executor(cairn_common::executor::ExecutorError::ShutDown) => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    fn to_service_error(&self) -> ServiceError {
        match self {
            Error::Limit(e) => e.clone(),
            e => ServiceError::new(e.error_code(), format!("long-term storage: {e}")),
        }
    }
}

impl From<Error> for ServiceError {
    fn from(e: Error) -> Self {
        e.to_service_error()
    }
}
