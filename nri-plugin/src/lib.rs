//! # nri-plugin
//!
//! The plugin side of containerd's [Node Resource Interface](https://github.com/containerd/nri)
//! (NRI), in Rust: implement [`Plugin`], hand it to a [`Runner`], and the runtime calls you for
//! every pod and container lifecycle event.
//!
//! ```no_run
//! use nri_plugin::api::{Container, PodSandbox};
//! use nri_plugin::{HandlerResult, Plugin, Runner};
//!
//! struct Hello;
//!
//! #[nri_plugin::async_trait]
//! impl Plugin for Hello {
//!     async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
//!         println!("starting {}/{} in {}", pod.name, ctr.name, ctr.linux.cgroups_path);
//!         Ok(()) // return Err(..) to refuse the container
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), nri_plugin::Error> {
//!     Runner::builder("hello", "50").build()?.run(Hello).await
//! }
//! ```
//!
//! ## What is implemented
//!
//! * **Transport** ([`mux`]): NRI's connection multiplexer over one unix socket (8-byte big-endian
//!   frame header: connection id, payload length), with the plugin's ttrpc service on connection 1
//!   and the runtime's on connection 2. Outgoing frames never exceed 4096 bytes of payload (the Go
//!   peer reads frames through a 4096-byte buffer); incoming frames are length-checked before any
//!   allocation.
//! * **RPC**: ttrpc (the `ttrpc` crate, async) on each logical connection. Each logical connection
//!   is bridged to an in-memory duplex pipe that the ttrpc client/server run on, because ttrpc's
//!   async API accepts any `AsyncRead + AsyncWrite` stream.
//! * **Protocol** ([`api`]): the project's own `proto/nri.proto` (package `nri.pkg.api.v1alpha1`,
//!   field numbers identical to NRI v0.12), compiled at build time into `OUT_DIR` by rust-protobuf's
//!   pure-Rust code generator (no `protoc` needed).
//! * **Both delivery styles**: the dedicated RPCs of NRI v0.12+ and the `StateChange`
//!   notifications of runtimes up to v0.11 reach the same [`Plugin`] methods.
//! * **Runner** ([`Runner`]): connects to `/var/run/nri/nri.sock` (configurable) or uses the socket
//!   inherited through `NRI_PLUGIN_SOCKET`, registers, answers `Configure` with the event mask,
//!   reassembles chunked `Synchronize`, dispatches requests concurrently, answers each by a
//!   [`Deadline`] below the runtime's request timeout, reconnects as soon as the runtime's socket
//!   reappears (inotify on its directory; slow fallback retry) and reports connection events to
//!   a callback.
//! * **Runtime calls**: [`RuntimeClient::update_containers`].
//! * **Testing** (`test-peer` feature): `testing::RuntimePeer`, an in-process runtime side
//!   that drives a plugin over a real unix socket.
//!
//! ## Semantics worth knowing
//!
//! * An error returned from [`Plugin::create_container`] or [`Plugin::start_container`] fails that
//!   container in containerd. A handler that exceeds the runtime's request timeout (2 s by default)
//!   would make the runtime drop the plugin instead (fail open); the runner answers in its place
//!   by the handler's [`Deadline`] (timeout minus a margin) with [`Plugin::on_deadline`]'s choice,
//!   an error by default.
//! * `StartContainer` runs after the container's task (cgroup, init process) exists and before its
//!   entrypoint is executed: the race-free moment to put a per-container policy in place.

#![warn(missing_docs)]

pub mod api {
    //! Generated NRI protocol messages (package `nri.pkg.api.v1alpha1`), from `proto/nri.proto`.
    //!
    //! These are rust-protobuf 3 messages: plain structs with public fields, `MessageField<T>`
    //! for sub-messages (dereferences to a default instance when unset), `EnumOrUnknown<E>` for
    //! enums, and `protobuf::Message` for encoding (`write_to_bytes`, `parse_from_bytes`).
    #![allow(missing_docs, clippy::all, non_snake_case, non_camel_case_types, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/nri_proto/mod.rs"));
    pub use self::nri::*;
}

mod client;
mod deadline;
mod error;
mod events;
pub mod mux;
mod plugin;
mod rpc;
mod runner;
#[cfg(feature = "test-peer")]
pub mod testing;
mod watch;

pub use async_trait::async_trait;
pub use protobuf;

pub use client::{RuntimeClient, DEFAULT_CALL_TIMEOUT};
pub use deadline::{
    Deadline, DeadlinePolicy, Overrun, OverrunAnswer, DEFAULT_DEADLINE_MARGIN, DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{BoxError, Error, HandlerResult, MuxError};
pub use events::{event_name, EventMask};
pub use plugin::Plugin;
pub use rpc::{PLUGIN_SERVICE, RUNTIME_SERVICE};
pub use runner::{
    validate_index, validate_name, Backoff, ConnectionEvent, Runner, RunnerBuilder, DEFAULT_CONFIGURE_TIMEOUT,
    DEFAULT_REGISTRATION_TIMEOUT, DEFAULT_SOCKET_PATH, NRI_API_VERSION, PLUGIN_IDX_ENV, PLUGIN_NAME_ENV,
    PLUGIN_SOCKET_ENV,
};
