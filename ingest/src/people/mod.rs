//! People: users with passwords, their roles per tenant, their sessions, the lockout of
//! guessers, and the audit log of what people did.
//!
//! Machines keep their API tokens ([`crate::auth::Tokens`]); people sign in with a name
//! and password (`POST /api/v1/session`) and get a session cookie. Both end up as the same
//! [`crate::auth::Principal`] in every handler ([`crate::auth::Authorized`],
//! [`crate::auth::Reader`]), so the server refuses what a role may not do whatever the
//! page sends.
//!
//! Parts: [`users`] (the users file, Argon2id), [`session`] (the session table),
//! [`lockout`] (failures per name and address), [`log`] (the people's audit log), [`api`]
//! (the HTTP routes). [`People`] is the front door that ties them together and is what
//! [`crate::auth::Gate`] reaches through every request.
//!
//! Design constraints:
//! - Sign-in takes the same time whether the name exists or not: an unknown name is
//!   checked against a dummy hash made with the same parameters, and the lockout counts
//!   names whether they exist or not.
//! - Password hashing runs on the blocking pool, at most [`HASHING_AT_ONCE`] at a time
//!   (19 MiB each), so a burst of sign-ins cannot take the runtime or the memory.
//! - A session's principal is made from the person's grants as they are now, so a change
//!   of grants applies to their next request; a password reset or removal ends their
//!   sessions.

pub mod api;
pub mod lockout;
pub mod log;
pub mod session;
pub mod users;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use protocol::Timestamp;
use serde_json::{Value, json};

use crate::auth::{AuditEntry, AuditSink, Gate, Principal, SessionAuth, SessionLookup};
use crate::config::SessionSettings;
use crate::metrics::Metrics;
use crate::time::Clock;
use lockout::Lockout;
use log::PeopleLog;
use session::Sessions;
use users::{Grant, User, Users, UsersError};

/// Most password hashes computed at once.
pub const HASHING_AT_ONCE: usize = 2;

/// Why people's state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    /// The users file.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The audit log.
    #[error("people's audit log: {0}")]
    Audit(#[from] crate::broadcast::audit::AuditError),
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong name or password (never says which).
    #[error("wrong user name or password")]
    Wrong,
    /// Too many failures of this name or from this address: try again later.
    #[error("too many failed sign-ins; try again in {} s", .0.as_secs().max(1))]
    Locked(Duration),
    /// The person has no role in any tenant.
    #[error("user '{0}' has no role in any tenant; ask an admin")]
    NoGrants(String),
    /// Our fault.
    #[error("{0}")]
    Internal(String),
}

/// A fresh session, as sign-in answers it.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session id: the cookie's value (given out once, never stored).
    pub id: String,
    /// The session's view (`GET /api/v1/session`).
    pub view: Value,
}

struct Inner {
    users: Mutex<Users>,
    sessions: Mutex<Sessions>,
    lockout: Mutex<Lockout>,
    log: PeopleLog,
    settings: SessionSettings,
    clock: Clock,
    /// A hash of nothing anyone knows, checked for unknown names (same cost as a real one).
    dummy: String,
    hashing: tokio::sync::Semaphore,
    failures: Counter,
    lockouts: Counter,
}

/// The front door of people's state. Cheap to clone.
#[derive(Clone)]
pub struct People {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for People {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("People").field("settings", &self.inner.settings).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The grants of a user as the API shows them.
pub fn grants_json(grants: &[Grant]) -> Value {
    json!(grants.iter().map(|g| json!({ "tenant": g.tenant, "role": g.role })).collect::<Vec<_>>())
}

impl People {
    /// Opens the users file and the audit log in `data_dir`; registers the sign-in
    /// counters with `metrics`.
    pub fn open(
        data_dir: &Path,
        settings: SessionSettings,
        clock: Clock,
        metrics: &Metrics,
    ) -> Result<People, PeopleError> {
        let users = Users::open(data_dir)?;
        let log = PeopleLog::open(data_dir)?;
        let failures = Counter::default();
        let lockouts = Counter::default();
        metrics.register("signin_failures", "Failed sign-ins (wrong name or password)", failures.clone());
        metrics.register(
            "signin_lockouts",
            "Sign-ins refused because the name or address is locked out after failures",
            lockouts.clone(),
        );
        let dummy = users::hash_password(&session::random_hex())?;
        tracing::info!(message = "People's state open.", users = users.len());
        Ok(People {
            inner: Arc::new(Inner {
                users: Mutex::new(users),
                sessions: Mutex::new(Sessions::new(settings.idle_timeout, settings.absolute_timeout)),
                lockout: Mutex::new(Lockout::new(
                    settings.lockout_failures,
                    settings.lockout_failures_per_ip,
                    settings.lockout_window,
                )),
                log,
                settings,
                clock,
                dummy,
                hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
                failures,
                lockouts,
            }),
        })
    }

