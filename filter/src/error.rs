//! The filter's one error type. Each error says who caused it, so the HTTP
//! status and the error `type` the client sees follow from that.

use serde_json::json;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub cause: Cause,
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

/// Which API shape an error must take: the one the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

impl GatewayError {
    pub fn client(status: u16, message: impl Into<String>) -> Self {
        GatewayError {
            cause: Cause::Client,
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }
    pub fn upstream(status: u16, message: impl Into<String>) -> Self {
        GatewayError {
            cause: Cause::Upstream,
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        GatewayError {
            cause: Cause::Internal,
            status: 500,
            message: message.into(),
            param: None,
            code: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(400, message)
    }
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI's `error.type` for this error.
    fn openai_type(&self) -> &'static str {
        match (self.cause, self.status) {
            (_, 401) => "authentication_error",
            (_, 403) => "permission_error",
            (_, 404) => "invalid_request_error",
            (_, 413) => "invalid_request_error",
            (_, 429) => "rate_limit_exceeded",
            (Cause::Client, _) => "invalid_request_error",
            (Cause::Upstream, _) => "upstream_error",
            (Cause::Internal, _) => "internal_error",
        }
    }

    /// Anthropic's `error.type` for this error.
    fn anthropic_type(&self) -> &'static str {
        match self.status {
            413 => "request_too_large",
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            _ => "api_error",
        }
    }

    pub fn body(&self, shape: ErrorShape) -> Vec<u8> {
        let value = match shape {
            ErrorShape::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": self.param,
                "code": self.code,
            }}),
            ErrorShape::Anthropic => json!({"type": "error", "error": {
                "type": self.anthropic_type(),
                "message": self.message,
            }}),
        };
        value.to_string().into_bytes()
    }
}

impl GatewayError {
    /// The error as one server-sent event in the client's API shape, for a
    /// stream whose headers already went out.
    pub fn stream_event(&self, shape: ErrorShape) -> Vec<u8> {
        let mut out = match shape {
            ErrorShape::OpenAi => b"data: ".to_vec(),
            ErrorShape::Anthropic => b"event: error\ndata: ".to_vec(),
        };
        out.extend(self.body(shape));
        out.extend_from_slice(b"\n\n");
        out
    }

    /// A stream that ended without its final event.
    pub fn stream_incomplete() -> Self {
        GatewayError::upstream(
            502,
            "the model provider's stream ended before the answer was complete",
        )
        .with_code("upstream_stream_incomplete")
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}, {})", self.message, self.cause, self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape_has_all_four_fields() {
        let e = GatewayError::client(404, "model \"x\" not found")
            .with_param("model")
            .with_code("model_not_found");
        let v: serde_json::Value = serde_json::from_slice(&e.body(ErrorShape::OpenAi)).unwrap();
        assert_eq!(v["error"]["message"], "model \"x\" not found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
    }

    #[test]
    fn anthropic_shape_by_status() {
        for (status, ty) in [
            (400, "invalid_request_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (502, "api_error"),
        ] {
            let e = GatewayError::client(status, "m");
            let v: serde_json::Value =
                serde_json::from_slice(&e.body(ErrorShape::Anthropic)).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], ty, "status {status}");
        }
    }

    #[test]
    fn cause_sets_openai_type() {
        assert_eq!(GatewayError::internal("x").openai_type(), "internal_error");
        assert_eq!(
            GatewayError::upstream(502, "x").openai_type(),
            "upstream_error"
        );
    }
}
