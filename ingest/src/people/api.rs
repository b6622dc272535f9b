//! `/api/v1/session`, `/api/v1/users...` and `/api/v1/audit` (docs/API.md, docs/SECURITY.md).
//!
//! Handlers are a list of steps: who asks, may they, do it, record it, answer.
//! - `POST /session` `{user, password}` signs in: sets the session cookie and answers
//!   `{user, grants, csrf, ...}`; 401 for a wrong name or password (never which), 429 with
//!   `Retry-After` when locked out. `GET /session` answers the same for a live cookie;
//!   `DELETE /session` signs out (a change: needs the CSRF header).
//! - Users are managed by admins: an admin of every tenant manages everyone; an admin of
//!   tenant X grants roles in X only, and resets or removes only people whose every grant
//!   is in tenants they administer. No change may leave the county without an admin of
//!   every tenant.
//! - `GET /audit` lists people's actions for operators and admins, filtered to what the
//!   reader may see.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::users::{self, ALL_TENANTS, Grant, User, UsersError};
use super::{People, SignInError, grants_json};
use crate::auth::{Access, Authorized, Principal, Role, SESSION_COOKIE, Trail, cookie};
use crate::error::ApiError;

/// The routes, merged under `/api/v1`.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Access: FromRef<S>,
    People: FromRef<S>,
{
    Router::new()
        .route("/session", post(sign_in).get(current).delete(sign_out))
        .route("/users", get(list).post(create))
        .route("/users/{name}", delete(remove).patch(update))
        .route("/users/{name}/password", post(reset_password))
        .route("/users/{name}/grants/{tenant}", delete(remove_grant))
        .route("/audit", get(audit))
}

impl From<UsersError> for ApiError {
    fn from(e: UsersError) -> ApiError {
        match e {
            UsersError::Invalid(m) => ApiError::BadRequest(m),
            UsersError::NotFound(_) => ApiError::NotFound(e.to_string()),
            UsersError::Exists(_) => ApiError::Unprocessable(e.to_string()),
            UsersError::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    user: String,
    password: String,
}

/// The `Set-Cookie` of a new session, or of its end (`id` empty).
fn session_cookie(id: &str, secure: bool) -> HeaderValue {
    let end = if id.is_empty() { "; Max-Age=0" } else { "" };
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{secure}{end}");
    // Hex ids and fixed text: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("vt_session=; Max-Age=0"))
}

/// Refuses a sign-in posted from another site's page (login CSRF: being signed in as
/// someone else without noticing).
fn same_site(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let from = headers.get(header::ORIGIN).or_else(|| headers.get(header::REFERER)).and_then(|h| h.to_str().ok());
    let Some(from) = from else { return Ok(()) };
    let authority = from.split_once("://").map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(r));
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(ApiError::Forbidden(format!("a sign-in from another site ({from})"))),
    }
}

async fn sign_in(
    State(people): State<People>,
    trail: Trail,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    same_site(&headers)?;
    let req = json_body(body)?;
    match people.sign_in(&req.user, &req.password, trail.ip()).await {
        Ok(signed) => {
            let mut response = (StatusCode::OK, Json(signed.view)).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&signed.id, people.settings().cookie_secure));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(SignInError::Wrong) => Err(ApiError::Unauthorized(SignInError::Wrong.to_string())),
        Err(e @ SignInError::Locked(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, Json(json!({ "error": e.to_string(), "retry_after_secs": secs })))
                    .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            Ok(response)
        }
        Err(e @ SignInError::NoGrants(_)) => Err(ApiError::Forbidden(e.to_string())),
        Err(SignInError::Internal(why)) => Err(ApiError::Internal(why)),
    }
}

async fn current(State(people): State<People>, headers: HeaderMap) -> Result<Response, ApiError> {
    let view = cookie(&headers, SESSION_COOKIE)
        .filter(|v| !v.is_empty())
        .and_then(|id| people.session_view(id))
        .ok_or_else(|| ApiError::Unauthorized("not signed in".into()))?;
    let mut response = Json(view).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn sign_out(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = cookie(&headers, SESSION_COOKIE)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest("no session to sign out of (a token is not a session)".into()))?;
    if people.sign_out(id).is_some() {
        tracing::info!(message = "Signed out.", user = %by.name);
        trail.record(&by, "signout", None, "", Value::Null).await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie("", people.settings().cookie_secure));
    Ok(response)
}

/// A user as an admin sees them: only the grants that admin may change, unless it
/// administers every tenant.
fn user_json(admin: &Principal, u: &User) -> Value {
    let grants: Vec<Grant> = u.grants.iter().filter(|g| users::may_grant(admin, &g.tenant)).cloned().collect();
    json!({
        "name": u.name,
        "grants": grants_json(&grants),
        "created": u.created,
        "password_set": u.password_set,
        "manageable": users::may_manage(admin, u),
    })
}

