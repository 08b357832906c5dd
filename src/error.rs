//! One error type for the whole runtime. Messages use runc's words where callers
//! (podman, containerd, CRI-O, test suites) match on them, e.g. "does not exist".

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container ID format: {0:?}")]
    InvalidId(String),

    #[error("container {0:?} does not exist")]
    NotExist(String),

    #[error("container with given ID already exists: {0:?}")]
    AlreadyExists(String),

    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: String },

    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },

    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("unknown backend {name:?} (configured backends: {known})")]
    UnknownBackend { name: String, known: String },

    #[error("backend {name:?} may not be selected by annotation {annotation} (allowed: {allowed})")]
    BackendNotAllowed {
        name: String,
        annotation: &'static str,
        allowed: String,
    },

    #[error("{command} is not supported by backend {backend:?}")]
    Unsupported { command: String, backend: String },

    #[error("{0}")]
    Usage(String),

    #[error("state of container {id:?}: {reason}")]
    State { id: String, reason: String },

    #[error("backend {backend:?}: {reason}")]
    Backend { backend: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The OS error number behind an I/O error, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attach a context line to I/O errors: `fs::read(p).context(|| format!("read {p}"))`.
pub trait IoContext<T> {
    fn context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::io(f(), std::io::Error::from(e)))
    }
}
