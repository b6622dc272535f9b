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

use std::collections::HashMap;
use std::sync::Arc;

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

/// All known tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_secret: Arc<HashMap<String, Principal>>,
}

impl Tokens {
    /// The tokens of a config.
    pub fn new(tokens: &[TokenConfig]) -> Tokens {
        let by_secret = tokens
            .iter()
            .map(|t| {
                let name =
                    if t.name.is_empty() { format!("{:?} token", t.role).to_lowercase() } else { t.name.clone() };
                (t.token.clone(), Principal { name, role: t.role, tenants: t.tenants.clone() })
            })
            .collect();
        Tokens { by_secret: Arc::new(by_secret) }
    }

    /// The principal of a secret.
    pub fn lookup(&self, secret: &str) -> Option<&Principal> {
        self.by_secret.get(secret)
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
}
