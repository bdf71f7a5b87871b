//! An error that answers the request: a status and a message, sent as JSON.

use std::fmt;

use super::response::{IntoResponse, Response};
use super::types::StatusCode;

/// An error answer: `status` with the JSON body `{"error": message}`.
///
/// Handlers return `Result<T, Error>` and use `?`: the request body's JSON, a path parameter,
/// and the [`db`](crate::db) and [`cache`](crate::cache) errors all convert into it (a refused
/// capability is 403, a bad value 400, a limit 413, anything else 500, each with the node's
/// message saying what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: StatusCode,
    message: String,
}

impl Error {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is wrong; the message says how.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403: the app may not do this.
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: nothing here.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: the app failed.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        Response::new(self.status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }
}

impl From<crate::db::Error> for Error {
    fn from(e: crate::db::Error) -> Error {
        use crate::db::Error as D;
        let status = match &e {
            D::PermissionDenied(_) => StatusCode::FORBIDDEN,
            D::Constraint(_) | D::Invalid(_) => StatusCode::BAD_REQUEST,
            D::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            D::Syntax(_) | D::Refused(_) | D::Other(_) | D::Mapping(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Error::new(status, e.message())
    }
}

impl From<crate::cache::Error> for Error {
    fn from(e: crate::cache::Error) -> Error {
        use crate::cache::Error as C;
        let status = match &e {
            C::PermissionDenied(_) => StatusCode::FORBIDDEN,
            C::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            C::NotAnInteger(_) | C::Overflow(_) | C::Invalid(_) | C::Mapping(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Error::new(status, e.message())
    }
}
