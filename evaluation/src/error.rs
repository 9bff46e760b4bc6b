//! Errors of the evaluation crate. Every message names the offending file, argument or
//! item, so a command-line user can act on it without a backtrace.

use std::path::PathBuf;

/// An evaluation error.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what the metric needs.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The inputs (already in memory) are inconsistent or invalid.
    #[error("{0}")]
    Input(String),
}

impl EvalError {
    /// An error about the content of `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::File {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error about in-memory inputs.
    pub fn input(message: impl Into<String>) -> Self {
        EvalError::Input(message.into())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }

    /// Prefixes an `Input` error with the file it came from (other kinds are kept).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            EvalError::Input(message) => EvalError::File {
                path: path.into(),
                message,
            },
            other => other,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
