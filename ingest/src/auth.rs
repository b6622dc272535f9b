//! Who is calling: API tokens (machines) and signed-in people (sessions), with roles,
//! scoped to tenants.
//!
//! A water bureau does not see a dairy farm: a principal names the tenants it may act on
//! (an empty list means every tenant, which only an admin should have). Roles are
//! ordered: a viewer reads, an operator also acts (acknowledges alerts, issues
//! broadcasts, starts pumps), an admin also manages.
//!
//! Tokens travel as `Authorization: Token T` (what InfluxDB clients send) or
//! `Authorization: Bearer T`. People sign in (`crate::people`) and carry a session cookie
//! ([`SESSION_COOKIE`]). Write calls take an [`Authorized`] extractor, reads a [`Reader`];
//! both accept a token or a session, so no handler knows which it got. A missing or
//! unknown token or session is 401, a role too low or a tenant outside the scope is 403.
//!
//! Sessions reach this module through the request, not through the router's state: the
//! service puts a [`Gate`] (the session table and the people's audit log, behind the
//! traits [`SessionLookup`] and [`AuditSink`]) into every request's extensions, so every
//! router (the API's, enrolment's, the demo's) accepts sessions without a change to its
//! state, and this module stays below the ones that implement them.
//!
//! Invariants of [`Tokens`]:
//! - only SHA-256 digests of the secrets are kept: the configured secret is hashed when
//!   the tokens are built (the config file's format is unchanged), and a presented one is
//!   hashed before it is compared;
//! - a lookup compares the presented digest with every known digest in constant time
//!   (`subtle`) and never stops early, so its timing says nothing about how much of a
//!   secret was right; nothing is keyed by the secret (no `HashMap` probe on it).
//! - A secret shorter than [`MIN_TOKEN_LEN`] or the example config's placeholder is
//!   refused where the config is loaded ([`check_secret`]).
//!
//! Invariants of sessions (CSRF):
//! - a request authenticated by its cookie that may change state (any method but GET,
//!   HEAD, OPTIONS) must carry `X-CSRF-Token` equal to its session's CSRF token, compared
//!   in constant time, and, when it has an `Origin` (else a `Referer`), one whose host is
//!   the request's `Host`: otherwise 403, whatever else it carries;
//! - a request with an `Authorization` header is judged by its token alone (machines are
//!   unchanged, and a cookie never adds to a token);
//! - a person acts with their highest role in the tenants where they hold it
//!   ([`Principal::tenants`]); tenants where they hold a lower role are readable only
//!   ([`Principal::sees`]), so a principal never holds more than one of its grants.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a token may do; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and acts: acknowledges, silences, issues and approves broadcasts, writes data.
    Operator,
    /// Everything.
    Admin,
}

/// A configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The secret.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// Tenants it may act on; empty means all.
    pub tenants: Vec<String>,
    /// Who holds it, for audit logs.
    pub name: String,
}

/// The caller, once its token or session is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who holds the token, or the person's user name (for audit logs).
    pub name: String,
    /// Its role (a person's highest).
    pub role: Role,
    /// Tenants it may act on with `role`; empty means all.
    pub tenants: Vec<String>,
    /// Tenants it may read besides `tenants`: a person's grants below their highest role.
    /// Empty for tokens.
    pub sees: Vec<String>,
}

impl Principal {
    /// A token's principal: one role over `tenants` (empty: all).
    pub fn new(name: impl Into<String>, role: Role, tenants: Vec<String>) -> Principal {
        Principal { name: name.into(), role, tenants, sees: Vec::new() }
    }

    /// True if the principal may act on `tenant`.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// True if the principal may read `tenant`'s data (act on it, or see it).
    pub fn may_see(&self, tenant: &str) -> bool {
        self.may_access(tenant) || self.sees.iter().any(|t| t == tenant)
    }

    /// `Ok` if the principal has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("needs the {role:?} role, the caller has {:?}", self.role).to_lowercase()))
        }
    }

    /// `Ok` if the principal may act on `tenant`.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.may_access(tenant) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the caller may not act for tenant '{tenant}'")))
        }
    }
}

/// Fewest characters a configured token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// The placeholder of the example config (`ingest generate-config`): refused, so that a
/// copied example never runs with a secret everyone can read.
pub const EXAMPLE_TOKEN: &str = "change-me-to-a-long-random-string";

