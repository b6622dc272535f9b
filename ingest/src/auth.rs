//! API tokens with roles, scoped to tenants.
//!
//! A water bureau does not see a dairy farm: a token names the tenants it may act on
//! (an empty list means every tenant, which only an admin token should have). Roles are
//! ordered: a viewer reads, an operator also acts (acknowledges alerts, issues
//! broadcasts, starts pumps), an admin also manages.
//!
//! Tokens travel as `Authorization: Token T` (what InfluxDB clients send) or
//! `Authorization: Bearer T`. Write calls take an [`Authorized`] extractor; a missing or
//! unknown token is 401, a role too low or a tenant outside the token's scope is 403.
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

/// The caller, once its token is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who holds the token (for audit logs).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Tenants it may act on; empty means all.
    pub tenants: Vec<String>,
}

impl Principal {
    /// True if the principal may act on `tenant`.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// `Ok` if the principal has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("needs the {role:?} role, the token has {:?}", self.role).to_lowercase()))
        }
    }

    /// `Ok` if the principal may act on `tenant`.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.may_access(tenant) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the token is not valid for tenant '{tenant}'")))
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
                (digest(&t.token), Principal { name, role: t.role, tenants: t.tenants.clone() })
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

/// Extractor for calls that need a token: the caller's [`Principal`].
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
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization header (use 'Token <token>')".into()))?;
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

/// A reader: anyone when reads are public, otherwise a token holder. Carries the tenant
/// scope reads are filtered by.
#[derive(Debug, Clone)]
pub struct Reader(pub Option<Principal>);

impl Reader {
    /// True if the reader may see `tenant`'s data.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.may_access(tenant))
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
        if Access::from_ref(state).public_read {
            Ok(Reader(None))
        } else {
            Err(ApiError::Unauthorized("reads need a token here (Authorization: Token <token>)".into()))
        }
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

    #[test]
    fn short_and_placeholder_secrets_are_refused() {
        assert!(check_secret("short").is_some_and(|e| e.contains("at least 16")));
        assert!(check_secret(EXAMPLE_TOKEN).is_some_and(|e| e.contains("placeholder")));
        assert!(check_secret("CHANGE-ME-please-0123456").is_some());
        // Positive control: a generated token is fine.
        assert_eq!(check_secret(&generate_token()), None);
    }
}
