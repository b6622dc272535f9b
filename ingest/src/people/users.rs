//! People and their grants: the users file, and their passwords hashed with Argon2id.
//!
//! Design constraints:
//! - A password is kept only as an Argon2id hash in PHC form (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`),
//!   with a random 16-byte salt. The parameters are OWASP's (Password Storage Cheat Sheet:
//!   "Argon2id with a minimum configuration of 19 MiB of memory, an iteration count of 2,
//!   and 1 degree of parallelism"): [`PARAMS_M_KIB`], [`PARAMS_T`], [`PARAMS_P`]. The hash
//!   carries them, so raising them later leaves old hashes verifiable.
//! - The file (`data_dir/users.json`) is written whole: to a temporary file in the same
//!   directory, fsynced, renamed over the old one, and the directory fsynced. A crash
//!   leaves the old file or the new one, never half of one. Mode 0600 on Unix.
//! - A grant is a role in one tenant; the tenant `*` means every tenant (a county-wide
//!   admin). A person acts with their highest role where they hold it and reads where
//!   they hold a lower one ([`principal`]).
//! - Names and passwords are bounded ([`check_name`], [`check_password`]), so nothing a
//!   client sends makes the hash work or the file grow without bound.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Role};

/// File of the users in the data directory.
pub const FILE: &str = "users.json";
/// Argon2id memory cost in KiB (19 MiB, OWASP's minimum).
pub const PARAMS_M_KIB: u32 = 19 * 1024;
/// Argon2id iterations (OWASP).
pub const PARAMS_T: u32 = 2;
/// Argon2id lanes (OWASP).
pub const PARAMS_P: u32 = 1;
/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most bytes of a password (bounds the hashing work a client can ask for).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Most characters of a user name.
pub const MAX_NAME_CHARS: usize = 64;
/// Most grants one person may hold.
pub const MAX_GRANTS: usize = 64;
/// Most users in all.
pub const MAX_USERS: usize = 10_000;
/// The tenant of a grant over every tenant.
pub const ALL_TENANTS: &str = "*";

/// Why the users file or a change to it failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing the file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The request is not acceptable (a bad name, a short password, too many users).
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user '{0}'")]
    NotFound(String),
    /// The user exists already.
    #[error("user '{0}' exists already")]
    Exists(String),
}

/// A role in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The tenant, or `*` for every tenant.
    pub tenant: String,
    /// The role there.
    pub role: Role,
}

/// One person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Their sign-in name.
    pub name: String,
    /// Argon2id hash of their password, PHC form.
    pub hash: String,
    /// Their roles, per tenant.
    pub grants: Vec<Grant>,
    /// When they were made (RFC 3339).
    pub created: String,
    /// When their password was last set (RFC 3339).
    pub password_set: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    version: u32,
    users: Vec<User>,
}

