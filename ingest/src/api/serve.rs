//! Serving the HTTP API with the bounds `axum::serve` lacks: a header-read timeout, a
//! whole-request timeout, a cap on open connections, and accept errors backed off.
//!
//! Each accepted connection is served by hyper's HTTP/1 connection directly (the hyper 1
//! axum builds on), with a timer, so that:
//! - a client that does not send a request's whole header within
//!   [`Limits::http_header_timeout`] is disconnected; that also bounds how long an idle
//!   kept-alive connection stays open (hyper starts the same timer while it waits for
//!   the next request);
//! - a request whose response has not started within [`Limits::http_request_timeout`]
//!   (reading a slow body included) is answered 408 and its connection closed; a streamed
//!   response (server-sent events) is not cut once it started;
//! - at most [`Limits::http_max_connections`] connections are open at once (a
//!   semaphore's permits): one more is answered `503` (best effort, without waiting) and
//!   closed as soon as it is accepted, and counted (`ingest_http_connections_refused_total`),
//!   so idle connections can never take every file descriptor of the process;
//! - a failed accept (out of file descriptors: `EMFILE`) pauses the accept loop, doubling
//!   from [`AcceptBackoff::FIRST`] to [`AcceptBackoff::MAX`], and is logged at most once
//!   per [`AcceptBackoff::LOG_EVERY`] with the number of failures since the last line:
//!   never a line per failed accept.
//!
//! Stop: the accept loop ends, every connection finishes its request in flight (hyper's
//! graceful shutdown) within [`GRACE`], and the server returns once every connection's
//! permit is back (or the grace is over).

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::Limits;
use crate::metrics::Metrics;

/// How long connections get to finish their request in flight when ingest stops.
pub const GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` within `limits` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, metrics: Arc<Metrics>, stop: CancellationToken) {
    let cap = limits.http_max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let request_timeout = limits.http_request_timeout;
    let timeouts = metrics.clone();
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let timeouts = timeouts.clone();
        async move { bounded(request_timeout, &timeouts, req, next).await }
    }));
    let permits = Arc::new(Semaphore::new(cap));
    let mut backoff = AcceptBackoff::default();
    let mut refusals = RateLimitedLog::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                (stream, peer)
            }
            // The peer gave up before we accepted: nothing to do, nothing to say.
            Err(e) if is_connection_error(&e) => continue,
            Err(error) => {
                metrics.http_accept_errors.inc();
                let (pause, report) = backoff.failed(Instant::now());
                if let Some(failures) = report {
                    tracing::warn!(
                        message = "Cannot accept HTTP connections; pausing the listener between tries.",
                        %error,
                        failures,
                        pause_ms = pause.as_millis() as u64
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_refused.inc();
            // Best effort, never waiting: the client learns why; then the socket closes.
            let _ = stream.try_write(OVER_CAP);
            drop(stream);
            if let Some(refused) = refusals.hit(Instant::now()) {
                tracing::warn!(message = "HTTP connection cap reached; closing new connections.", cap, refused);
            }
            continue;
        };
        metrics.http_connections.inc();
        let _ = stream.set_nodelay(true);
        // The client's address, for the audit log and the sign-in lockout (crate::auth::client_ip).
        let service = TowerToHyperService::new(app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req
        }));
        let (stop, metrics, header_timeout) = (stop.clone(), metrics.clone(), limits.http_header_timeout);
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.http_timeouts.inc();
                }
                tracing::debug!(message = "HTTP connection ended with an error.", error = %e);
            }
            drop(permit);
        });
    }
    // Every connection's permit back: every connection closed (or the grace is over).
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), permits.acquire_many(all)).await;
}

/// What a connection over the cap reads before it is closed.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 51\r\nconnection: close\r\n\r\n{\"error\":\"too many connections; try again shortly\"}";

/// Answers 408 if `next` has not produced a response within `limit`.
async fn bounded(limit: Duration, metrics: &Metrics, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics.http_timeouts.inc();
            let error = format!("the request took longer than {} s (reading it and answering it)", limit.as_secs_f64());
            let mut response =
                (axum::http::StatusCode::REQUEST_TIMEOUT, axum::Json(serde_json::json!({ "error": error })))
                    .into_response();
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            response
        }
    }
}

/// Errors of one connection that the peer caused before it was accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}

/// The pause after a failed accept, and when to say so.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The next pause; `ZERO` after a success.
    delay: Duration,
    log: RateLimitedLog,
}

impl AcceptBackoff {
    /// The first pause after a success.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);
    /// At most one log line this often.
    pub const LOG_EVERY: Duration = RateLimitedLog::EVERY;

    /// A failed accept at `now`: how long to pause, and `Some(failures since the last
    /// line)` when a log line is due.
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.delay = if self.delay.is_zero() { Self::FIRST } else { (self.delay * 2).min(Self::MAX) };
        (self.delay, self.log.hit(now))
    }

    /// An accept succeeded: the next failure starts with the shortest pause again.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// Counts events and says when a log line about them is due: the first at once, then at
/// most one per [`RateLimitedLog::EVERY`], with how many happened since the last line.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    since: u64,
}

impl RateLimitedLog {
    /// At most one line this often.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// One more event at `now`; `Some(events since the last line)` if a line is due.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.since))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_pause_longer_each_time_and_log_once_per_interval() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::default();
        let (pause, line) = b.failed(t0);
        assert_eq!((pause, line), (AcceptBackoff::FIRST, Some(1)), "the first failure is said at once");
        let mut lines = 0;
        let mut last_pause = pause;
        // 10,000 failures within one interval: pauses grow to the cap, no further line.
        for i in 1..10_000u32 {
            let (pause, line) = b.failed(t0 + Duration::from_micros(u64::from(i)));
            assert!(pause >= last_pause && pause <= AcceptBackoff::MAX);
            last_pause = pause;
            lines += usize::from(line.is_some());
        }
        assert_eq!(lines, 0);
        assert_eq!(last_pause, AcceptBackoff::MAX);
        // After the interval, one line with the count of failures it covers.
        assert_eq!(b.failed(t0 + AcceptBackoff::LOG_EVERY).1, Some(10_000));
        // A success starts the pauses over (positive control: short again).
        b.succeeded();
        assert_eq!(b.failed(t0 + AcceptBackoff::LOG_EVERY).0, AcceptBackoff::FIRST);
    }

    #[test]
    fn the_over_cap_answer_is_a_complete_http_response() {
        let text = std::str::from_utf8(OVER_CAP).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok(), "{body}");
    }
}
