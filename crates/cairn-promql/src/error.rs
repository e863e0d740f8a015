//! Query errors, classified as Prometheus classifies them.

use cairn_common::ErrorCode;
use cairn_common::status::{CodedError, ServiceError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The query cannot be parsed or its parameters are invalid.
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (Prometheus's 422 "execution" errors).
    #[error("{0}")]
    Execution(String),
    /// A limit was hit; the message names the limit and its flag.
    #[error("{0}")]
    Limit(String),
    /// Other queries hold the memory this one needs; retrying later may
    /// succeed.
    #[error("{0}")]
    Busy(String),
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    #[error("query was canceled")]
    Canceled,
    #[error("{0}")]
    Storage(ServiceError),
}

impl CodedError for EvalError {
    fn error_code(&self) -> ErrorCode {
        match self {
            EvalError::BadData(_) => ErrorCode::BadData,
            EvalError::Execution(_) | EvalError::Limit(_) => ErrorCode::Execution,
            EvalError::Busy(_) => ErrorCode::Unavailable,
            EvalError::Timeout(_) => ErrorCode::Timeout,
            EvalError::Canceled => ErrorCode::Canceled,
            EvalError::Storage(e) => match e.code {
                // Storage refusing for size is a query limit.
                ErrorCode::TooManyRequests => ErrorCode::Execution,
                c => c,
            },
        }
    }
}

impl From<cairn_common::memory::BudgetExceeded> for EvalError {
    fn from(e: cairn_common::memory::BudgetExceeded) -> Self {
        if e.transient() { EvalError::Busy(e.to_string()) } else { EvalError::Limit(e.to_string()) }
    }
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError::Execution(msg.into()))
}
