//! The gateway's own key pair: who it is to ingest, whatever broker carries its messages.
//!
//! Made on first start from the operating system's random source and kept beside the
//! queue (`<queue dir>/gateway.key`), so it lives as long as the gateway's data and moves
//! with it. The public half goes into ingest's inventory when the gateway is enrolled; the
//! short fingerprint (`3F2A-91C0-77B4-12DE`) is what the installer reads over the phone to
//! the county so that nobody can slip their own key in between. `gateway identity` prints
//! both.
//!
//! Invariants:
//! - The secret never leaves this module except as the link key derived from it and as
//!   signatures; `Debug` does not print it.
//! - The key file is created with mode 0600 (owner read/write), written to a temporary
//!   file, synced and renamed into place, so a power cut leaves either no key or a whole
//!   one. A key file that group or others may read is refused, like ssh refuses one: a key
//!   that may have been copied is not an identity. A damaged file is refused, never
//!   silently replaced: replacing it would be a new identity that ingest does not know.
//! - Without a queue directory (tests) the identity is made in memory for the process.
//!
//! - Rotation without downtime: `gateway identity --next` makes the next key beside the
//!   current one (`gateway.next.key`) and prints it; the county enrols it next to the
//!   current one (both verify); at its next start the gateway moves to it (the current key
//!   is kept as `gateway.old.key`, in case the change must be undone), and the county
//!   removes the old key. A restart before the next key is enrolled moves to it all the
//!   same: the gateway's messages wait in its queue until the county enrols it.
//!
//! File format: one line `village-telemetry gateway key v1 <64 hex digits of the seed>`.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use protocol::auth::{self, AuthError, KeyId, LinkKey};
use rand_core::{OsRng, RngCore as _};

/// Name of the key file in the queue directory.
pub const FILE: &str = "gateway.key";
/// The next key during a rotation, taken at the next start.
pub const NEXT_FILE: &str = "gateway.next.key";
/// The key before the last rotation.
pub const OLD_FILE: &str = "gateway.old.key";
/// What the key file's one line starts with.
const PREFIX: &str = "village-telemetry gateway key v1 ";

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read, created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Group or others may read or write the key file.
    #[error(
        "{path}: permissions {mode:04o} let others read the gateway key; chmod 600 it, or, if it may have been copied, remove it and enrol the new key"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key file (damaged, or something else).
    #[error(
        "{path}: not a gateway key file ({why}); it is not replaced, since a new key is a new identity that ingest does not know"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: &'static str,
    },
}

/// The gateway's key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

/// Whether [`Identity::load_or_create`] found a key or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from the key file.
    Loaded,
    /// Made now and written to the key file: it must be enrolled before ingest accepts
    /// anything from this gateway.
    Created,
    /// Made now in memory (no queue directory).
    Ephemeral,
    /// The next key (`gateway.next.key`) was taken now: a rotation finished.
    Rotated,
}

impl Identity {
    /// Loads the key from `dir/gateway.key`, or makes one and writes it there if the file
    /// does not exist; without a directory, a key for this process only.
    pub fn load_or_create(dir: Option<&Path>) -> Result<(Identity, Origin), IdentityError> {
        let Some(dir) = dir else {
            return Ok((Identity::generate(), Origin::Ephemeral));
        };
        let path = dir.join(FILE);
        if dir.join(NEXT_FILE).exists() {
            return Identity::take_next(dir).map(|id| (id, Origin::Rotated));
        }
        match std::fs::metadata(&path) {
            Ok(_) => Identity::load(&path).map(|id| (id, Origin::Loaded)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate();
                id.write(dir, FILE)?;
                Ok((id, Origin::Created))
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// The next key of a rotation in `dir` (`gateway.next.key`), made now if there is none;
    /// true if it was made now. The gateway keeps its current key until its next start.
    pub fn load_or_create_next(dir: &Path) -> Result<(Identity, bool), IdentityError> {
        let path = dir.join(NEXT_FILE);
        if path.exists() {
            return Identity::load(&path).map(|id| (id, false));
        }
        let id = Identity::generate();
        id.write(dir, NEXT_FILE)?;
        Ok((id, true))
    }

    /// Moves to the next key: the current key file becomes `gateway.old.key`, the next
    /// one `gateway.key`, the directory is synced.
    fn take_next(dir: &Path) -> Result<Identity, IdentityError> {
        let (next, current, old) = (dir.join(NEXT_FILE), dir.join(FILE), dir.join(OLD_FILE));
        let id = Identity::load(&next)?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| IdentityError::Io { path: p, source }
        };
        if current.exists() {
            std::fs::rename(&current, &old).map_err(io(&current))?;
        }
        std::fs::rename(&next, &current).map_err(io(&next))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        tracing::warn!(
            message = "Gateway key rotated: the next key is the gateway's key now; the county removes the old one once this one delivers.",
            fingerprint = %id.fingerprint(),
            old = %old.display()
        );
        Ok(id)
    }

    /// Reads a key file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions { path: path.to_path_buf(), mode });
        }
        let text = std::fs::read(path).map_err(io)?;
        let damaged = |why| IdentityError::Damaged { path: path.to_path_buf(), why };
        let text = std::str::from_utf8(&text).map_err(|_| damaged("not text"))?;
        let hex = text.trim_end().strip_prefix(PREFIX).ok_or_else(|| damaged("unknown header"))?;
        let seed = unhex32(hex).ok_or_else(|| damaged("the key is not 64 hex digits"))?;
        Ok(Identity::from_seed(seed))
    }

