//! Admin API errors: the same stable codes and JSON shape as the gateway.

use axum::response::{IntoResponse, Response};
use citadel_core::{ApiError, ErrorCode};
use citadel_identity::AccountError;
use citadel_store::StoreError;

/// A refused admin call, with optional structured details (e.g. the
/// problems of a policy set) beside the error object.
#[derive(Debug)]
pub struct AdminError(
    pub ApiError,
    pub Option<Box<(&'static str, serde_json::Value)>>,
);

impl AdminError {
    /// A refusal with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message), None)
    }

    /// Adds a top-level field to the error body.
    pub fn with_detail(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.1 = Some(Box::new((name, value)));
        self
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response =
            citadel_gateway::error_response(&self.0, None).map(axum::body::Body::new);
        if let Some(detail) = self.1 {
            let (name, value) = *detail;
            let mut body: serde_json::Value =
                serde_json::from_slice(&self.0.body(None)).unwrap_or_default();
            body[name] = value;
            *response.body_mut() =
                axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default());
        }
        response
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                Self::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            StoreError::NotFound(what) => {
                Self::new(ErrorCode::NotFound, format!("{what} does not exist"))
            }
            other => {
                tracing::error!(error = %other, "admin API storage error");
                Self::new(ErrorCode::Internal, "storage error; see the server log")
            }
        }
    }
}

impl From<citadel_privacy::ConsentError> for AdminError {
    fn from(e: citadel_privacy::ConsentError) -> Self {
        match e {
            citadel_privacy::ConsentError::Store(s) => s.into(),
            other => Self::new(ErrorCode::InvalidRequest, other.to_string()),
        }
    }
}

impl From<AccountError> for AdminError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Store(s) => s.into(),
            AccountError::WeakPassword(p) => Self::new(ErrorCode::WeakPassword, p.to_string()),
            AccountError::Hash(citadel_identity::password::HashError::Busy) => Self::new(
                ErrorCode::Overloaded,
                "too many password hashes in progress; retry shortly",
            ),
            AccountError::Hash(h) => {
                tracing::error!(error = %h, "password hashing failed");
                Self::new(
                    ErrorCode::Internal,
                    "the password could not be hashed; see the server log",
                )
            }
            other => Self::new(ErrorCode::InvalidRequest, other.to_string()),
        }
    }
}
