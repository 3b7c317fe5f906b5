//! # nri-plugin
//!
//! The plugin side of containerd's [Node Resource Interface](https://github.com/containerd/nri)
//! (NRI), in Rust: implement [`Plugin`], hand it to a [`Runner`], and the runtime (containerd,
//! CRI-O) calls you for every pod and container lifecycle event. A plugin can observe those
//! events, adjust containers as they are created, update the resources of running containers,
//! and refuse containers.
//!
//! The crate speaks the protocol of NRI [`NRI_API_VERSION`] and serves older runtimes too (it is
//! tested against containerd 1.7.24, which has NRI v0.6.1): events that runtimes up to NRI v0.11
//! deliver as `StateChange` notifications reach the same handler methods as the dedicated
//! requests of newer ones.
//!
//! ## Observe
//!
//! Override the handlers you need; all others have defaults. Subscribe to the events you handle
//! with [`Plugin::events`] (default: [`EventMask::LIFECYCLE`], the eleven events every runtime
//! knows).
//!
//! ```no_run
//! use nri_plugin::api::{Container, Event, PodSandbox};
//! use nri_plugin::{EventMask, HandlerResult, Plugin, Runner};
//!
//! struct Observer;
//!
//! impl Plugin for Observer {
//!     fn events(&self) -> EventMask {
//!         EventMask::of(&[Event::START_CONTAINER, Event::REMOVE_CONTAINER])
//!     }
//!
//!     async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
//!         println!("starting {}/{} in {}", pod.name, ctr.name, ctr.linux.cgroups_path);
//!         Ok(())
//!     }
//!
//!     async fn remove_container(&self, _pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
//!         println!("removed {}", ctr.id);
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), nri_plugin::Error> {
//!     // Registers as "observer" with index 50, connects to /var/run/nri/nri.sock, reconnects
//!     // when containerd restarts; runs until the process ends.
//!     Runner::builder("observer", "50").build()?.run(Observer).await
//! }
//! ```
//!
//! ## Adjust a container being created
//!
//! Return an adjustment from [`Plugin::create_container`], built with [`AdjustmentBuilder`]
//! (environment, mounts, annotations, hooks, devices, resources, …). The runtime applies it
//! before the container exists. `examples/adjuster.rs` is a complete plugin doing this.
//!
//! ```
//! use nri_plugin::api::{Container, CreateContainerResponse, PodSandbox};
//! use nri_plugin::{AdjustmentBuilder, HandlerResult, Plugin};
//!
//! struct Adjuster;
//!
//! impl Plugin for Adjuster {
//!     async fn create_container(&self, pod: &PodSandbox, _ctr: &Container) -> HandlerResult<CreateContainerResponse> {
//!         Ok(AdjustmentBuilder::new()
//!             .add_env("POD_NAMESPACE", &pod.namespace)
//!             .add_bind_mount("/var/lib/shared", "/shared", &["ro"])
//!             .set_memory_limit(256 << 20)
//!             .into_response())
//!     }
//! }
//! ```
//!
//! ## Update running containers
//!
//! Answer `UpdateContainer` (or `CreateContainer`, `StopContainer`, `Synchronize`) with updates
//! built by [`UpdateBuilder`], or send updates whenever you like through a [`RuntimeClient`]:
//!
//! ```no_run
//! use nri_plugin::{Plugin, Runner, RuntimeClient, UpdateBuilder};
//!
//! # struct MyPlugin;
//! # impl Plugin for MyPlugin {}
//! async fn throttle(client: &RuntimeClient, container_id: &str) -> Result<(), nri_plugin::Error> {
//!     let update = UpdateBuilder::new(container_id).set_cpu_quota(20_000).set_cpu_period(100_000).build();
//!     let failed = client.update_containers(vec![update], Vec::new()).await?;
//!     assert!(failed.is_empty(), "the runtime could not apply {failed:?}");
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), nri_plugin::Error> {
//! let runner = Runner::builder("throttler", "60").build()?;
//! let client = runner.runtime_client(); // valid across reconnects
//! tokio::spawn(async move { throttle(&client, "4f3c…").await });
//! runner.run(MyPlugin).await
//! # }
//! ```
//!
//! ## Refuse a container
//!
//! An error returned from [`Plugin::create_container`] or [`Plugin::start_container`] fails
//! that container; the runtime reports the error's message (containerd: `failed to get NRI
//! adjustment for container: …`).
//!
//! ```
//! use nri_plugin::api::{Container, CreateContainerResponse, PodSandbox};
//! use nri_plugin::{HandlerResult, Plugin};
//!
//! struct NoPrivileged;
//!
//! impl Plugin for NoPrivileged {
//!     async fn create_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<CreateContainerResponse> {
//!         if ctr.annotations.get("example.com/deny").is_some_and(|v| v == "true") {
//!             return Err(format!("{}/{}: container {} is denied by policy", pod.namespace, pod.name, ctr.name).into());
//!         }
//!         Ok(CreateContainerResponse::new())
//!     }
//! }
//! ```
//!
//! ## Deadlines
//!
//! A runtime drops a plugin that does not answer within its request timeout (2 s by default,
//! sent in `Configure`); containers then proceed without the plugin. The runner therefore answers
//! every request by a [`Deadline`] — the runtime's timeout (from `Configure`, or the request's
//! own if shorter) minus a margin ([`DeadlinePolicy`]) — with [`Plugin::on_deadline`]'s choice if
//! the handler is not done: an error by default (which refuses a container being created or
//! started), or an empty success. The handler keeps running in the background. Handlers see their
//! deadline through [`Deadline::current`].
//!
//! NRI up to v0.12.2 has no way for a plugin to ask for a longer timeout: a proposal to add
//! `request_timeout` to `ConfigureResponse` (containerd/nri#304) is not in any release, so this
//! crate does not send it; raise containerd's `plugin_request_timeout` instead.
//!
//! ## Stopping
//!
//! [`Runner::run_until`] (or a [`StopHandle`] from [`Runner::stop_handle`]) stops gracefully: the
//! requests in flight are answered, later ones reach no handler, the connection is closed and
//! `run` returns `Ok(())`. Before closing, a short farewell connection makes containerd drop the
//! plugin from its list without logging an error ([`RunnerBuilder::farewell`]).
//!
//! ```no_run
//! # use nri_plugin::{Plugin, Runner};
//! # struct MyPlugin;
//! # impl Plugin for MyPlugin {}
//! # async fn f() -> Result<(), nri_plugin::Error> {
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! Runner::builder("my-plugin", "10").build()?.run_until(MyPlugin, ctrl_c).await
//! # }
//! ```
//!
//! ## Testing a plugin
//!
//! The `test-peer` feature adds the module `nri_plugin::testing`: an in-process
//! runtime that drives a plugin over a real unix socket with the same wire protocol, in both
//! delivery styles, so plugins can be tested without containerd.
//!
//! ## Semantics worth knowing
//!
//! * `StartContainer` runs after the container's task (cgroup, init process) exists and before its
//!   entrypoint is executed: the race-free moment to put a per-container policy in place. At
//!   `CreateContainer` the cgroup does not exist yet.
//! * Handlers run concurrently; a slow handler does not hold up other requests.
//! * The generated protocol messages ([`api`]) are [rust-protobuf](https://docs.rs/protobuf) 3
//!   messages; their sub-message fields are `protobuf::MessageField`s, which dereference to a
//!   default instance when unset, so `ctr.linux.cgroups_path` reads without unwrapping.
//!
//! ## Transport (internal)
//!
//! NRI runs two ttrpc connections over one unix socket with its own framing (connection id,
//! length, payload); the plugin's service is on connection 1, the runtime's on connection 2.
//! Frames this crate sends carry at most 4096 bytes (the Go peer reads them through a 4096-byte
//! buffer); incoming lengths are checked before allocating. The runner uses the socket inherited
//! through `NRI_PLUGIN_SOCKET` when the runtime launched the plugin, and otherwise connects to
//! [`DEFAULT_SOCKET_PATH`] (or [`RunnerBuilder::socket_path`]), reconnecting as soon as the socket
//! reappears (inotify). None of this is public API; the `test-peer` feature exposes the frame
//! codec for tests and fuzzers.

#![deny(missing_docs)]

pub mod api {
    //! Generated NRI protocol messages (package `nri.pkg.api.v1alpha1`), from the crate's
    //! `proto/nri.proto`, which matches NRI [`NRI_API_VERSION`](crate::NRI_API_VERSION) field for
    //! field. The proto file's comments document the messages, fields and enums below.
    //!
    //! These are rust-protobuf 3 messages: plain structs with public fields, `MessageField<T>`
    //! for sub-messages (dereferences to a default instance when unset; test with `is_some()`),
    //! `EnumOrUnknown<E>` for enums (`.enum_value()`), maps as `HashMap`, and
    //! [`protobuf::Message`] for encoding. Build adjustments and updates
    //! with [`AdjustmentBuilder`](crate::AdjustmentBuilder) and
    //! [`UpdateBuilder`](crate::UpdateBuilder) rather than by hand.
    //!
    //! The generated accessors, descriptors and enum values are not documented individually.
    // Generated code: rust-protobuf emits undocumented accessors and reflection helpers.
    #![allow(missing_docs, clippy::all, non_snake_case, non_camel_case_types, unused_imports)]
    #![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
    include!(concat!(env!("OUT_DIR"), "/nri_proto/mod.rs"));
    pub use self::nri::*;
}

pub mod adjust;
mod client;
mod deadline;
mod error;
mod events;
mod farewell;
// The frame codec is internal; `testing::wire` re-exports parts of it for tests and fuzzers.
#[cfg_attr(not(feature = "test-peer"), allow(dead_code))]
mod mux;
mod plugin;
mod rpc;
mod runner;
mod stop;
#[cfg(feature = "test-peer")]
pub mod testing;
mod watch;

/// The [rust-protobuf](https://docs.rs/protobuf) crate the [`api`] messages are made with.
///
/// Kept public because it is part of this crate's API anyway: the messages' field types
/// (`MessageField`, `EnumOrUnknown`) and traits (`Message` for encoding, `MessageFull` for
/// reflection and JSON) come from it. Use this re-export instead of depending on `protobuf`
/// yourself, so the versions always match. A major version change of `protobuf` is a breaking
/// change of this crate.
pub use protobuf;

pub use adjust::{AdjustmentBuilder, UpdateBuilder};
pub use client::{RuntimeClient, DEFAULT_CALL_TIMEOUT};
pub use deadline::{
    Deadline, DeadlinePolicy, Overrun, OverrunAnswer, DEFAULT_DEADLINE_MARGIN, DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{BoxError, Error, HandlerResult, MuxError};
pub use events::{event_name, EventMask};
pub use plugin::Plugin;
pub use runner::{
    validate_index, validate_name, Backoff, ConnectionEvent, Runner, RunnerBuilder, DEFAULT_CONFIGURE_TIMEOUT,
    DEFAULT_REGISTRATION_TIMEOUT, DEFAULT_SOCKET_PATH, FAREWELL_TIMEOUT, INDEX_RULE, NAME_RULE, NRI_API_VERSION,
    PLUGIN_IDX_ENV, PLUGIN_NAME_ENV, PLUGIN_SOCKET_ENV,
};
pub use stop::{StopHandle, STOP_CLOSE_TIMEOUT};
