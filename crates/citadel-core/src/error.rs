//! Stable error codes. Every refusal Citadel makes, on the gateway or the
//! admin API, carries one of these codes in its JSON body; scripts and
//! dashboards match on the code, never on the message.

use serde::Serialize;

/// A stable, machine-readable reason for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, malformed, unknown, expired or revoked credentials (no hint which).
    InvalidCredentials,
    /// The policy denied the request.
    Forbidden,
    /// The request named a model no upstream serves.
    UnknownModel,
    /// No route matches the path.
    RouteNotFound,
    /// The resource addressed on the admin API does not exist.
    NotFound,
    /// The body is not valid JSON, or lacks a required field.
    InvalidJson,
    /// A parameter is invalid.
    InvalidRequest,
    /// The resource already exists.
    Conflict,
    /// A policy file does not parse or validate.
    InvalidPolicy,
    /// The request headers exceed the configured limit.
    HeadersTooLarge,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// The request target (path and query) is too long.
    UriTooLong,
    /// The client was too slow to send its request.
    RequestTimeout,
    /// A rate limit was reached; see `Retry-After`.
    RateLimited,
    /// The upstream could not be reached or answered badly.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// Security events cannot be recorded, so the request is refused.
    AuditUnavailable,
    /// The gateway is at its connection or load limit.
    Overloaded,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// An index or tree size beyond the audit log.
    OutOfRange,
    /// The stored audit log is damaged; `citadel audit verify` says where.
    AuditLogDamaged,
    /// A second factor is required: sign in again with `totp` or `recovery_code`.
    MfaRequired,
    /// The second factor given was wrong, malformed or already used.
    MfaFailed,
    /// Policy requires a second factor the user has not enrolled.
    MfaEnrollmentRequired,
    /// Too many failed sign-ins; see `Retry-After`.
    LoginLocked,
    /// A browser-session request that changes something lacked the
    /// session's `X-CSRF-Token`.
    CsrfFailed,
    /// A new password does not meet the password policy.
    WeakPassword,
    /// The credential was revoked (or expired) while a streamed answer was
    /// in progress; the stream ends with this code.
    AccessRevoked,
    /// The client certificate presented is expired, not from the internal
    /// CA, revoked, or names no enrolled device or registered workload.
    InvalidClientCertificate,
    /// Policy asks for a stronger or fresher authentication for this
    /// request; the `WWW-Authenticate` challenge (RFC 9470) says which.
    StepUpRequired,
    /// Policy does not let the data classes found in the request go to
    /// this model or route, redacted or not.
    DataClassForbidden,
    /// The route serves a purpose that needs the data subject's consent,
    /// and the subject named in the request does not hold it.
    ConsentRequired,
    /// The route needs the data subject named (a header), and the request
    /// names none or an invalid one.
    SubjectRequired,
    /// An answer could not be inspected for personal data and secrets (not
    /// the JSON it claims to be, or larger than inspection allows), so it
    /// is not passed on; inside a stream, the stream ends with this code.
    AnswerNotInspectable,
    /// An unexpected internal error; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::UnknownModel => "unknown_model",
            Self::RouteNotFound => "route_not_found",
            Self::NotFound => "not_found",
            Self::InvalidJson => "invalid_json",
            Self::InvalidRequest => "invalid_request",
            Self::Conflict => "conflict",
            Self::InvalidPolicy => "invalid_policy",
            Self::HeadersTooLarge => "headers_too_large",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited => "rate_limited",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::AuditUnavailable => "audit_unavailable",
            Self::Overloaded => "overloaded",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OutOfRange => "out_of_range",
            Self::AuditLogDamaged => "audit_log_damaged",
            Self::MfaRequired => "mfa_required",
            Self::MfaFailed => "mfa_failed",
            Self::MfaEnrollmentRequired => "mfa_enrollment_required",
            Self::LoginLocked => "login_locked",
            Self::CsrfFailed => "csrf_failed",
            Self::WeakPassword => "weak_password",
            Self::AccessRevoked => "access_revoked",
            Self::StepUpRequired => "step_up_required",
            Self::InvalidClientCertificate => "invalid_client_certificate",
            Self::DataClassForbidden => "data_class_forbidden",
            Self::ConsentRequired => "consent_required",
            Self::SubjectRequired => "subject_required",
            Self::AnswerNotInspectable => "answer_not_inspectable",
            Self::Internal => "internal_error",
        }
    }

    /// The HTTP status that carries this code.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidCredentials
            | Self::MfaRequired
            | Self::MfaFailed
            | Self::AccessRevoked
            | Self::StepUpRequired
            | Self::InvalidClientCertificate => S::UNAUTHORIZED,
            Self::MfaEnrollmentRequired | Self::CsrfFailed => S::FORBIDDEN,
            Self::LoginLocked => S::TOO_MANY_REQUESTS,
            Self::WeakPassword => S::BAD_REQUEST,
            Self::Forbidden | Self::DataClassForbidden | Self::ConsentRequired => S::FORBIDDEN,
            Self::SubjectRequired => S::BAD_REQUEST,
            Self::AnswerNotInspectable => S::BAD_GATEWAY,
            Self::UnknownModel | Self::RouteNotFound | Self::NotFound => S::NOT_FOUND,
            Self::InvalidJson | Self::InvalidRequest | Self::InvalidPolicy | Self::OutOfRange => {
                S::BAD_REQUEST
            }
            Self::Conflict => S::CONFLICT,
            Self::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => S::URI_TOO_LONG,
            Self::RequestTimeout => S::REQUEST_TIMEOUT,
            Self::RateLimited => S::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable => S::BAD_GATEWAY,
            Self::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            Self::AuditUnavailable | Self::Overloaded => S::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            Self::Internal | Self::AuditLogDamaged => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal with its stable code and a message safe to show the client
