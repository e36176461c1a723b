//! How the HTTP API answers an error, `{"error": message, ...details}` with its status, and
//! reads a bounded body.

use axum::body::{to_bytes, Body};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An error answer: `{"error": message, ...details}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.to_string() }),
        }
    }

    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> ApiError {
        self.body[key] = json!(value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The whole body, at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    to_bytes(body, limit).await.map(Vec::from).map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the {what} is larger than {} MiB", limit >> 20),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the {what}: {e}"))
        }
    })
}