/// Why a configured secret is refused, or `None` if it may be used: shorter than
/// [`MIN_TOKEN_LEN`], or the example's placeholder (any token that still says
/// `change-me`).
pub fn check_secret(secret: &str) -> Option<String> {
    if secret.len() < MIN_TOKEN_LEN {
        Some(format!("token must be at least {MIN_TOKEN_LEN} characters"))
    } else if secret == EXAMPLE_TOKEN || secret.to_ascii_lowercase().contains("change-me") {
        Some(format!("token '{secret}' is the example's placeholder: make a random one (e.g. `openssl rand -hex 32`)"))
    } else {
        None
    }
}

/// SHA-256 of a secret: what [`Tokens`] keeps and compares.
type SecretDigest = [u8; 32];

fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// All known tokens, as SHA-256 digests of their secrets (see the module's invariants).
#[derive(Clone, Default)]
pub struct Tokens {
    known: Arc<Vec<(SecretDigest, Principal)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the digests: they are as good as the secret against this service.
        f.debug_struct("Tokens").field("count", &self.known.len()).finish()
    }
}

impl Tokens {
    /// The tokens of a config, hashed; the plaintext is not kept.
    pub fn new(tokens: &[TokenConfig]) -> Tokens {
        let known = tokens
            .iter()
            .map(|t| {
                let name =
                    if t.name.is_empty() { format!("{:?} token", t.role).to_lowercase() } else { t.name.clone() };
                (digest(&t.token), Principal::new(name, t.role, t.tenants.clone()))
            })
            .collect();
        Tokens { known: Arc::new(known) }
    }

    /// The principal of a secret. Compares the secret's digest with every known digest in
    /// constant time, all of them whatever matches; the first configured match wins.
    pub fn lookup(&self, secret: &str) -> Option<&Principal> {
        let presented = digest(secret);
        let mut found = None;
        for (known, principal) in self.known.iter() {
            let equal: bool = known[..].ct_eq(&presented[..]).into();
            if equal && found.is_none() {
                found = Some(principal);
            }
        }
        found
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// True if no token is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Who may call the HTTP API: the tokens, and whether reads need one. Every router's state
/// offers it (axum's `FromRef`), so the extractors below work in every domain's handlers
/// without those depending on the API's state.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// API tokens.
    pub tokens: Tokens,
    /// Whether reads need no token.
    pub public_read: bool,
}

/// A fresh random token (for the demo when none is given).
pub fn generate_token() -> String {
    use ed25519_dalek::SigningKey;
    // The signing-key generator is the one CSPRNG already in the tree; its bytes are a
    // fine secret. Hex keeps the token easy to paste.
    let key = SigningKey::generate(&mut rand_core::OsRng);
    key.to_bytes().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "vt_session";

/// The header a cookie-authenticated request that changes state must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A header the dashboard's background polling sends: such a read does not count as the
/// person being active (it does not push the session's idle expiry back).
pub const BACKGROUND_HEADER: &str = "x-vt-background";

/// A live session, as the extractors need it.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    /// Who signed in, with their roles.
    pub principal: Principal,
    /// The session's CSRF token.
    pub csrf: String,
}

/// The session table, as this module sees it (implemented by `crate::people`).
pub trait SessionLookup: Send + Sync {
    /// The live session of a cookie's value, if there is one. `touch`: the person is
    /// active (push the idle expiry back); false for background polling.
    fn session(&self, cookie: &str, touch: bool) -> Option<SessionAuth>;
}

/// One person's action, for the people's audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who: a user name or a token's holder (or, for a failed sign-in, the name given).
    pub actor: String,
    /// How they were known: `session`, `token`, or `none` (a failed sign-in).
    pub via: String,
    /// From where: the client's IP address, when known.
    pub ip: Option<String>,
    /// What, e.g. `signin`, `broadcast.approve`, `alert.ack` (docs/SECURITY.md lists them).
    pub action: String,
    /// Whose: the tenant it concerns (`None`: not a tenant's, e.g. a sign-in).
    pub tenant: Option<String>,
    /// On what: an alert, broadcast or command id, a user name.
    pub target: String,
    /// Anything else worth keeping (a note, a reason, a level), short.
    pub detail: serde_json::Value,
}