/// The users, as on disk.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    users: BTreeMap<String, User>,
    /// Length and modification time of the file when last read or written: another
    /// writer (`ingest user add` while ingest runs) shows as a change.
    seen: Option<(u64, SystemTime)>,
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl Users {
    /// Reads `data_dir/users.json` (none yet: no users).
    pub fn open(data_dir: &Path) -> Result<Users, UsersError> {
        let mut users = Users { path: data_dir.join(FILE), users: BTreeMap::new(), seen: None };
        users.read()?;
        Ok(users)
    }

    fn read(&mut self) -> Result<(), UsersError> {
        let io = |e: String| UsersError::Io { path: self.path.clone(), reason: e };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.users.clear();
                self.seen = None;
                return Ok(());
            }
            Err(e) => return Err(io(e.to_string())),
        };
        let file: UsersFile = serde_json::from_str(&text).map_err(|e| io(format!("not a users file: {e}")))?;
        self.users = file.users.into_iter().map(|u| (u.name.clone(), u)).collect();
        self.seen = stamp(&self.path);
        Ok(())
    }

    /// Reads the file again if another program changed it since (returns true then).
    pub fn reload_if_changed(&mut self) -> Result<bool, UsersError> {
        if stamp(&self.path) == self.seen {
            return Ok(false);
        }
        self.read()?;
        Ok(true)
    }

    /// Writes the file (see the module's constraints).
    pub fn save(&mut self) -> Result<(), UsersError> {
        let io = |e: std::io::Error| UsersError::Io { path: self.path.clone(), reason: e.to_string() };
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = UsersFile { version: 1, users: self.users.values().cloned().collect() };
        let text = serde_json::to_string_pretty(&file).map_err(|e| UsersError::Invalid(e.to_string()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        self.seen = stamp(&self.path);
        Ok(())
    }

    /// One user.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn all(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user (not saved yet).
    pub fn add(&mut self, user: User) -> Result<(), UsersError> {
        check_name(&user.name).map_err(UsersError::Invalid)?;
        check_grants(&user.grants).map_err(UsersError::Invalid)?;
        if self.users.contains_key(&user.name) {
            return Err(UsersError::Exists(user.name));
        }
        if self.users.len() >= MAX_USERS {
            return Err(UsersError::Invalid(format!("there are {MAX_USERS} users already")));
        }
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// Changes a user in place (not saved yet).
    pub fn update(&mut self, name: &str, change: impl FnOnce(&mut User)) -> Result<(), UsersError> {
        let user = self.users.get_mut(name).ok_or_else(|| UsersError::NotFound(name.to_string()))?;
        let mut changed = user.clone();
        change(&mut changed);
        check_grants(&changed.grants).map_err(UsersError::Invalid)?;
        *user = changed;
        Ok(())
    }

    /// Removes a user (not saved yet).
    pub fn remove(&mut self, name: &str) -> Result<User, UsersError> {
        self.users.remove(name).ok_or_else(|| UsersError::NotFound(name.to_string()))
    }
}

/// A name people can type and logs can show: 1 to 64 letters (any script), digits, `.`,
/// `_`, `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(format!("a user name has 1 to {MAX_NAME_CHARS} characters"));
    }
    let first_ok = name.chars().next().is_some_and(char::is_alphanumeric);
    if !first_ok || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!(
            "user name '{}' may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A password of at least [`MIN_PASSWORD_CHARS`] characters and at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("a password has at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// Grants with a tenant name each (or `*`), at most one per tenant, at most
/// [`MAX_GRANTS`].
pub fn check_grants(grants: &[Grant]) -> Result<(), String> {
    if grants.len() > MAX_GRANTS {
        return Err(format!("at most {MAX_GRANTS} grants"));
    }
    for (i, g) in grants.iter().enumerate() {
        if g.tenant != ALL_TENANTS {
            check_name(&g.tenant).map_err(|_| format!("'{}' is not a tenant name", g.tenant.escape_debug()))?;
        }
        if grants[..i].iter().any(|h| h.tenant == g.tenant) {
            return Err(format!("tenant '{}' is granted twice", g.tenant));
        }
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants within Argon2's limits: `Params::new` cannot fail on them.
    let params = Params::new(PARAMS_M_KIB, PARAMS_T, PARAMS_P, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with Argon2id and a fresh random salt (slow on purpose: call it off
/// the async runtime).
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(format!("cannot hash the password: {e}")))
}

/// True if `password` is the one `hash` was made from. As slow as [`hash_password`]
/// whatever the answer (call it off the async runtime).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A fresh random password: 20 characters from an alphabet without look-alikes (about
/// 110 bits), easy to read out over the phone.
pub fn generate_password() -> String {
    use rand_core::RngCore as _;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY3479";
    let mut out = String::with_capacity(24);
    let mut bytes = [0u8; 64];
    rand_core::OsRng.fill_bytes(&mut bytes);
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    for b in bytes.iter().map(|&b| usize::from(b)).filter(|&b| b < limit) {
        if out.len() == 20 {
            break;
        }
        out.push(char::from(ALPHABET[b % ALPHABET.len()]));
    }
    while out.len() < 20 {
        // 64 bytes nearly always suffice; if not, draw more.
        let mut one = [0u8; 1];
        rand_core::OsRng.fill_bytes(&mut one);
        if usize::from(one[0]) < limit {
            out.push(char::from(ALPHABET[usize::from(one[0]) % ALPHABET.len()]));
        }
    }
    out
}

/// A new user record with a hashed password (slow: see [`hash_password`]).
pub fn new_user(name: &str, password: &str, grants: Vec<Grant>, now: &str) -> Result<User, UsersError> {
    check_name(name).map_err(UsersError::Invalid)?;
    check_password(password).map_err(UsersError::Invalid)?;
    check_grants(&grants).map_err(UsersError::Invalid)?;
    Ok(User {
        name: name.to_string(),
        hash: hash_password(password)?,
        grants,
        created: now.to_string(),
        password_set: now.to_string(),
    })
}

/// The principal a person's grants make (`None` without a grant: such a person cannot
/// sign in). They act with their highest role in the tenants where they hold it, and read
/// where they hold a lower one; a `*` grant at the highest role acts everywhere.
pub fn principal(user: &User) -> Option<Principal> {
    let top = user.grants.iter().map(|g| g.role).max()?;
    let acting: Vec<&Grant> = user.grants.iter().filter(|g| g.role == top).collect();
    let tenants = if acting.iter().any(|g| g.tenant == ALL_TENANTS) {
        Vec::new()
    } else {
        acting.iter().map(|g| g.tenant.clone()).collect()
    };
    let sees = user.grants.iter().filter(|g| g.role < top).map(|g| g.tenant.clone()).collect();
    Some(Principal { name: user.name.clone(), role: top, tenants, sees })
}

/// The tenants a principal administers (`None`: every tenant).
pub fn administered(p: &Principal) -> Option<Vec<String>> {
    if p.role < Role::Admin {
        return Some(Vec::new());
    }
    if p.tenants.is_empty() { None } else { Some(p.tenants.clone()) }
}

/// True if `admin` may change `tenant`'s grant (it administers it; `*` only for an
/// admin of every tenant).
pub fn may_grant(admin: &Principal, tenant: &str) -> bool {
    match administered(admin) {
        None => true,
        Some(ts) => tenant != ALL_TENANTS && ts.iter().any(|t| t == tenant),
    }
}

/// True if `admin` may manage the whole of `user` (reset their password, remove them):
/// every grant they hold is one `admin` may change, so an admin of one tenant cannot take
/// over a person who also acts elsewhere.
pub fn may_manage(admin: &Principal, user: &User) -> bool {
    admin.role >= Role::Admin && user.grants.iter().all(|g| may_grant(admin, &g.tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(tenant: &str, role: Role) -> Grant {
        Grant { tenant: tenant.into(), role }
    }

    fn user(name: &str, grants: Vec<Grant>) -> User {
        User { name: name.into(), hash: String::new(), grants, created: String::new(), password_set: String::new() }
    }

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        // A second hash of the same password has its own salt.
        assert_ne!(hash, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn names_passwords_and_grants_are_bounded() {
        assert!(check_name("wang").is_ok());
        assert!(check_name("王伟").is_ok());
        assert!(check_name("li.na-2").is_ok());
        for bad in ["", " wang", "-x", "a b", "a/b", "x\u{0}", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(300)).is_err());
        assert!(check_password("long enough pass").is_ok());
        assert!(check_grants(&[grant("county", Role::Viewer), grant("county", Role::Admin)]).is_err());
        assert!(check_grants(&[grant("a b", Role::Viewer)]).is_err());
        assert!(check_grants(&[grant("*", Role::Admin), grant("dairy", Role::Viewer)]).is_ok());
        let p = generate_password();
        assert_eq!(p.chars().count(), 20);
        assert!(check_password(&p).is_ok());
        assert_ne!(p, generate_password());
    }

    #[test]
    fn a_person_acts_with_their_highest_role_and_reads_where_they_hold_less() {
        let wang = user("wang", vec![grant("county", Role::Operator), grant("dairy", Role::Viewer)]);
        let p = principal(&wang).unwrap();
        assert_eq!(p.role, Role::Operator);
        assert!(p.may_access("county") && !p.may_access("dairy"));
        assert!(p.may_see("dairy") && !p.may_see("other"));
        let root = user("root", vec![grant("*", Role::Admin)]);
        let p = principal(&root).unwrap();
        assert!(p.tenants.is_empty() && p.may_access("anything"));
        // No grant, no principal: such a person cannot sign in (an empty scope would mean
        // every tenant).
        assert!(principal(&user("nobody", vec![])).is_none());
    }

    #[test]
    fn an_admin_of_one_tenant_manages_only_that_tenants_people() {
        let county_admin = principal(&user("a", vec![grant("county", Role::Admin)])).unwrap();
        let root = principal(&user("r", vec![grant("*", Role::Admin)])).unwrap();
        let operator = principal(&user("o", vec![grant("county", Role::Operator)])).unwrap();
        let in_county = user("wang", vec![grant("county", Role::Operator)]);
        let also_dairy = user("li", vec![grant("county", Role::Operator), grant("dairy", Role::Viewer)]);
        assert!(may_manage(&county_admin, &in_county));
        assert!(!may_manage(&county_admin, &also_dairy));
        assert!(may_grant(&county_admin, "county") && !may_grant(&county_admin, "dairy"));
        assert!(!may_grant(&county_admin, ALL_TENANTS));
        assert!(may_manage(&root, &also_dairy) && may_grant(&root, ALL_TENANTS));
        assert!(!may_manage(&operator, &in_county) && !may_grant(&operator, "county"));
    }

    #[test]
    fn the_file_survives_a_reopen_and_sees_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = Users::open(dir.path()).unwrap();
        assert!(users.is_empty());
        let mut u = user("wang", vec![grant("county", Role::Operator)]);
        u.hash = hash_password("a long password").unwrap();
        users.add(u.clone()).unwrap();
        assert!(matches!(users.add(u.clone()), Err(UsersError::Exists(_))));
        users.save().unwrap();
        let mut other = Users::open(dir.path()).unwrap();
        assert_eq!(other.get("wang"), Some(&u));
        assert!(!other.reload_if_changed().unwrap());
        users.add(user("li", vec![grant("county", Role::Viewer)])).unwrap();
        // Same length and second could hide a change on some file systems: sleep a little.
        std::thread::sleep(std::time::Duration::from_millis(20));
        users.save().unwrap();
        assert!(other.reload_if_changed().unwrap());
        assert_eq!(other.len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the users file is private: {mode:o}");
        }
    }
}
