//! Error types.

use std::time::Duration;

/// Boxed error returned by [`Plugin`](crate::Plugin) handlers.
///
/// Any `std::error::Error + Send + Sync` (and `anyhow::Error`, `String`, `&str` through `.into()`)
/// converts into it with `?` or `.into()`. When a handler returns an error the runtime receives a
/// ttrpc error status (code `UNKNOWN`) carrying the error's message; for `CreateContainer` and
/// `StartContainer` that fails the container, which is how a plugin refuses one.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result type of [`Plugin`](crate::Plugin) handlers.
pub type HandlerResult<T> = Result<T, BoxError>;

/// Errors of the multiplexed connection to the runtime (NRI runs two ttrpc connections over one
/// unix socket; the frame codec is internal, see the crate-level design notes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// Reading from or writing to the trunk failed.
    #[error("trunk I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame header announced a payload larger than the limit (a 10-byte ttrpc header plus
    /// ttrpc's 4 MiB message limit).
    #[error("frame for connection {conn_id} announces {len} bytes, more than the {max} byte limit")]
    Oversized {
        /// Connection id from the header.
        conn_id: u32,
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The trunk ended in the middle of a frame.
    #[error("trunk closed in the middle of a frame ({buffered} bytes of an incomplete frame)")]
    Truncated {
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
    /// A logical connection's read queue overflowed (its reader is not keeping up).
    #[error("read queue of connection {0} overflowed")]
    QueueOverflow(u32),
    /// Connection id 0 is reserved and cannot be opened.
    #[error("connection id 0 is reserved")]
    ReservedConnId,
    /// The multiplexer is closed.
    #[error("multiplexer closed")]
    Closed,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plugin name does not match `[A-Za-z0-9_.+-]+` ([`NAME_RULE`](crate::NAME_RULE)).
    #[error("invalid plugin name {0:?}: {rule}", rule = crate::NAME_RULE)]
    InvalidName(String),
    /// The plugin index is not exactly two ASCII digits ([`INDEX_RULE`](crate::INDEX_RULE)).
    #[error("invalid plugin index {0:?}: {rule}", rule = crate::INDEX_RULE)]
    InvalidIndex(String),
    /// The event mask has bits no NRI event corresponds to.
    #[error("invalid event mask {0:#x}: has bits of no known NRI event")]
    InvalidEventMask(u32),
    /// `NRI_PLUGIN_SOCKET` does not hold a usable file descriptor number.
    #[error("invalid NRI_PLUGIN_SOCKET value {0:?}")]
    InvalidSocketEnv(String),
    /// Connecting to the NRI socket failed.
    #[error("failed to connect to NRI socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Other I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The multiplexed connection failed.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// The peer answered a call with a non-OK ttrpc status.
    #[error("rpc {method} failed with status {code}: {message}")]
    Rpc {
        /// Method called.
        method: String,
        /// ttrpc/gRPC status code (2 = UNKNOWN, 4 = DEADLINE_EXCEEDED, 12 = UNIMPLEMENTED, ...).
        code: i32,
        /// Status message.
        message: String,
    },
    /// A call failed below the RPC level (connection closed, I/O error).
    #[error("rpc {method} failed: {message}")]
    Transport {
        /// Method called.
        method: String,
        /// Description.
        message: String,
    },
    /// A call did not complete in time.
    #[error("rpc {method} timed out after {timeout:?}")]
    Timeout {
        /// Method called.
        method: String,
        /// Timeout that elapsed.
        timeout: Duration,
    },
    /// A protobuf message could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// There is no connection to the runtime right now.
    #[error("not connected to the runtime")]
    NotConnected,
    /// The runtime did not register/configure the plugin in time.
    #[error("runtime did not {stage} the plugin within {timeout:?}")]
    HandshakeTimeout {
        /// Which step timed out.
        stage: &'static str,
        /// Timeout that elapsed.
        timeout: Duration,
    },
    /// The ttrpc layer failed to start.
    #[error("ttrpc error: {0}")]
    Ttrpc(String),
}