async fn list(State(people): State<People>, Authorized(by): Authorized) -> Result<Json<Vec<Value>>, ApiError> {
    by.require(Role::Admin)?;
    Ok(Json(people.with_users(|us| {
        us.all()
            .filter(|u| u.grants.iter().any(|g| users::may_grant(&by, &g.tenant)) || users::may_manage(&by, u))
            .map(|u| user_json(&by, u))
            .collect()
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    /// `None`: make one and answer it once.
    password: Option<String>,
    grants: Vec<Grant>,
}

/// `Ok` if `by` may give every one of `grants`.
fn may_give(by: &Principal, grants: &[Grant]) -> Result<(), ApiError> {
    by.require(Role::Admin)?;
    match grants.iter().find(|g| !users::may_grant(by, &g.tenant)) {
        Some(g) => Err(ApiError::Forbidden(format!("{} may not grant roles in tenant '{}'", by.name, g.tenant))),
        None => Ok(()),
    }
}

/// The password to set: the one given (checked), or a new one (answered once).
fn password_or_new(given: Option<String>) -> Result<(String, bool), ApiError> {
    match given {
        Some(p) => {
            users::check_password(&p).map_err(ApiError::BadRequest)?;
            Ok((p, false))
        }
        None => Ok((users::generate_password(), true)),
    }
}

/// True if some user is an admin of every tenant.
fn has_root(us: &users::Users) -> bool {
    us.all().any(|u| u.grants.iter().any(|g| g.tenant == ALL_TENANTS && g.role == Role::Admin))
}

/// Refuses a change that would leave nobody to manage the county.
fn keeps_root(before: bool, us: &users::Users) -> Result<(), UsersError> {
    if before && !has_root(us) {
        return Err(UsersError::Invalid(
            "the change would leave no admin of every tenant (tenant '*'); make another one first".into(),
        ));
    }
    Ok(())
}

async fn create(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = json_body(body)?;
    may_give(&by, &req.grants)?;
    users::check_name(&req.name).map_err(ApiError::BadRequest)?;
    users::check_grants(&req.grants).map_err(ApiError::BadRequest)?;
    let (password, generated) = password_or_new(req.password)?;
    let hash = people.hash(password.clone()).await?;
    let now = crate::time::rfc3339(protocol::Timestamp(people.now()));
    let user =
        User { name: req.name.clone(), hash, grants: req.grants.clone(), created: now.clone(), password_set: now };
    people.change_users(|us| us.add(user.clone()))?;
    tracing::info!(message = "User created.", user = %req.name, by = %by.name);
    trail
        .record(&by, "user.create", tenant_of(&req.grants), &req.name, json!({ "grants": grants_json(&req.grants) }))
        .await;
    let mut v = user_json(&by, &user);
    if generated {
        v["password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// The tenant an audit line of a user change belongs to: the one tenant of its grants,
/// else none (shown to readers of every tenant and those who share a tenant with the person).
fn tenant_of(grants: &[Grant]) -> Option<&str> {
    match grants {
        [one] if one.tenant != ALL_TENANTS => Some(one.tenant.as_str()),
        _ => None,
    }
}

/// The user `name`, if `by` may manage all of them.
fn manageable(people: &People, by: &Principal, name: &str) -> Result<User, ApiError> {
    by.require(Role::Admin)?;
    let user =
        people.with_users(|us| us.get(name).cloned()).ok_or_else(|| ApiError::NotFound(format!("no user '{name}'")))?;
    if !users::may_manage(by, &user) {
        return Err(ApiError::Forbidden(format!("{name} also holds roles in tenants {} does not administer", by.name)));
    }
    Ok(user)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: Option<String>,
}

async fn reset_password(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    Path(name): Path<String>,
    body: Option<Json<NewPassword>>,
) -> Result<Json<Value>, ApiError> {
    let user = manageable(&people, &by, &name)?;
    let (password, generated) = password_or_new(body.map(|Json(b)| b).unwrap_or_default().password)?;
    let hash = people.hash(password.clone()).await?;
    let now = crate::time::rfc3339(protocol::Timestamp(people.now()));
    people.change_users(|us| {
        us.update(&name, |u| {
            u.hash = hash;
            u.password_set = now;
        })
    })?;
    let ended = people.end_sessions(&name);
    tracing::info!(message = "Password reset.", user = %name, by = %by.name, sessions_ended = ended);
    trail.record(&by, "user.password", tenant_of(&user.grants), &name, json!({ "sessions_ended": ended })).await;
    let mut v = json!({ "name": name, "sessions_ended": ended });
    if generated {
        v["password"] = json!(password);
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    /// The person's grants in the tenants the admin administers (others are kept).
    grants: Vec<Grant>,
}

async fn update(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    Path(name): Path<String>,
    body: Result<Json<Change>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = json_body(body)?;
    may_give(&by, &req.grants)?;
    users::check_grants(&req.grants).map_err(ApiError::BadRequest)?;
    let user = people
        .with_users(|us| us.get(&name).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("no user '{name}'")))?;
    if !user.grants.iter().any(|g| users::may_grant(&by, &g.tenant)) && !users::may_manage(&by, &user) {
        return Err(ApiError::Forbidden(format!("{name} holds no role in a tenant {} administers", by.name)));
    }
    let grants: Vec<Grant> = user
        .grants
        .iter()
        .filter(|g| !users::may_grant(&by, &g.tenant))
        .cloned()
        .chain(req.grants.iter().cloned())
        .collect();
    let updated = people.change_users(|us| {
        let root = has_root(us);
        us.update(&name, |u| u.grants = grants.clone())?;
        if let Err(e) = keeps_root(root, us) {
            us.update(&name, |u| u.grants = user.grants.clone())?;
            return Err(e);
        }
        Ok(us.get(&name).cloned())
    })?;
    let updated = updated.ok_or_else(|| ApiError::NotFound(format!("no user '{name}'")))?;
    tracing::info!(message = "User's roles changed.", user = %name, by = %by.name);
    trail
        .record(&by, "user.update", tenant_of(&req.grants), &name, json!({ "grants": grants_json(&req.grants) }))
        .await;
    Ok(Json(user_json(&by, &updated)))
}

async fn remove(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = manageable(&people, &by, &name)?;
    people.change_users(|us| {
        let root = has_root(us);
        let removed = us.remove(&name)?;
        if let Err(e) = keeps_root(root, us) {
            us.add(removed)?;
            return Err(e);
        }
        Ok(())
    })?;
    let ended = people.end_sessions(&name);
    tracing::info!(message = "User removed.", user = %name, by = %by.name, sessions_ended = ended);
    trail.record(&by, "user.delete", tenant_of(&user.grants), &name, Value::Null).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_grant(
    State(people): State<People>,
    Authorized(by): Authorized,
    trail: Trail,
    Path((name, tenant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    by.require(Role::Admin)?;
    if !users::may_grant(&by, &tenant) {
        return Err(ApiError::Forbidden(format!("{} may not change roles in tenant '{tenant}'", by.name)));
    }
    let updated = people.change_users(|us| {
        let root = has_root(us);
        let before = us.get(&name).cloned().ok_or_else(|| UsersError::NotFound(name.clone()))?;
        if !before.grants.iter().any(|g| g.tenant == tenant) {
            return Err(UsersError::NotFound(format!("{name}'s grant in '{tenant}'")));
        }
        us.update(&name, |u| u.grants.retain(|g| g.tenant != tenant))?;
        if let Err(e) = keeps_root(root, us) {
            us.update(&name, |u| u.grants = before.grants.clone())?;
            return Err(e);
        }
        Ok(us.get(&name).cloned())
    })?;
    let updated = updated.ok_or_else(|| ApiError::NotFound(format!("no user '{name}'")))?;
    trail
        .record(&by, "user.grant.remove", (tenant != ALL_TENANTS).then_some(tenant.as_str()), &name, Value::Null)
        .await;
    Ok(Json(user_json(&by, &updated)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

/// Default number of entries `GET /audit` answers.
const DEFAULT_LIMIT: usize = 200;

async fn audit(
    State(people): State<People>,
    Authorized(by): Authorized,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<super::log::Entry>>, ApiError> {
    by.require(Role::Operator)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let time = |t: &Option<String>| {
        t.as_deref().filter(|s| !s.is_empty()).map(crate::time::parse).transpose().map_err(ApiError::BadRequest)
    };
    let query = super::log::Query {
        actor: q.actor,
        action: q.action,
        from: time(&q.from)?.map(|t| t.0),
        to: time(&q.to)?.map(|t| t.0),
        q: q.q,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let everything = by.tenants.is_empty();
    let visible = |e: &super::log::Entry| match &e.entry.tenant {
        Some(t) => by.may_see(t),
        None => {
            everything
                || e.entry.actor == by.name
                || people
                    .tenants_of(&e.entry.actor)
                    .is_some_and(|ts| ts.iter().any(|t| t != ALL_TENANTS && by.may_see(t)))
        }
    };
    Ok(Json(people.log().query(&query, visible)))
}
