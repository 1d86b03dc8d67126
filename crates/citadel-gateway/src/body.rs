//! Body and response types shared by every layer.

use bytes::Bytes;
use citadel_core::ApiError;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a body may yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of requests and responses inside the gateway.
pub type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;
/// A request inside the gateway.
pub type GatewayRequest = http::Request<GatewayBody>;
/// A response inside the gateway.
pub type GatewayResponse = Response<GatewayBody>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> GatewayResponse {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The response for a refusal: status from the code, JSON body with the
/// stable code, `Retry-After` when set.
pub fn error_response(error: &ApiError, request_id: Option<&str>) -> GatewayResponse {
    let mut response = Response::new(full(error.body(request_id)));
    *response.status_mut() = error.code.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = error.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = error
        .challenge
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    } else if error.code == citadel_core::ErrorCode::InvalidCredentials {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"citadel\""),
        );
    }
    response
}

/// The last event of a streamed (SSE) answer that Citadel ends: `event:
/// error` with the same error object a refusal carries.
pub(crate) fn sse_error_event(
    code: citadel_core::ErrorCode,
    message: &str,
    request_id: &str,
) -> Bytes {
    let body = serde_json::json!({"error": {
        "code": code.as_str(),
        "message": message,
        "type": "citadel_error",
        "request_id": request_id,
    }});
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}