/// The people's audit log, as this module sees it (implemented by `crate::people`).
pub trait AuditSink: Send + Sync {
    /// Appends an entry; returns once it is durable (or its failure is logged).
    fn record(&self, entry: AuditEntry) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// Sessions and the audit log, put into every request's extensions by the service (see
/// the module doc). Without one (a router tested on its own), only tokens are known and
/// nothing is audited.
#[derive(Clone)]
pub struct Gate {
    /// The session table.
    pub sessions: Arc<dyn SessionLookup>,
    /// The people's audit log.
    pub audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// The value of cookie `name` in a request, if it has one.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The client's IP address: the connection's peer (the server puts it into the request;
/// `None` for a request that did not come over a socket).
pub fn client_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

/// True for a method that may change state (everything but GET, HEAD, OPTIONS).
fn changes_state(method: &axum::http::Method) -> bool {
    !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS)
}

/// The host (and port) of an `Origin` or `Referer` value: `http://h:8080/x` -> `h:8080`.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Refuses a cookie-authenticated request that changes state without the session's CSRF
/// token, or from another site's page (see the module's invariants).
fn check_csrf(parts: &Parts, csrf: &str) -> Result<(), ApiError> {
    if !changes_state(&parts.method) {
        return Ok(());
    }
    let sent = parts.headers.get(CSRF_HEADER).and_then(|h| h.to_str().ok()).unwrap_or("");
    let equal: bool = digest(sent)[..].ct_eq(&digest(csrf)[..]).into();
    if sent.is_empty() || !equal {
        return Err(ApiError::Forbidden(format!(
            "a change made with a session cookie needs the header {CSRF_HEADER} (the csrf value of GET /api/v1/session)"
        )));
    }
    let host = parts.headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
    let from = parts
        .headers
        .get(axum::http::header::ORIGIN)
        .or_else(|| parts.headers.get(axum::http::header::REFERER))
        .and_then(|h| h.to_str().ok());
    if let Some(from) = from {
        let same = match (authority_of(from), host) {
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
            _ => false,
        };
        if !same {
            return Err(ApiError::Forbidden(format!("a change made with a session cookie from another site ({from})")));
        }
    }
    Ok(())
}

/// The session of a request's cookie, if it carries one that is live. `Ok(None)`: no
/// cookie, or no session table; `Err`: a cookie that is not (or no longer) a session.
fn session_of(parts: &Parts) -> Result<Option<SessionAuth>, ApiError> {
    let Some(gate) = parts.extensions.get::<Gate>() else { return Ok(None) };
    let Some(value) = cookie(&parts.headers, SESSION_COOKIE).filter(|v| !v.is_empty()) else { return Ok(None) };
    let touch = !parts.headers.contains_key(BACKGROUND_HEADER);
    gate.sessions
        .session(value, touch)
        .map(Some)
        .ok_or_else(|| ApiError::Unauthorized("the session has ended (signed out or expired): sign in again".into()))
}

/// Extractor for calls that need a caller: the caller's [`Principal`], from a token
/// (`Authorization`) or a session cookie (then CSRF-checked for changes).
#[derive(Debug, Clone)]
pub struct Authorized(pub Principal);

impl<S> FromRequestParts<S> for Authorized
where
    S: Send + Sync,
    Access: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Authorized, ApiError> {
        let access = Access::from_ref(state);
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return match session_of(parts)? {
                Some(s) => {
                    check_csrf(parts, &s.csrf)?;
                    Ok(Authorized(s.principal))
                }
                None => {
                    Err(ApiError::Unauthorized("sign in, or send an Authorization header ('Token <token>')".into()))
                }
            };
        };
        let header = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("Authorization must be 'Token <token>' or 'Bearer <token>'".into()))?;
        let secret = header.strip_prefix("Token ").or_else(|| header.strip_prefix("Bearer ")).ok_or_else(|| {
            ApiError::Unauthorized("Authorization must be 'Token <token>' or 'Bearer <token>'".into())
        })?;
        access
            .tokens
            .lookup(secret.trim())
            .cloned()
            .map(Authorized)
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
    }
}

/// A reader: anyone when reads are public, otherwise a token holder or a signed-in
/// person. Carries the tenant scope reads are filtered by.
#[derive(Debug, Clone)]
pub struct Reader(pub Option<Principal>);

impl Reader {
    /// True if the reader may see `tenant`'s data.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.may_see(tenant))
    }
}

