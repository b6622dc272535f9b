//! Enrolment of gateway keys through the API: add a key, rotate with two, remove one,
//! revoke (docs/SECURITY.md, "Enrolment, rotation, revocation").
//!
//! | call | what |
//! |---|---|
//! | `GET /api/v1/gateways/{id}/keys` | the keys that verify the gateway's messages, with fingerprints |
//! | `POST /api/v1/gateways/{id}/keys` `{"public_key": HEX}` | enrols a key (a second one starts a rotation); 201, or 200 if it was there |
//! | `DELETE /api/v1/gateways/{id}/keys/{key}` | removes one key (HEX or its fingerprint); the last one revokes the gateway |
//! | `DELETE /api/v1/gateways/{id}/keys` | revokes the gateway: every key removed |
//!
//! Every call needs an admin token valid for the gateway's tenant.
//!
//! Invariants:
//! - A change is written to [`FILE`] in the data directory (atomically) before it takes
//!   effect; a change that could not be written is refused and has no effect.
//! - A gateway holds at most [`MAX_KEYS`]; a third is refused (409) until one is removed.
//! - A removal takes effect at once: the keyring refuses the next message signed with the
//!   key, the broker refuses the key's login, and a session open on the embedded broker is
//!   ended ([`crate::broker::Handle::kick`]), so the gateway logs in again with a key it
//!   still holds, or not at all.
//! - The inventory file stays the county's own: an API change is kept in [`FILE`] with the
//!   keys the inventory listed at that moment; at start the change applies only if the
//!   inventory still lists those keys. A later edit of the inventory wins (logged).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Access, Authorized, Principal, Role, Tokens};
use crate::error::ApiError;
use crate::inventory::{GatewayInfo, Inventory};
use crate::keyring::{Keyring, MAX_KEYS, parse_public_key, write_atomically};

/// The file of enrolments made through the API, in ingest's data directory.
pub const FILE: &str = "enrolments.json";

/// Why enrolments could not be read at start.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One gateway's keys as set through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The keys now (hex); empty: revoked.
    keys: Vec<String>,
    /// What the inventory listed when the change was made.
    inventory_keys: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    gateways: BTreeMap<String, Entry>,
}

/// Gateway keys: the keyring they act in, the inventory that shows them, the file that
/// keeps API changes, and the broker that ends a revoked gateway's session.
pub struct Enrolment {
    keyring: Arc<Keyring>,
    inventory: Arc<Inventory>,
    broker: Option<crate::broker::Handle>,
    path: PathBuf,
    /// The API's changes; the lock also keeps changes and their writes in one order.
    stored: tokio::sync::Mutex<Stored>,
    /// What the inventory file listed per gateway at start.
    file_keys: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Enrolment {
    /// Reads the API's enrolments from `data_dir` and applies those the inventory has not
    /// overtaken to the keyring and the inventory (which `service::enrol_all` has filled
    /// from the inventory file already).
    pub fn open(
        data_dir: &Path,
        keyring: Arc<Keyring>,
        inventory: Arc<Inventory>,
        broker: Option<crate::broker::Handle>,
    ) -> Result<Enrolment, EnrolError> {
        let path = data_dir.join(FILE);
        let mut stored: Stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EnrolError::Bad { path: path.clone(), reason: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(EnrolError::Io { path, source }),
        };
        let file_keys: BTreeMap<String, Vec<String>> = inventory
            .gateways()
            .iter()
            .map(|g| (g.id.clone(), g.public_keys().iter().map(|k| k.to_string()).collect()))
            .collect();
        stored.gateways.retain(|id, entry| {
            match file_keys.get(id) {
                None => {
                    tracing::warn!(message = "Enrolment of a gateway no longer in the inventory dropped.", gateway = %id);
                    false
                }
                Some(listed) if *listed != entry.inventory_keys => {
                    tracing::warn!(
                        message = "The inventory lists other keys for this gateway than when its keys were last set through the API; the inventory wins.",
                        gateway = %id
                    );
                    false
                }
                Some(_) => true,
            }
        });
        let enrolment = Enrolment { keyring, inventory, broker, path, stored: Default::default(), file_keys };
        for (id, entry) in &stored.gateways {
            if let Some(g) = enrolment.inventory.gateway(id) {
                enrolment.apply(&g, &entry.keys);
            }
        }
        tracing::info!(message = "Enrolments through the API applied.", gateways = stored.gateways.len());
        Ok(Enrolment { stored: tokio::sync::Mutex::new(stored), ..enrolment })
    }

    /// Puts `keys` in effect for `g`: keyring, inventory.
    fn apply(&self, g: &GatewayInfo, keys: &[String]) {
        let parsed: Vec<_> = keys.iter().filter_map(|k| parse_public_key(k).ok()).collect();
        if let Err(error) = self.keyring.set(&g.tenant, &g.id, &parsed) {
            tracing::warn!(message = "Gateway key refused.", gateway = %g.id, %error);
            self.keyring.revoke(&g.id);
        }
        self.inventory.set_public_keys(&g.id, keys);
    }

    /// The keys of gateway `id` now (hex).
    pub fn keys(&self, id: &str) -> Vec<String> {
        self.inventory.gateway(id).map(|g| g.public_keys().iter().map(|k| k.to_string()).collect()).unwrap_or_default()
    }

    /// Sets the keys of `g`: written first, then in effect; a gateway that lost a key has
    /// its broker session ended.
    async fn set(&self, g: &GatewayInfo, keys: Vec<String>, by: &Principal) -> Result<(), ApiError> {
        let mut stored = self.stored.lock().await;
        let before = self.keys(&g.id);
        let inventory_keys = self.file_keys.get(&g.id).cloned().unwrap_or_default();
        let mut next = Stored { gateways: stored.gateways.clone() };
        next.gateways.insert(g.id.clone(), Entry { keys: keys.clone(), inventory_keys });
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| ApiError::Internal(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", self.path.display())))?;
        *stored = next;
        self.apply(g, &keys);
        let removed: Vec<&String> = before.iter().filter(|k| !keys.contains(k)).collect();
        tracing::warn!(
            message = "Gateway keys changed through the API.",
            gateway = %g.id,
            by = %by.name,
            keys = keys.len(),
            removed = removed.len()
        );
        if !removed.is_empty()
            && let Some(broker) = &self.broker
        {
            let kicked = broker.kick(&g.id).await;
            tracing::info!(message = "Broker session of the gateway ended.", gateway = %g.id, kicked);
        }
        Ok(())
    }
}

/// The enrolment routes, nested under `/api/v1` (they carry their own state).
pub fn routes<S>(enrolment: Arc<Enrolment>, tokens: Tokens) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = EnrolState { enrolment, access: Access { tokens, public_read: false } };
    Router::new()
        .route("/api/v1/gateways/{id}/keys", get(list).post(add).delete(revoke_all))
        .route("/api/v1/gateways/{id}/keys/{key}", delete(remove))
        .with_state(state)
}

#[derive(Clone)]
struct EnrolState {
    enrolment: Arc<Enrolment>,
    access: Access,
}

impl axum::extract::FromRef<EnrolState> for Access {
    fn from_ref(s: &EnrolState) -> Access {
        s.access.clone()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    public_key: String,
}

/// The gateway `id`, if the principal is an admin of its tenant.
fn gateway_for(e: &Enrolment, principal: &Principal, id: &str) -> Result<GatewayInfo, ApiError> {
    principal.require(Role::Admin)?;
    let g = e.inventory.gateway(id).ok_or_else(|| ApiError::NotFound(format!("no gateway '{id}'")))?;
    principal.require_tenant(&g.tenant)?;
    Ok(g)
}

fn described(id: &str, keys: &[String]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            let fingerprint = parse_public_key(k).map(|v| protocol::auth::fingerprint(&v)).unwrap_or_default();
            json!({ "public_key": k, "fingerprint": fingerprint })
        })
        .collect();
    json!({ "gateway": id, "keys": keys, "enrolled": !keys.is_empty() })
}

