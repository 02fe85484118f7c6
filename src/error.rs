//! The public error type. Inside the crate `anyhow` carries context; at the API boundary every
//! failure becomes one of these kinds with a one-line message naming the file, tensor, key or
//! argument at fault.

use std::fmt;

/// What went wrong, coarsely, so that callers (and the C ABI) can branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad argument from the caller (an invalid thread count, a bad sampling parameter).
    InvalidArgument,
    /// A model file that is malformed, foreign or inconsistent.
    BadModel,
    /// An image that cannot be decoded or is refused (size limits, format).
    BadImage,
    /// A prompt that cannot be used (too long for the context, image count mismatch).
    BadPrompt,
    /// Reading a file failed.
    Io,
    /// Generation was cancelled.
    Cancelled,
    /// A bug: an internal invariant failed.
    Internal,
}

/// owlet's error: a kind and a one-line message.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand constructors used across the crate.
macro_rules! bail_kind {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($arg)*)))
    };
}
pub(crate) use bail_kind;

pub(crate) fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}