    /// An identity from a known seed (tests, simulations that enrol their own gateways).
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        Identity { key: SigningKey::from_bytes(&seed) }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Identity {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        Identity::from_seed(seed)
    }

    /// Writes the key file `name` into `dir` (created if missing): mode 0600, temporary
    /// file, sync, rename, sync of the directory. Never overwrites an existing key file.
    fn write(&self, dir: &Path, name: &str) -> Result<(), IdentityError> {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| IdentityError::Io { path: p, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // A temporary file left by a power cut during an earlier first start holds a key
        // that was never in use.
        let _ = std::fs::remove_file(&tmp);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
        let line = format!("{PREFIX}{}\n", hex(self.key.as_bytes()));
        f.write_all(line.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(IdentityError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a key file appeared meanwhile"),
            });
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(())
    }

    /// The public half, as the inventory lists it.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half in hex (64 digits), the form the inventory and `gateway identity` use.
    pub fn public_hex(&self) -> String {
        hex(self.public().as_bytes())
    }

    /// The short fingerprint to read over the phone.
    pub fn fingerprint(&self) -> String {
        auth::fingerprint(&self.public())
    }

    /// The key id envelopes signed with this key carry.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.public())
    }

    /// The link key shared with ingest (whose public key is `ingest`), for this gateway's
    /// tenant and id: what every uplink message is authenticated with.
    pub fn link_key(&self, ingest: &VerifyingKey, tenant: &str, gateway: &str) -> Result<LinkKey, AuthError> {
        LinkKey::for_gateway(&self.key, ingest, tenant, gateway)
    }

    /// The signing key, for what the gateway signs itself.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_on_first_start_with_mode_0600_and_the_same_key_is_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let (made, origin) = Identity::load_or_create(Some(dir.path())).unwrap();
        assert_eq!(origin, Origin::Created);
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, origin) = Identity::load_or_create(Some(dir.path())).unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(again.public(), made.public());
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
        assert_eq!(made.public_hex().len(), 64);
        assert!(!format!("{made:?}").contains(&hex(made.key.as_bytes())), "Debug does not print the secret");
    }

    #[test]
    fn a_key_file_others_can_read_or_a_damaged_one_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (made, _) = Identity::load_or_create(Some(dir.path())).unwrap();
        let path = dir.path().join(FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load_or_create(Some(dir.path())).unwrap_err();
        assert!(matches!(e, IdentityError::Permissions { mode: 0o644, .. }), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Identity::load(&path).unwrap().public(), made.public(), "positive control");

        std::fs::write(&path, "village-telemetry gateway key v1 zz\n").unwrap();
        let e = Identity::load_or_create(Some(dir.path())).unwrap_err();
        assert!(matches!(e, IdentityError::Damaged { .. }), "{e}");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("zz\n"), "the damaged file is left alone");
    }

    #[test]
    fn two_gateways_get_different_keys_and_the_link_key_matches_ingests() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert_ne!(a.public(), b.public());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let ingest = SigningKey::from_bytes(&[2u8; 32]);
        let ours = a.link_key(&ingest.verifying_key(), "county", "gw-a").unwrap();
        let theirs = LinkKey::for_ingest(&ingest, &a.public(), "county", "gw-a").unwrap();
        let topic = protocol::topic::Topic::new("county", "gw-a", protocol::topic::Channel::Status);
        let wire = auth::seal_mac(&topic, &ours, 1, b"{}");
        assert_eq!(auth::open_mac(&wire, &topic, &theirs).map(|o| o.body), Ok(&b"{}"[..]));
        let (_, origin) = Identity::load_or_create(None).unwrap();
        assert_eq!(origin, Origin::Ephemeral);
    }

    #[test]
    fn a_next_key_is_made_beside_the_current_one_and_taken_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (current, _) = Identity::load_or_create(Some(dir.path())).unwrap();
        let (next, made) = Identity::load_or_create_next(dir.path()).unwrap();
        assert!(made);
        assert_ne!(current.public(), next.public());
        let (again, made) = Identity::load_or_create_next(dir.path()).unwrap();
        assert!(!made && again.public() == next.public(), "asked twice, the same next key");
        // The running gateway keeps its key until it restarts.
        let (loaded, origin) = Identity::load_or_create(Some(dir.path())).unwrap();
        assert_eq!((origin, loaded.public()), (Origin::Rotated, next.public()), "taken at the next start");
        let (loaded, origin) = Identity::load_or_create(Some(dir.path())).unwrap();
        assert_eq!((origin, loaded.public()), (Origin::Loaded, next.public()));
        assert_eq!(Identity::load(&dir.path().join(OLD_FILE)).unwrap().public(), current.public(), "the old key kept");
    }
}
