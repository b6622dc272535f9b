//! Identifiers for tenants, gateways and devices.
//!
//! Ids travel inside MQTT topic levels, Prometheus labels, file names and URLs, so they are
//! restricted to a set that is safe in all of them: 1 to 64 characters of ASCII letters,
//! digits, `_`, `-` and `.`. A `/`, `+` or `#` in an id would let one gateway's topic reach
//! into another's subtree; refusing them here keeps the ACL meaningful.

use core::fmt;

/// Longest id accepted anywhere in the system.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    TooLong(usize),
    /// The id contains a character outside `[A-Za-z0-9_.-]`.
    BadChar(char),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("id is empty"),
            IdError::TooLong(n) => write!(f, "id is {n} characters long, at most {MAX_ID_LEN} allowed"),
            IdError::BadChar(c) => write!(f, "id contains {c:?}; only letters, digits, '_', '-' and '.' are allowed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IdError {}

/// Checks that `id` may be used as a tenant, gateway or device id.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    match id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_break_a_topic_are_refused() {
        assert_eq!(validate("gw-01"), Ok(()));
        assert_eq!(validate("cow.1042_a"), Ok(()));
        assert_eq!(validate(""), Err(IdError::Empty));
        assert_eq!(validate("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(validate("gw+"), Err(IdError::BadChar('+')));
        assert_eq!(validate("#"), Err(IdError::BadChar('#')));
        assert_eq!(validate("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(validate(&"x".repeat(65)), Err(IdError::TooLong(65)));
    }
}