    /// What the service puts into every request (see [`crate::auth`]).
    pub fn gate(&self) -> Gate {
        Gate { sessions: Arc::new(self.clone()), audit: Arc::new(self.clone()) }
    }

    /// The session settings.
    pub fn settings(&self) -> SessionSettings {
        self.inner.settings
    }

    fn now(&self) -> i64 {
        (self.inner.clock)().0
    }

    /// Runs a password hash or check on the blocking pool, a few at a time.
    async fn hashing<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let _permit = self.inner.hashing.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string())
    }

    /// Signs `name` in with `password` from `ip`; records the attempt in the audit log.
    pub async fn sign_in(&self, name: &str, password: &str, ip: Option<IpAddr>) -> Result<SignedIn, SignInError> {
        let now = self.now();
        let locked = lock(&self.inner.lockout).check(name, ip, now);
        if let Err(wait) = locked {
            self.inner.lockouts.inc();
            tracing::warn!(message = "Sign-in refused: locked out after failures.", user = %name.escape_debug(), ip = ?ip);
            self.audit_signin(name, ip, "signin.locked", json!({ "retry_after_secs": wait.as_secs() })).await;
            return Err(SignInError::Locked(wait));
        }
        let user = {
            let mut users = lock(&self.inner.users);
            if let Err(error) = users.reload_if_changed() {
                tracing::warn!(message = "Users file changed on disk but cannot be read; keeping the users in memory.", %error);
            }
            users.get(name).cloned()
        };
        // The same work whether or not the name exists, and whatever the password's size
        // (bounded: longer ones never match a stored hash).
        let hash = user.as_ref().map_or_else(|| self.inner.dummy.clone(), |u| u.hash.clone());
        let presented = if password.len() <= users::MAX_PASSWORD_BYTES { password.to_string() } else { String::new() };
        let ok =
            self.hashing(move || users::verify_password(&hash, &presented)).await.map_err(SignInError::Internal)?;
        let Some(user) = user.filter(|_| ok) else {
            self.inner.failures.inc();
            lock(&self.inner.lockout).failed(name, ip, now);
            tracing::info!(message = "Sign-in failed.", user = %name.escape_debug(), ip = ?ip);
            self.audit_signin(name, ip, "signin.failed", Value::Null).await;
            return Err(SignInError::Wrong);
        };
        lock(&self.inner.lockout).succeeded(name);
        let Some(principal) = users::principal(&user) else {
            self.audit_signin(name, ip, "signin.refused", json!({ "why": "no role in any tenant" })).await;
            return Err(SignInError::NoGrants(user.name));
        };
        let (id, session) = lock(&self.inner.sessions).start(&user.name, now);
        let view = self.view(&user, &session);
        tracing::info!(message = "Signed in.", user = %user.name, ip = ?ip, role = ?principal.role);
        self.audit_signin(&user.name, ip, "signin", Value::Null).await;
        Ok(SignedIn { id, view })
    }

    async fn audit_signin(&self, name: &str, ip: Option<IpAddr>, action: &str, detail: Value) {
        let actor: String = name.chars().take(users::MAX_NAME_CHARS).collect();
        let entry = AuditEntry {
            actor,
            via: if action == "signin" { "session".into() } else { "none".into() },
            ip: ip.map(|i| i.to_string()),
            action: action.into(),
            tenant: None,
            target: String::new(),
            detail,
        };
        self.record_now(entry).await;
    }