impl<S> FromRequestParts<S> for Reader
where
    S: Send + Sync,
    Access: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Reader, ApiError> {
        if parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            let Authorized(p) = Authorized::from_request_parts(parts, state).await?;
            return Ok(Reader(Some(p)));
        }
        let public = Access::from_ref(state).public_read;
        match session_of(parts) {
            Ok(Some(s)) => return Ok(Reader(Some(s.principal))),
            // An ended session on a public page reads as anyone (the page then offers
            // to sign in again).
            Err(e) if !public => return Err(e),
            _ => {}
        }
        if public {
            Ok(Reader(None))
        } else {
            Err(ApiError::Unauthorized("reads need a token or a session here (sign in)".into()))
        }
    }
}

/// Extractor that records a person's action in the people's audit log, with who (the
/// principal), how (`session` or `token`) and from where (the client's IP).
///
/// A handler takes it beside its [`Authorized`] and calls [`Trail::record`] once the
/// action is done. Without a [`Gate`] in the request it records nothing.
#[derive(Clone, Debug)]
pub struct Trail {
    gate: Option<Gate>,
    ip: Option<std::net::IpAddr>,
    via: &'static str,
}

impl Trail {
    /// Records `action` by `by` on `target` of `tenant`, with `detail`; returns once the
    /// entry is durable (a failure to write is logged, never the caller's error: the
    /// action already happened).
    pub async fn record(
        &self,
        by: &Principal,
        action: &str,
        tenant: Option<&str>,
        target: impl std::fmt::Display,
        detail: serde_json::Value,
    ) {
        if let Some(gate) = &self.gate {
            let entry = AuditEntry {
                actor: by.name.clone(),
                via: self.via.to_string(),
                ip: self.ip.map(|ip| ip.to_string()),
                action: action.to_string(),
                tenant: tenant.map(str::to_string),
                target: target.to_string(),
                detail,
            };
            gate.audit.record(entry).await;
        }
    }

