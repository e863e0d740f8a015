//! Error codes shared by every component, and their mapping to HTTP statuses,
//! gRPC codes and the "retry or not" decision.
//!
//! Remote write senders depend on this mapping: a 4xx tells Prometheus the
//! data is bad and must be dropped, a 5xx (or 429) tells it to retry.

use std::fmt;

use http::StatusCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request or its data is invalid. Never retried.
    BadData,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// Content-Type or Content-Encoding not supported.
    UnsupportedMediaType,
    NotFound,
    /// The client did not send its request in time. Not retried as it is.
    RequestTimeout,
    /// A PromQL expression failed during evaluation (Prometheus's 422).
    Execution,
    /// A configured limit was hit; retrying later may succeed.
    TooManyRequests,
    Timeout,
    Canceled,
    /// A dependency (ingester, storage) is down; retryable.
    Unavailable,
    /// A fault on our side; retryable.
    Internal,
}

impl ErrorCode {
    pub fn http_status(&self) -> StatusCode {
        match self {
            ErrorCode::BadData => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            // Prometheus answers canceled queries with 499 (client closed request).
            ErrorCode::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ErrorCode::BadData | ErrorCode::UnsupportedMediaType | ErrorCode::Execution => tonic::Code::InvalidArgument,
            ErrorCode::PayloadTooLarge => tonic::Code::OutOfRange,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::RequestTimeout => tonic::Code::DeadlineExceeded,
            ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::Canceled => tonic::Code::Cancelled,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn from_grpc_code(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => ErrorCode::BadData,
            tonic::Code::OutOfRange => ErrorCode::PayloadTooLarge,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::ResourceExhausted => ErrorCode::TooManyRequests,
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            tonic::Code::Cancelled => ErrorCode::Canceled,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    /// Whether a client should send the same request again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorCode::TooManyRequests | ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Internal)
    }

    /// Prometheus's `errorType` for the query API.
    pub fn prometheus_error_type(&self) -> &'static str {
        match self {
            ErrorCode::BadData | ErrorCode::PayloadTooLarge | ErrorCode::UnsupportedMediaType => "bad_data",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RequestTimeout => "timeout",
            ErrorCode::Execution | ErrorCode::TooManyRequests => "execution",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Canceled => "canceled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Every error a crate defines maps into the common table through this
/// trait; HTTP and gRPC answers are derived from it in one place
/// ([`ServiceError`]'s conversions).
pub trait CodedError: std::error::Error {
    fn error_code(&self) -> ErrorCode;

    /// The error as it crosses a component boundary.
    fn to_service_error(&self) -> ServiceError {
        ServiceError::new(self.error_code(), self.to_string())
    }
}

/// An error that crosses a component boundary (push, select): a code and a
/// message meant for the end user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for a
    /// refusal because of load.
    pub retry_after_secs: Option<u32>,
}

impl CodedError for ServiceError {
    fn error_code(&self) -> ErrorCode {
        self.code
    }

    fn to_service_error(&self) -> ServiceError {
        self.clone()
    }
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None }
    }

    /// Says when a retry may succeed.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadData, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        tonic::Status::new(e.code.grpc_code(), e.message)
    }
}

/// A plain-text answer (`message` and a newline) with the code's status,
/// and `Retry-After` when the error says when to retry.
impl axum::response::IntoResponse for ServiceError {
    fn into_response(self) -> axum::response::Response {
        let mut msg = self.message;
        msg.push('\n');
        let mut r =
            (self.code.http_status(), [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response();
        if let Some(secs) = self.retry_after_secs {
            r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        r
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(s: tonic::Status) -> Self {
        ServiceError::new(ErrorCode::from_grpc_code(s.code()), s.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_carry_the_code_and_the_retry_hint() {
        use axum::response::IntoResponse;
        let r = ServiceError::new(ErrorCode::TooManyRequests, "slow down").retry_after(3).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"3"[..]));
        let r = ServiceError::bad_data("no").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn client_errors_are_not_retryable_and_server_faults_are() {
        for c in [ErrorCode::BadData, ErrorCode::PayloadTooLarge, ErrorCode::UnsupportedMediaType] {
            assert!(c.http_status().is_client_error());
            assert!(!c.is_retryable());
            assert!(!ErrorCode::from_grpc_code(c.grpc_code()).is_retryable());
        }
        for c in [ErrorCode::Unavailable, ErrorCode::Internal] {
            assert!(c.http_status().is_server_error());
            assert!(c.is_retryable());
            assert_eq!(ErrorCode::from_grpc_code(c.grpc_code()), c);
        }
    }
}
