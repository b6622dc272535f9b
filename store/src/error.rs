//! The store's one error type. Every variant that comes from a file says which file.

use std::path::PathBuf;

/// Errors of the store. I/O, database and corruption errors name the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a store file failed.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The embedded database (the sealed data) refused an operation.
    #[error("store database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// Stored bytes do not decode: a damaged block, record or key.
    #[error("store file {path}: corrupt {what}")]
    Corrupt {
        /// The file that holds the damaged bytes.
        path: PathBuf,
        /// Which item, and how it is damaged.
        what: String,
    },
    /// An earlier write or fsync of the log failed, so the store no longer knows what is
    /// durable (after a failed fsync the OS may have dropped the dirty pages). It refuses
    /// further writes until it is reopened, which replays what really reached the disk.
    #[error("store file {path}: an earlier write failed; reopen the store")]
    Poisoned {
        /// The log file whose write failed.
        path: PathBuf,
    },
    /// The configuration is invalid or disagrees with the layout already on disk.
    #[error("store config: {0}")]
    Config(String),
    /// A query asked for something that cannot be answered.
    #[error("bad query: {0}")]
    BadQuery(String),
}

impl StoreError {
    /// A closure that wraps an I/O error with the file it concerns.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    /// A closure that wraps any redb error with the database file.
    pub(crate) fn db<E: Into<redb::Error>>(path: &std::path::Path) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Db { path: path.to_path_buf(), source: Box::new(e.into()) }
    }

    /// A corruption error for `path`.
    pub(crate) fn corrupt(path: &std::path::Path, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: path.to_path_buf(), what: what.into() }
    }
}
