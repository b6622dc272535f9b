//! The web dashboard's files, built into the binary and served with their content types.
//!
//! The dashboard (`dashboards/web/`) is plain HTML, CSS and JavaScript modules with no
//! build step. Every file is embedded here, so a county server that runs offline needs
//! nothing beside the binary: `/` is `index.html`, and every other file is served under
//! `/dashboard/` by its path in `dashboards/web/` (`/dashboard/js/main.js`).
//!
//! Invariants:
//! - Every response says `Cache-Control: no-cache` and carries an `ETag` (a hash of the
//!   file computed at compile time): the browser revalidates each file on every load, so
//!   a new binary's files are picked up at once, and a `304 Not Modified` keeps that cheap.
//! - A Content-Security-Policy allows only our own scripts and styles and same-origin API
//!   calls: nothing that arrives through the API can ever run as code.
//! - A file added to `dashboards/web/` must be listed in [`ASSETS`]; a test fails otherwise.
//!   Only `dashboards/web/dev/` (tools for working on the page) is not served.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiError;

/// One embedded file.
struct Asset {
    /// Path under `dashboards/web/`, as the browser asks for it under `/dashboard/`.
    path: &'static str,
    /// `Content-Type` header.
    content_type: &'static str,
    /// The file's bytes.
    body: &'static [u8],
    /// FNV-1a of the body, the `ETag`.
    hash: u64,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Embeds `dashboards/web/$path`.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../dashboards/web/", $path)),
            hash: fnv1a(include_bytes!(concat!("../../../dashboards/web/", $path))),
        }
    };
}

/// Every file of the dashboard.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
    asset!("js/boot.js", JS),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/config.js", JS),
    asset!("js/strings.js", JS),
    asset!("js/format.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/model.js", JS),
    asset!("js/map.js", JS),
    asset!("js/cards.js", JS),
    asset!("js/widgets.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/tables.js", JS),
    asset!("js/alerts.js", JS),
    asset!("js/broadcasts.js", JS),
    asset!("js/datasource.js", JS),
    asset!("js/sitelist.js", JS),
    asset!("js/bctownships.js", JS),
    asset!("js/ops.js", JS),
    asset!("js/alert-detail.js", JS),
    asset!("js/alert-history.js", JS),
    asset!("js/control.js", JS),
    asset!("reports.html", HTML),
    asset!("js/reports.js", JS),
    asset!("js/bclive.js", JS),
    asset!("js/bcapi.js", JS),
    asset!("js/compose.js", JS),
    asset!("js/approvals.js", JS),
    asset!("js/session.js", JS),
    asset!("js/users.js", JS),
    asset!("js/audit.js", JS),
];

/// What the page may load and run: only our own files and our own API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// 64-bit FNV-1a, evaluated at compile time for the `ETag`s.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The dashboard's routes: `/` and `/dashboard/{path}`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/dashboard/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Answers with the embedded file at `path`: 200 with its body, 304 if the browser's copy
/// is current, 404 if there is no such file.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::NotFound(format!("no dashboard file '{path}'")).into_response();
    };
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn web_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/web")
    }

    fn files_under(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path == root.join("dev") {
                continue;
            }
            if path.is_dir() {
                files_under(&path, root, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        routes::<()>().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[test]
    fn every_file_of_the_dashboard_is_embedded() {
        let mut on_disk = BTreeSet::new();
        files_under(&web_dir(), &web_dir(), &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(on_disk, embedded, "dashboards/web/ and ASSETS must list the same files");
    }

    #[test]
    fn every_file_the_pages_refer_to_is_embedded() {
        // Relative module imports in the scripts, and /dashboard/ links in the page.
        let embedded: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap_or_default();
            for (quote, rest) in [("'./", "js/"), ("\"/dashboard/", "")] {
                for part in text.split(quote).skip(1) {
                    let end = part.find(['\'', '"']).unwrap_or(part.len());
                    let target = format!("{rest}{}", &part[..end]);
                    assert!(
                        embedded.contains(target.as_str()),
                        "{} refers to {target}, which is not embedded",
                        asset.path
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_their_types_and_no_cache() {
        for (path, content_type) in
            [("/", HTML), ("/dashboard/style.css", CSS), ("/dashboard/js/main.js", JS), ("/dashboard/icon.svg", SVG)]
        {
            let resp = get(path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
            assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
            assert!(h.contains_key(header::ETAG), "{path}");
        }
    }

    #[tokio::test]
    async fn a_current_copy_is_answered_with_not_modified() {
        let etag = get("/dashboard/js/main.js", None).await.headers()[header::ETAG].to_str().unwrap().to_string();
        let resp = get("/dashboard/js/main.js", Some(&etag)).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()[header::ETAG], etag.as_str());
        let stale = get("/dashboard/js/main.js", Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_files_and_paths_outside_the_dashboard_are_not_found() {
        for path in ["/dashboard/nope.js", "/dashboard/../Cargo.toml", "/dashboard/js/../../Cargo.toml"] {
            assert_eq!(get(path, None).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