async fn list(
    State(s): State<EnrolState>,
    Authorized(principal): Authorized,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let g = gateway_for(&s.enrolment, &principal, &id)?;
    Ok(Json(described(&g.id, &s.enrolment.keys(&g.id))))
}

async fn add(
    State(s): State<EnrolState>,
    Authorized(principal): Authorized,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<AddKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let g = gateway_for(&s.enrolment, &principal, &id)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(format!("expected {{\"public_key\": HEX}}: {e}")))?;
    let key = parse_public_key(&req.public_key).map_err(|r| ApiError::BadRequest(format!("public_key: {r}")))?;
    let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let mut keys = s.enrolment.keys(&g.id);
    if keys.contains(&hex) {
        return Ok((StatusCode::OK, Json(described(&g.id, &keys))));
    }
    if keys.len() >= MAX_KEYS {
        // 409 in the API's error shape (`ApiError` has no conflict of its own).
        let error = format!(
            "gateway '{}' holds {MAX_KEYS} keys already (a rotation is under way): remove the old one first",
            g.id
        );
        return Ok((StatusCode::CONFLICT, Json(json!({ "error": error }))));
    }
    keys.push(hex);
    s.enrolment.set(&g, keys.clone(), &principal).await?;
    Ok((StatusCode::CREATED, Json(described(&g.id, &keys))))
}

async fn remove(
    State(s): State<EnrolState>,
    Authorized(principal): Authorized,
    UrlPath((id, key)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let g = gateway_for(&s.enrolment, &principal, &id)?;
    let keys = s.enrolment.keys(&g.id);
    let wanted = key.trim().to_ascii_lowercase();
    let matches = |k: &String| {
        *k == wanted
            || parse_public_key(k).is_ok_and(|v| protocol::auth::fingerprint(&v).eq_ignore_ascii_case(key.trim()))
    };
    if !keys.iter().any(matches) {
        return Err(ApiError::NotFound(format!("gateway '{}' has no key '{key}'", g.id)));
    }
    let rest: Vec<String> = keys.iter().filter(|k| !matches(k)).cloned().collect();
    s.enrolment.set(&g, rest.clone(), &principal).await?;
    Ok(Json(described(&g.id, &rest)))
}

async fn revoke_all(
    State(s): State<EnrolState>,
    Authorized(principal): Authorized,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let g = gateway_for(&s.enrolment, &principal, &id)?;
    s.enrolment.set(&g, Vec::new(), &principal).await?;
    Ok(Json(described(&g.id, &[])))
}
