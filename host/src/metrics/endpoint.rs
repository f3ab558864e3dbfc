//! The metrics port: a small HTTP/1.1 server with three paths.
//!
//! - `GET /metrics`: every series, Prometheus text format 0.0.4.
//! - `GET /healthz`: 200 while the process runs (a liveness probe).
//! - `GET /readyz`: 200 while the server accepts connections; 503 while it loads its
//!   controllers and once a graceful shutdown has begun (a readiness probe).
//!
//! Any other path is 404, any other method 405. One request per connection (every
//! answer says `Connection: close`), which is how Prometheus and probes use it. The
//! request head is read by [`crate::handshake::read_request`] under a timeout, and at
//! most [`MAX_CONCURRENT`] requests are answered at once, so a client that opens many
//! sockets and says nothing holds a bounded amount.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Metrics, Phase};
use crate::request::Request;

/// How long one exchange (reading the request, writing the answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Most requests answered at once; further connections wait in the backlog.
const MAX_CONCURRENT: usize = 32;

/// The `Content-Type` of `/metrics`.
const METRICS_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const TEXT: &str = "text/plain; charset=utf-8";

/// Answers requests on `listener` for as long as the process runs.
pub(super) fn spawn(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &metrics))
                            .await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "metrics: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    });
}

/// Reads one request and writes its answer.
async fn exchange(mut stream: TcpStream, metrics: &Metrics) {
    let answer = match crate::handshake::read_request(&mut stream, MAX_HEAD).await {
        Ok(Some((request, _))) => answer(&request, metrics),
        Ok(None) => return,
        Err(rejection) => Answer::text(
            StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("{}\n", rejection.body),
        ),
    };
    let _ = stream.write_all(&answer.bytes()).await;
    let _ = stream.shutdown().await;
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    /// `HEAD`: the head only (with the body's length).
    head_only: bool,
    allow: bool,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.into(),
            head_only: false,
            allow: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.content_type,
            self.body.len(),
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// What `request` is answered.
fn answer(request: &Request, metrics: &Metrics) -> Answer {
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Answer {
                allow: true,
                ..Answer::text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET and HEAD are served here\n",
                )
            };
        }
    };
    let answer = match request.path.as_str() {
        "/metrics" => Answer {
            content_type: METRICS_TYPE,
            ..Answer::text(StatusCode::OK, metrics.render())
        },
        "/healthz" => Answer::text(StatusCode::OK, "ok\n"),
        "/readyz" => match metrics.phase() {
            Phase::Ready => Answer::text(StatusCode::OK, "ready\n"),
            Phase::Starting => Answer::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: loading controllers\n",
            ),
            Phase::Draining => Answer::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        },
        _ => Answer::text(
            StatusCode::NOT_FOUND,
            "not found: this port serves /metrics, /healthz and /readyz\n",
        ),
    };
    Answer {
        head_only,
        ..answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: &str, path: &str, metrics: &Metrics) -> (u16, String) {
        let mut request = Request::get(&[("host", "localhost")]);
        method.clone_into(&mut request.method);
        path.clone_into(&mut request.path);
        let answer = answer(&request, metrics);
        let text = String::from_utf8(answer.bytes()).unwrap();
        (answer.status.as_u16(), text)
    }

    #[test]
    fn readiness_follows_the_servers_phase() {
        let metrics = Metrics::new();
        assert_eq!(get("GET", "/readyz", &metrics).0, 503);
        assert_eq!(get("GET", "/healthz", &metrics).0, 200);
        metrics.ready();
        assert_eq!(get("GET", "/readyz", &metrics).0, 200);
        metrics.draining();
        let (status, text) = get("GET", "/readyz", &metrics);
        assert_eq!(status, 503);
        assert!(text.ends_with("\r\n\r\nshutting down\n"), "{text}");
    }

    #[test]
    fn head_has_the_length_but_no_body_and_other_methods_are_405() {
        let metrics = Metrics::new();
        let (status, text) = get("HEAD", "/healthz", &metrics);
        assert_eq!(status, 200);
        assert!(text.contains("Content-Length: 3\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        let (status, text) = get("POST", "/metrics", &metrics);
        assert_eq!(status, 405);
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        assert_eq!(get("GET", "/", &metrics).0, 404);
        assert_eq!(get("GET", "/metrics/x", &metrics).0, 404);
    }
}
