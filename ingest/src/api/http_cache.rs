//! What makes a refresh cheap: entity tags with `304 Not Modified` on the JSON reads, and
//! gzip for every response a client accepts it for.
//!
//! - ETag: a GET under `/api/v1` answered `200` with JSON gets a weak `ETag` (the first
//!   128 bits of the body's SHA-256) and `Cache-Control: no-cache`; a request whose
//!   `If-None-Match` names that tag gets `304` with no body. A browser's `fetch` sends
//!   `If-None-Match` by itself, so an unchanged refresh costs one small response. The body
//!   is still computed: what is saved is the bytes on the wire and the client's parsing.
//! - gzip: a response of at least [`MIN_GZIP_BYTES`] of JSON, text, JavaScript, CSS or SVG
//!   to a request that accepts gzip is compressed (flate2, which ingest already has for
//!   gzip line protocol; tower-http's compression layer would add async-compression,
//!   compression-codecs and compression-core to the tree). Server-sent events are never
//!   buffered or compressed; nor is a response that already has an encoding.
//!
//! Invariant: a client that sends neither `If-None-Match` nor `Accept-Encoding: gzip`
//! gets exactly the bytes it got before these layers.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Write as _;

/// Bodies smaller than this are sent as they are (gzip would save little or grow them).
pub const MIN_GZIP_BYTES: usize = 1024;
/// Most bytes of a body these layers buffer (larger ones pass through untouched).
const MAX_BUFFER_BYTES: usize = 256 * 1024 * 1024;

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The weak entity tag of a body.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// Whether `If-None-Match` names `tag` (weak comparison, as RFC 9110 wants for GET).
fn matches(if_none_match: &str, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match.trim() == "*" || if_none_match.split(',').any(|t| bare(t) == bare(tag))
}

/// Middleware: ETag and `304` for JSON answers to GET.
pub async fn etag(req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = next.run(req).await;
    if response.status() != StatusCode::OK
        || !content_type(response.headers()).starts_with("application/json")
        || response.headers().contains_key(header::ETAG)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BUFFER_BYTES).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body unreadable").into_response();
    };
    let tag = etag_of(&bytes);
    let value = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("W/\"\""));
    parts.headers.insert(header::ETAG, value);
    parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if if_none_match.as_deref().is_some_and(|h| matches(h, &tag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|coding| {
            let mut it = coding.split(';');
            let name = it.next().unwrap_or("").trim();
            let refused = it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn compressible(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    ct != "text/event-stream"
        && (ct.starts_with("text/")
            || ct == "application/json"
            || ct == "application/javascript"
            || ct == "image/svg+xml"
            || ct.ends_with("+json")
            || ct.ends_with("+xml"))
}

/// gzip at level 1: JSON of the API compresses 8-15x at a fraction of the default level's
/// CPU, which matters for a megabyte-sized answer on a 2-core county server.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 6), flate2::Compression::fast());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Middleware: gzip for clients that accept it.
pub async fn compress(req: Request, next: Next) -> Response {
    let wants = accepts_gzip(req.headers());
    let mut response = next.run(req).await;
    if !wants {
        return response;
    }
    // Whether or not this one is compressed, the answer depends on Accept-Encoding.
    response.headers_mut().append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let small = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n < MIN_GZIP_BYTES);
    if small
        || !compressible(content_type(response.headers()))
        || response.headers().contains_key(header::CONTENT_ENCODING)
        || response.status() == StatusCode::NOT_MODIFIED
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BUFFER_BYTES).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body unreadable").into_response();
    };
    if bytes.len() < MIN_GZIP_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let bytes: Bytes = bytes;
    let zipped = {
        let raw = bytes.clone();
        tokio::task::spawn_blocking(move || gzip(&raw)).await
    };
    match zipped {
        Ok(Ok(z)) => {
            parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(z))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_lists() {
        let tag = etag_of(b"[]");
        assert!(matches(&tag, &tag));
        assert!(matches(&format!("\"x\", {tag}"), &tag));
        assert!(matches(tag.trim_start_matches("W/"), &tag));
        assert!(matches("*", &tag));
        // Positive control above; another body's tag does not match.
        assert!(!matches(&etag_of(b"[1]"), &tag));
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")));
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(compressible("application/json"));
        assert!(compressible("text/javascript; charset=utf-8"));
        assert!(!compressible("text/event-stream"));
        assert!(!compressible("image/png"));
    }
}
