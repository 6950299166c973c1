//! The one HTTP client of the credential minters: HTTP/1.1, `https` with
//! the system's root certificates, a timeout per call. Errors name the
//! URL's scheme and authority only, never a query, header or body.

use crate::error::CredentialError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are refused (token answers are small).
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new() -> Result<Client, CredentialError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| CredentialError::new(format!("no system root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `POST url` with a form body.
    pub async fn post_form(&self, url: &str, body: String) -> Result<Answer, CredentialError> {
        self.post(url, "application/x-www-form-urlencoded", body, &[])
            .await
    }

    /// `POST url` with a body of `content_type` and extra headers.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> Result<Answer, CredentialError> {
        let mut builder = hyper::Request::post(url)
            .header("content-type", content_type)
            .header("accept", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| CredentialError::new(format!("bad URL or header for {}", origin(url))))?;
        self.send(url, request).await
    }

    /// `GET url` with extra headers.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, CredentialError> {
        let mut builder = hyper::Request::get(url).header("accept", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|_| CredentialError::new(format!("bad URL or header for {}", origin(url))))?;
        self.send(url, request).await
    }

    async fn send(
        &self,
        url: &str,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Answer, CredentialError> {
        let call = async {
            let response = self.inner.request(request).await.map_err(|e| {
                CredentialError::new(format!("cannot reach {}: {}", origin(url), cause(&e)))
            })?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| {
                    CredentialError::new(format!("reading the answer of {} failed", origin(url)))
                })?
                .to_bytes()
                .to_vec();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(TIMEOUT, call).await.map_err(|_| {
            CredentialError::new(format!(
                "{} did not answer within {} s",
                origin(url),
                TIMEOUT.as_secs()
            ))
        })?
    }
}

/// The innermost cause of a client error (e.g. "Connection refused").
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// `scheme://authority` of a URL, for messages.
pub fn origin(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(uri) => format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.authority().map(|a| a.as_str()).unwrap_or("?")
        ),
        Err(_) => "an invalid URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_hides_path_and_query() {
        assert_eq!(
            origin("https://oauth2.googleapis.com/token?x=secret"),
            "https://oauth2.googleapis.com"
        );
        assert_eq!(origin("not a url"), "an invalid URL");
    }

    #[tokio::test]
    async fn calls_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(|body: String| async move { format!("got {body}") }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new().unwrap();
        let a = client
            .post_form(&format!("http://127.0.0.1:{port}/token"), "a=b".into())
            .await
            .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"got a=b"[..]));
        let e = client
            .get("http://127.0.0.1:1/x?secret=1", &[])
            .await
            .err()
            .unwrap();
        assert!(e.0.starts_with("cannot reach http://127.0.0.1:1"), "{e}");
        assert!(!e.0.contains("secret"));
    }
}
