//! Why a remote write request was refused before it reached an ingester.

use cairn_common::ErrorCode;
use cairn_common::inflight::Refused;
use cairn_common::status::{CodedError, ServiceError};
use cairn_common::tenant::TENANT_HEADER;
use cairn_common::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("unsupported Content-Encoding {0:?}: remote write bodies must be snappy block-compressed")]
    UnsupportedEncoding(String),
    #[error("unsupported Content-Type {0:?}: expected application/x-protobuf")]
    UnsupportedContentType(String),
    #[error(
        "unsupported remote write message {0:?}: expected prometheus.WriteRequest or io.prometheus.write.v2.Request"
    )]
    UnsupportedMessage(String),
    #[error("invalid {TENANT_HEADER} header: {0}")]
    BadTenant(String),
    #[error("empty request body: expected a snappy-compressed protobuf message")]
    EmptyBody,
    #[error("body is not snappy block-compressed: {0}")]
    NotSnappy(String),
    #[error("body is not valid snappy block data: {0}")]
    BadSnappy(String),
    #[error(
        "decompressed body would be {len} bytes, more than the limit of {limit} (raise --distributor.max-recv-msg-size)"
    )]
    DecompressedTooLarge { len: usize, limit: usize },
    #[error("request body is larger than the limit of {limit} bytes (raise --distributor.max-recv-msg-size)")]
    BodyTooLarge { limit: usize },
    /// The server's body deadline passed: the client was too slow.
    #[error("reading request body: {0}")]
    BodyTimeout(String),
    #[error("reading request body: {0}")]
    BodyRead(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(
        "this distributor is handling {limit} push requests already \
         (--distributor.instance-limits.max-inflight-push-requests); retry later"
    )]
    TooManyInFlight { limit: usize },
    #[error(
        "this distributor holds {held} bytes of push requests and this one needs {wanted} more, over the limit of \
         {limit} (--distributor.instance-limits.max-inflight-push-requests-bytes); retry later"
    )]
    TooManyBytesInFlight { held: usize, wanted: usize, limit: usize },
}

impl From<Refused> for PushError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Requests { limit } => PushError::TooManyInFlight { limit },
            Refused::Bytes { held, wanted, limit } => PushError::TooManyBytesInFlight { held, wanted, limit },
        }
    }
}

impl PushError {
    /// Whether the rest of the request is unread, so that its connection
    /// cannot carry another one.
    pub fn closes_connection(&self) -> bool {
        matches!(self, PushError::BodyTooLarge { .. } | PushError::BodyTimeout(_))
    }
}

impl CodedError for PushError {
    fn error_code(&self) -> ErrorCode {
        match self {
            PushError::UnsupportedEncoding(_)
            | PushError::UnsupportedContentType(_)
            | PushError::UnsupportedMessage(_) => ErrorCode::UnsupportedMediaType,
            PushError::BadTenant(_)
            | PushError::EmptyBody
            | PushError::NotSnappy(_)
            | PushError::BadSnappy(_)
            | PushError::BodyRead(_)
            | PushError::Wire(_) => ErrorCode::BadData,
            PushError::DecompressedTooLarge { .. } | PushError::BodyTooLarge { .. } => ErrorCode::PayloadTooLarge,
            PushError::BodyTimeout(_) => ErrorCode::RequestTimeout,
            // The instance is overloaded, not the tenant over a limit:
            // another distributor may take the request now.
            PushError::TooManyInFlight { .. } | PushError::TooManyBytesInFlight { .. } => ErrorCode::Unavailable,
        }
    }

    fn to_service_error(&self) -> ServiceError {
        let e = ServiceError::new(self.error_code(), self.to_string());
        match self {
            PushError::TooManyInFlight { .. } | PushError::TooManyBytesInFlight { .. } => e.retry_after(1),
            _ => e,
        }
    }
}
