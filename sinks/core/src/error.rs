//! How a sink says what went wrong, so the pipeline can decide between retrying, dead-lettering
//! and stopping without knowing the transport.

use std::error::Error as StdError;
use std::time::Duration;

type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// A failed publish, classified by what the pipeline should do about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying later: a broker not reachable, a timeout, a 503, a full buffer.
    #[error("transient failure at {sink}: {message}")]
    Transient {
        sink: String,
        message: String,
        /// How long the far side asked us to wait (an HTTP `Retry-After`), if it said.
        retry_after: Option<Duration>,
        #[source]
        source: Option<Cause>,
    },
    /// Retrying the same message cannot succeed: a record too large, a 4xx, an unroutable message.
    #[error("permanent failure at {sink}: {message}")]
    Permanent {
        sink: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// The sink itself is misconfigured (bad URI, missing credentials): stop and tell the operator.
    #[error("configuration error at {sink}: {message}")]
    Config {
        sink: String,
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl SinkError {
    pub fn transient(sink: &str, message: impl Into<String>) -> Self {
        Self::Transient {
            sink: sink.to_owned(),
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    pub fn permanent(sink: &str, message: impl Into<String>) -> Self {
        Self::Permanent {
            sink: sink.to_owned(),
            message: message.into(),
            source: None,
        }
    }

    pub fn config(sink: &str, message: impl Into<String>) -> Self {
        Self::Config {
            sink: sink.to_owned(),
            message: message.into(),
            source: None,
        }
    }

    /// Wraps an I/O error, classifying it by kind: a full disk or a closed pipe will not heal by
    /// itself within a retry, an interruption or a would-block will.
    pub fn io(sink: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = err.to_string();
        let source = Some(Box::new(err) as Cause);
        match source
            .as_ref()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .map(|e| e.kind())
        {
            Some(Interrupted | WouldBlock | TimedOut) => Self::Transient {
                sink: sink.to_owned(),
                message,
                retry_after: None,
                source,
            },
            Some(NotFound | PermissionDenied | IsADirectory) => Self::Config {
                sink: sink.to_owned(),
                message,
                source,
            },
            _ => Self::Permanent {
                sink: sink.to_owned(),
                message,
                source,
            },
        }
    }

    /// Attaches the underlying error, kept for logs (`{:#}` / the source chain).
    pub fn with_source(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        let slot = match &mut self {
            Self::Transient { source, .. }
            | Self::Permanent { source, .. }
            | Self::Config { source, .. } => source,
        };
        *slot = Some(Box::new(cause));
        self
    }

    /// For a transient error: the far side asked not to be called again before `delay`.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let Self::Transient { retry_after, .. } = &mut self {
            *retry_after = Some(delay);
        }
        self
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The sink named in the error.
    pub fn sink(&self) -> &str {
        match self {
            Self::Transient { sink, .. }
            | Self::Permanent { sink, .. }
            | Self::Config { sink, .. } => sink,
        }
    }

    /// The message without the class and sink prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. }
            | Self::Permanent { message, .. }
            | Self::Config { message, .. } => message,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Which of the three it is, for code that decides (retry, dead-letter, refuse to start).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transient { .. } => ErrorKind::Transient,
            Self::Permanent { .. } => ErrorKind::Permanent,
            Self::Config { .. } => ErrorKind::Config,
        }
    }

    /// `transient`, `permanent` or `config`: the label used in metrics.
    pub fn class(&self) -> &'static str {
        match self.kind() {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Config => "config",
        }
    }
}

/// The class of a [`SinkError`], without its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Worth retrying: the far side may take it later.
    Transient,
    /// This event will never go: dead-letter it.
    Permanent,
    /// Nothing will go: the sink is configured wrong.
    Config,
}