/// (it never contains a secret or the policy that decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable explanation that says what to do next.
    pub message: String,
    /// Seconds after which a retry may succeed (rate limits).
    pub retry_after: Option<u64>,
    /// A `WWW-Authenticate` challenge to send with the refusal.
    pub challenge: Option<String>,
}

impl ApiError {
    /// A refusal with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// The JSON body, shaped like OpenAI's error object so that SDKs show it:
    /// `{"error": {"code": "...", "message": "...", "type": "citadel_error"}}`.
    pub fn body(&self, request_id: Option<&str>) -> Vec<u8> {
        let mut error = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "type": "citadel_error",
        });
        if let Some(id) = request_id {
            error["request_id"] = serde_json::Value::String(id.to_owned());
        }
        serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default()
    }
}

impl ApiError {
    /// The RFC 9470 step-up refusal: 401 `step_up_required` with
    /// `WWW-Authenticate: Bearer error="insufficient_user_authentication"`,
    /// the required `acr_values` and, if set, `max_age`.
    pub fn step_up(acr: &str, max_age: Option<u64>) -> Self {
        let clean: String = acr
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .collect();
        let mut challenge = format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger authentication is required\", acr_values=\"{clean}\""
        );
        if let Some(age) = max_age {
            challenge.push_str(&format!(", max_age={age}"));
        }
        let mut e = Self::new(
            ErrorCode::StepUpRequired,
            format!(
                "this request needs a stronger authentication ({clean}{}); browsers: POST /auth/step-up with a TOTP code or a passkey, then retry",
                max_age.map(|a| format!(" within the last {a} s")).unwrap_or_default()
            ),
        );
        e.challenge = Some(challenge);
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_and_request_id() {
        let e = ApiError::new(ErrorCode::UnknownModel, "no such model");
        let v: serde_json::Value = serde_json::from_slice(&e.body(Some("r1"))).unwrap();
        assert_eq!(v["error"]["code"], "unknown_model");
        assert_eq!(v["error"]["request_id"], "r1");
        assert_eq!(e.code.status(), 404);
    }
}