    /// Appends to the audit log now; a failure is logged (the action happened).
    pub async fn record_now(&self, entry: AuditEntry) {
        let ts = Timestamp(self.now());
        if let Err(error) = self.inner.log.record(ts, entry.clone()).await {
            tracing::error!(message = "Cannot write the people's audit log.", %error, action = %entry.action, actor = %entry.actor);
        }
    }

    /// The session view of a cookie's value (`GET /api/v1/session`), if it is live.
    pub fn session_view(&self, id: &str) -> Option<Value> {
        let s = lock(&self.inner.sessions).get(id, self.now(), true)?;
        let user = lock(&self.inner.users).get(&s.user).cloned()?;
        Some(self.view(&user, &s))
    }

    fn view(&self, user: &User, s: &session::Session) -> Value {
        let ends = lock(&self.inner.sessions).ends_at(s);
        let p = users::principal(user);
        json!({
            "user": user.name,
            "grants": grants_json(&user.grants),
            "role": p.as_ref().map(|p| p.role),
            "tenants": p.as_ref().map(|p| p.tenants.clone()),
            "csrf": s.csrf,
            "idle_timeout_secs": self.inner.settings.idle_timeout.as_secs(),
            "expires_at": crate::time::rfc3339(Timestamp(ends)),
        })
    }

    /// Ends the session of a cookie's value; returns whose it was.
    pub fn sign_out(&self, id: &str) -> Option<String> {
        lock(&self.inner.sessions).end(id).map(|s| s.user)
    }

    /// Runs `f` on the users (reread first if another program changed the file), and
    /// saves them if it succeeded.
    pub fn change_users<T>(&self, f: impl FnOnce(&mut Users) -> Result<T, UsersError>) -> Result<T, UsersError> {
        let mut users = lock(&self.inner.users);
        users.reload_if_changed()?;
        let out = f(&mut users)?;
        users.save()?;
        Ok(out)
    }

    /// Reads the users.
    pub fn with_users<T>(&self, f: impl FnOnce(&Users) -> T) -> T {
        f(&lock(&self.inner.users))
    }

    /// Hashes a password (slow, off the runtime).
    pub async fn hash(&self, password: String) -> Result<String, UsersError> {
        self.hashing(move || users::hash_password(&password)).await.map_err(UsersError::Invalid)?
    }

    /// Ends every session of `user`.
    pub fn end_sessions(&self, user: &str) -> usize {
        lock(&self.inner.sessions).end_user(user)
    }

    /// The people's audit log.
    pub fn log(&self) -> &PeopleLog {
        &self.inner.log
    }

    /// The tenants of a user's grants (`*` for every tenant), for the audit log's filter.
    pub fn tenants_of(&self, user: &str) -> Option<Vec<String>> {
        lock(&self.inner.users).get(user).map(|u| u.grants.iter().map(|g| g.tenant.clone()).collect())
    }
}

impl SessionLookup for People {
    fn session(&self, cookie: &str, touch: bool) -> Option<SessionAuth> {
        let s = lock(&self.inner.sessions).get(cookie, self.now(), touch)?;
        let principal: Principal = lock(&self.inner.users).get(&s.user).and_then(users::principal)?;
        Some(SessionAuth { principal, csrf: s.csrf })
    }
}

impl AuditSink for People {
    fn record(&self, entry: AuditEntry) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let me = self.clone();
        Box::pin(async move { me.record_now(entry).await })
    }
}

/// Adds (or, with `replace`, resets the password and grants of) a user in `data_dir`
/// directly: `ingest user add` and the demo, for the first admin before ingest runs.
pub fn add_offline(
    data_dir: &Path,
    name: &str,
    password: &str,
    grants: Vec<Grant>,
    replace: bool,
) -> Result<(), UsersError> {
    let mut users = Users::open(data_dir)?;
    let now = crate::time::rfc3339(Timestamp(daemon::system_clock()().0));
    let user = users::new_user(name, password, grants, &now)?;
    if replace && users.get(name).is_some() {
        let created = users.get(name).map(|u| u.created.clone()).unwrap_or_else(|| now.clone());
        users.update(name, |u| *u = User { created, ..user })?;
    } else {
        users.add(user)?;
    }
    users.save()
}