    /// The client's IP address, when known.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.ip
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Trail {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Trail, std::convert::Infallible> {
        let via = if parts.headers.contains_key(axum::http::header::AUTHORIZATION) { "token" } else { "session" };
        Ok(Trail { gate: parts.extensions.get::<Gate>().cloned(), ip: client_ip(parts), via })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_tenants_scope_a_token() {
        let tokens = Tokens::new(&[TokenConfig {
            token: "t".repeat(20),
            role: Role::Operator,
            tenants: vec!["county".into()],
            name: "bureau".into(),
        }]);
        let p = tokens.lookup(&"t".repeat(20)).unwrap();
        assert!(p.require(Role::Viewer).is_ok());
        assert!(p.require(Role::Admin).is_err());
        assert!(p.may_access("county"));
        assert!(!p.may_access("dairy"));
        assert!(tokens.lookup("nope").is_none());
        assert_eq!(generate_token().len(), 40);
    }

    #[test]
    fn tokens_are_kept_only_as_digests_and_found_by_their_secret() {
        let secret = "a-long-enough-secret-0123";
        let tokens = Tokens::new(&[
            TokenConfig { token: secret.into(), role: Role::Viewer, tenants: vec![], name: "v".into() },
            TokenConfig {
                token: "another-secret-4567".into(),
                role: Role::Admin,
                tenants: vec![],
                name: String::new(),
            },
        ]);
        // Positive control: each secret finds its own principal.
        assert_eq!(tokens.lookup(secret).map(|p| p.name.as_str()), Some("v"));
        assert_eq!(tokens.lookup("another-secret-4567").map(|p| p.role), Some(Role::Admin));
        // A prefix, a longer string, a changed last character: unknown.
        assert!(tokens.lookup(&secret[..secret.len() - 1]).is_none());
        assert!(tokens.lookup(&format!("{secret}x")).is_none());
        assert!(tokens.lookup("a-long-enough-secret-0124").is_none());
        // What is kept is the SHA-256 of the secret, not the secret.
        let kept: Vec<[u8; 32]> = tokens.known.iter().map(|(d, _)| *d).collect();
        assert_eq!(kept[0], <[u8; 32]>::from(Sha256::digest(secret.as_bytes())));
        assert!(!kept.iter().any(|d| d.windows(4).any(|w| w == &secret.as_bytes()[..4])));
        assert!(!format!("{tokens:?}").contains(secret));
    }

    /// A session table of one session, for the extractor tests.
    struct OneSession(Principal);

    impl SessionLookup for OneSession {
        fn session(&self, cookie: &str, _touch: bool) -> Option<SessionAuth> {
            (cookie == "good-id").then(|| SessionAuth { principal: self.0.clone(), csrf: "the-csrf".into() })
        }
    }

    struct NoAudit;

    impl AuditSink for NoAudit {
        fn record(&self, _: AuditEntry) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(async {})
        }
    }

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method(method).uri("/api/v1/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        let wang = Principal::new("wang", Role::Operator, vec!["county".into()]);
        parts.extensions.insert(Gate { sessions: Arc::new(OneSession(wang)), audit: Arc::new(NoAudit) });
        parts
    }

    async fn authorized(method: &str, headers: &[(&str, &str)]) -> Result<Principal, ApiError> {
        let access = Access { tokens: Tokens::new(&[]), public_read: false };
        Authorized::from_request_parts(&mut parts(method, headers), &access).await.map(|a| a.0)
    }

    #[tokio::test]
    async fn a_session_cookie_is_a_principal_and_its_changes_need_the_csrf_header_from_this_site() {
        let cookie = ("cookie", "lang=zh; vt_session=good-id");
        let host = ("host", "county.example:8080");
        // Reads need no CSRF header.
        assert_eq!(authorized("GET", &[cookie, host]).await.unwrap().name, "wang");
        // A change without the header, or with a wrong one: 403.
        let e = authorized("POST", &[cookie, host]).await.unwrap_err();
        assert!(matches!(e, ApiError::Forbidden(ref m) if m.contains("x-csrf-token")), "{e}");
        assert!(matches!(
            authorized("DELETE", &[cookie, host, ("x-csrf-token", "the-csrF")]).await,
            Err(ApiError::Forbidden(_))
        ));
        // Positive control: with the header, from the same site or with no Origin at all.
        let csrf = ("x-csrf-token", "the-csrf");
        assert!(authorized("POST", &[cookie, host, csrf]).await.is_ok());
        assert!(authorized("POST", &[cookie, host, csrf, ("origin", "http://county.example:8080")]).await.is_ok());
        assert!(authorized("PATCH", &[cookie, host, csrf, ("referer", "http://county.example:8080/#x")]).await.is_ok());
        // From another site's page: 403 even with the right header.
        let e = authorized("POST", &[cookie, host, csrf, ("origin", "http://evil.example")]).await.unwrap_err();
        assert!(matches!(e, ApiError::Forbidden(ref m) if m.contains("another site")), "{e}");
        assert!(authorized("POST", &[cookie, host, csrf, ("referer", "http://county.example:9999/")]).await.is_err());
        // An unknown or ended session: 401; no cookie and no token: 401.
        let e = authorized("GET", &[("cookie", "vt_session=stale"), host]).await.unwrap_err();
        assert!(matches!(e, ApiError::Unauthorized(_)), "{e}");
        assert!(matches!(authorized("GET", &[host]).await, Err(ApiError::Unauthorized(_))));
    }

    #[tokio::test]
    async fn a_token_is_judged_alone_and_a_stale_cookie_reads_as_anyone_on_a_public_server() {
        let secret = "0123456789abcdef-machine";
        let access = Access {
            tokens: Tokens::new(&[TokenConfig {
                token: secret.into(),
                role: Role::Viewer,
                tenants: vec![],
                name: "m".into(),
            }]),
            public_read: true,
        };
        // A machine's POST with its token needs no CSRF header, and its cookie adds nothing.
        let mut p = parts("POST", &[("authorization", &format!("Token {secret}")), ("cookie", "vt_session=good-id")]);
        let Authorized(who) = Authorized::from_request_parts(&mut p, &access).await.unwrap();
        assert_eq!((who.name.as_str(), who.role), ("m", Role::Viewer));
        let mut p = parts("GET", &[("cookie", "vt_session=stale")]);
        assert!(Reader::from_request_parts(&mut p, &access).await.unwrap().0.is_none());
        let mut p = parts("GET", &[("cookie", "vt_session=good-id")]);
        let reader = Reader::from_request_parts(&mut p, &access).await.unwrap();
        assert!(reader.may_see("county") && !reader.may_see("dairy"), "a session's reader is scoped");
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; vt_session=abc".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "vt"), None);
    }

    #[test]
    fn short_and_placeholder_secrets_are_refused() {
        assert!(check_secret("short").is_some_and(|e| e.contains("at least 16")));
        assert!(check_secret(EXAMPLE_TOKEN).is_some_and(|e| e.contains("placeholder")));
        assert!(check_secret("CHANGE-ME-please-0123456").is_some());
        // Positive control: a generated token is fine.
        assert_eq!(check_secret(&generate_token()), None);
    }
}
