//! An in-process stand-in for the runtime side of NRI, to drive a plugin in tests
//! (feature `test-peer`).
//!
//! [`RuntimePeer`] listens on a unix socket like containerd's NRI adaptation does; a plugin (for
//! example one run by a [`Runner`](crate::Runner) pointed at [`RuntimePeer::path`]) connects, and
//! [`RuntimePeer::accept`] returns a [`PeerConnection`] that serves the `Runtime` service
//! (RegisterPlugin, UpdateContainers) and calls the plugin's `Plugin` service over the same
//! multiplexed wire protocol a real runtime uses.
//!
//! ```no_run
//! # use nri_plugin::testing::*;
//! # use nri_plugin::api::*;
//! # async fn f(pod: PodSandbox, ctr: Container) -> Result<(), nri_plugin::Error> {
//! let dir = tempfile_dir();
//! # fn tempfile_dir() -> std::path::PathBuf { unimplemented!() }
//! let peer = RuntimePeer::bind(dir.join("nri.sock"))?;
//! // ... start the plugin's Runner on peer.path() ...
//! let mut conn = peer.accept().await?;
//! let (registration, configured) = conn.handshake().await?;
//! conn.synchronize(vec![pod.clone()], vec![ctr.clone()], 100).await?;
//! conn.send(Delivery::StateChange, LifecycleEvent::StartContainer(pod, ctr)).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::{EnumOrUnknown, Message, MessageField};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use ttrpc::Code;

use crate::api::{
    ConfigureRequest, ConfigureResponse, Container, ContainerUpdate, CreateContainerRequest, CreateContainerResponse,
    Empty, Event, LinuxResources, PodSandbox, PostCreateContainerRequest, PostStartContainerRequest,
    PostUpdateContainerRequest, PostUpdatePodSandboxRequest, RegisterPluginRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StateChangeEvent, StopContainerRequest,
    StopContainerResponse, StopPodSandboxRequest, SynchronizeRequest, SynchronizeResponse, UpdateContainerRequest,
    UpdateContainerResponse, UpdateContainersRequest, UpdateContainersResponse, UpdatePodSandboxRequest,
    ValidateContainerAdjustmentRequest, ValidateContainerAdjustmentResponse,
};
use crate::error::Error;
use crate::events::{event_name, EventMask};
use crate::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use crate::rpc::{
    self, client_on, serve_stream, service_table, BoxFuture, Dispatch, RpcStatus, PLUGIN_SERVICE, RUNTIME_SERVICE,
};
use crate::runner::{validate_index, validate_name};

/// NRI's wire format, for tests and fuzzers that look at the bytes: the connection
/// multiplexer's frame codec and limits (see the crate's design notes) and the ttrpc service
/// names. The runner uses these internally; plugins never need them.
pub mod wire {
    pub use crate::mux::{
        encode_frames, Frame, FrameDecoder, FrameHeader, HEADER_LEN, MAX_FRAME_PAYLOAD, MAX_WRITE_PAYLOAD,
        PLUGIN_SERVICE_CONN, READ_QUEUE_BYTES, READ_QUEUE_FRAMES, RUNTIME_SERVICE_CONN,
    };
    pub use crate::rpc::{PLUGIN_SERVICE, RUNTIME_SERVICE};
}

/// Default timeout of the peer's calls to the plugin and of its waits.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// How lifecycle events are delivered to the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every event through its dedicated RPC, as runtimes with NRI v0.12+ do.
    Dedicated,
    /// As runtimes up to NRI v0.11 do: events that carry a reply (CreateContainer,
    /// UpdateContainer, StopContainer, UpdatePodSandbox, ValidateContainerAdjustment) through their
    /// dedicated RPC, every other event (StartContainer included) as a `StateChange` notification.
    StateChange,
}

/// A pod or container lifecycle event to send to the plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleEvent {
    /// Pod sandbox starting.
    RunPodSandbox(PodSandbox),
    /// Pod sandbox resources changing.
    UpdatePodSandbox(UpdatePodSandboxRequest),
    /// Pod sandbox updated.
    PostUpdatePodSandbox(PodSandbox),
    /// Pod sandbox stopping.
    StopPodSandbox(PodSandbox),
    /// Pod sandbox removed.
    RemovePodSandbox(PodSandbox),
    /// Container being created.
    CreateContainer(PodSandbox, Container),
    /// Container created.
    PostCreateContainer(PodSandbox, Container),
    /// Container starting.
    StartContainer(PodSandbox, Container),
    /// Container started.
    PostStartContainer(PodSandbox, Container),
    /// Container resources changing.
    UpdateContainer(PodSandbox, Container, Option<LinuxResources>),
    /// Container updated.
    PostUpdateContainer(PodSandbox, Container),
    /// Container stopping.
    StopContainer(PodSandbox, Container),
    /// Container removed.
    RemoveContainer(PodSandbox, Container),
    /// Adjustment validation.
    ValidateContainerAdjustment(ValidateContainerAdjustmentRequest),
}

impl LifecycleEvent {
    /// The NRI event number of this event.
    pub fn event(&self) -> Event {
        match self {
            LifecycleEvent::RunPodSandbox(_) => Event::RUN_POD_SANDBOX,
            LifecycleEvent::UpdatePodSandbox(_) => Event::UPDATE_POD_SANDBOX,
            LifecycleEvent::PostUpdatePodSandbox(_) => Event::POST_UPDATE_POD_SANDBOX,
            LifecycleEvent::StopPodSandbox(_) => Event::STOP_POD_SANDBOX,
            LifecycleEvent::RemovePodSandbox(_) => Event::REMOVE_POD_SANDBOX,
            LifecycleEvent::CreateContainer(..) => Event::CREATE_CONTAINER,
            LifecycleEvent::PostCreateContainer(..) => Event::POST_CREATE_CONTAINER,
            LifecycleEvent::StartContainer(..) => Event::START_CONTAINER,
            LifecycleEvent::PostStartContainer(..) => Event::POST_START_CONTAINER,
            LifecycleEvent::UpdateContainer(..) => Event::UPDATE_CONTAINER,
            LifecycleEvent::PostUpdateContainer(..) => Event::POST_UPDATE_CONTAINER,
            LifecycleEvent::StopContainer(..) => Event::STOP_CONTAINER,
            LifecycleEvent::RemoveContainer(..) => Event::REMOVE_CONTAINER,
            LifecycleEvent::ValidateContainerAdjustment(_) => Event::VALIDATE_CONTAINER_ADJUSTMENT,
        }
    }

    /// The events of one pod with one container, from start to removal, in the order containerd
    /// sends them: RunPodSandbox, CreateContainer, PostCreateContainer, StartContainer,
    /// PostStartContainer, UpdateContainer, PostUpdateContainer, StopContainer, RemoveContainer,
    /// StopPodSandbox, RemovePodSandbox.
    pub fn pod_lifecycle(pod: &PodSandbox, ctr: &Container) -> Vec<LifecycleEvent> {
        let (p, c) = (pod.clone(), ctr.clone());
        vec![
            LifecycleEvent::RunPodSandbox(p.clone()),
            LifecycleEvent::CreateContainer(p.clone(), c.clone()),
            LifecycleEvent::PostCreateContainer(p.clone(), c.clone()),
            LifecycleEvent::StartContainer(p.clone(), c.clone()),
            LifecycleEvent::PostStartContainer(p.clone(), c.clone()),
            LifecycleEvent::UpdateContainer(p.clone(), c.clone(), c.linux.resources.clone().into_option()),
            LifecycleEvent::PostUpdateContainer(p.clone(), c.clone()),
            LifecycleEvent::StopContainer(p.clone(), c.clone()),
            LifecycleEvent::RemoveContainer(p.clone(), c),
            LifecycleEvent::StopPodSandbox(p.clone()),
            LifecycleEvent::RemovePodSandbox(p),
        ]
    }

    /// Whether runtimes up to NRI v0.11 deliver this event as a `StateChange` notification.
    pub fn has_state_change_form(&self) -> bool {
        !matches!(
            self,
            LifecycleEvent::UpdatePodSandbox(_)
                | LifecycleEvent::CreateContainer(..)
                | LifecycleEvent::UpdateContainer(..)
                | LifecycleEvent::StopContainer(..)
                | LifecycleEvent::ValidateContainerAdjustment(_)
        )
    }
}

/// The plugin's reply to a [`LifecycleEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventReply {
    /// An event without reply data (acknowledged).
    Ack,
    /// Reply to CreateContainer.
    CreateContainer(CreateContainerResponse),
    /// Reply to UpdateContainer.
    UpdateContainer(UpdateContainerResponse),
    /// Reply to StopContainer.
    StopContainer(StopContainerResponse),
    /// Reply to ValidateContainerAdjustment.
    ValidateContainerAdjustment(ValidateContainerAdjustmentResponse),
}

/// A listening runtime-side NRI socket.
#[derive(Debug)]
pub struct RuntimePeer {
    listener: UnixListener,
    path: PathBuf,
    timeout: Duration,
}

impl RuntimePeer {
    /// Listens on `path` (a stale socket file there is removed first). Call within a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<RuntimePeer, Error> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        Ok(RuntimePeer { listener, path, timeout: DEFAULT_PEER_TIMEOUT })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the timeout used by [`accept`](Self::accept) and by the connections it returns.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Waits (up to the timeout) for a plugin to connect and sets up the connection.
    pub async fn accept(&self) -> Result<PeerConnection, Error> {
        let (stream, _) = tokio::time::timeout(self.timeout, self.listener.accept())
            .await
            .map_err(|_| Error::HandshakeTimeout { stage: "connect to", timeout: self.timeout })??;
        PeerConnection::new(stream, self.timeout).await
    }

    /// Stops listening and removes the socket file (existing connections stay up).
    pub fn close(self) {
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Default)]
struct RuntimeState {
    update_reply: Mutex<Vec<ContainerUpdate>>,
}

struct RuntimeDispatch {
    registrations: mpsc::UnboundedSender<RegisterPluginRequest>,
    updates: mpsc::UnboundedSender<UpdateContainersRequest>,
    state: Arc<RuntimeState>,
}

impl RuntimeDispatch {
    async fn handle(&self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcStatus> {
        match method {
            "RegisterPlugin" => {
                let req: RegisterPluginRequest = rpc::decode(method, &payload)?;
                // Same checks as containerd for an external plugin.
                let check = validate_name(&req.plugin_name).and_then(|_| validate_index(&req.plugin_idx));
                let _ = self.registrations.send(req);
                if let Err(e) = check {
                    return Err(RpcStatus::new(Code::UNKNOWN, e.to_string()));
                }
                rpc::encode(method, &Empty::new())
            }
            "UpdateContainers" => {
                let req: UpdateContainersRequest = rpc::decode(method, &payload)?;
                let _ = self.updates.send(req);
                let mut resp = UpdateContainersResponse::new();
                resp.failed = self.state.update_reply.lock().map(|g| g.clone()).unwrap_or_default();
                rpc::encode(method, &resp)
            }
            other => Err(RpcStatus::new(Code::UNIMPLEMENTED, format!("{other} method"))),
        }
    }
}

impl Dispatch for RuntimeDispatch {
    fn dispatch<'a>(&'a self, method: &'a str, payload: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, RpcStatus>> {
        Box::pin(self.handle(method, payload))
    }
}

/// One plugin connection, seen from the runtime side.
pub struct PeerConnection {
    mux: Mux,
    _server: ttrpc::r#async::Server,
    client: ttrpc::r#async::Client,
    registrations: mpsc::UnboundedReceiver<RegisterPluginRequest>,
    updates: mpsc::UnboundedReceiver<UpdateContainersRequest>,
    state: Arc<RuntimeState>,
    registration: Option<RegisterPluginRequest>,
    events: Mutex<Option<EventMask>>,
    timeout: Duration,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("registration", &self.registration)
            .field("closed", &self.mux.is_closed())
            .finish_non_exhaustive()
    }
}

impl PeerConnection {
    /// Sets up the runtime side on an already connected socket (for example one end of a
    /// `socketpair` whose other end is handed to the plugin through `NRI_PLUGIN_SOCKET`, the way
    /// the runtime launches pre-installed plugins). Call within a tokio runtime.
    pub async fn from_stream(stream: tokio::net::UnixStream) -> Result<PeerConnection, Error> {
        Self::new(stream, DEFAULT_PEER_TIMEOUT).await
    }

    async fn new(stream: tokio::net::UnixStream, timeout: Duration) -> Result<PeerConnection, Error> {
        let mux = Mux::new_blocked(stream);
        let plugin_conn = mux.open(PLUGIN_SERVICE_CONN)?;
        let runtime_conn = mux.open(RUNTIME_SERVICE_CONN)?;
        let (reg_tx, registrations) = mpsc::unbounded_channel();
        let (upd_tx, updates) = mpsc::unbounded_channel();
        let state = Arc::new(RuntimeState::default());
        let dispatch = Arc::new(RuntimeDispatch { registrations: reg_tx, updates: upd_tx, state: state.clone() });
        let server = serve_stream(
            runtime_conn,
            service_table(RUNTIME_SERVICE, &["RegisterPlugin", "UpdateContainers"], dispatch),
        )
        .await?;
        let client = client_on(plugin_conn);
        mux.unblock();
        Ok(PeerConnection {
            mux,
            _server: server,
            client,
            registrations,
            updates,
            state,
            registration: None,
            events: Mutex::new(None),
            timeout,
        })
    }

    /// Sets the timeout of calls to the plugin and of waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Waits for the plugin's `RegisterPlugin` call and returns it (the first one; later calls
    /// return the same request).
    pub async fn registration(&mut self) -> Result<RegisterPluginRequest, Error> {
        if let Some(r) = &self.registration {
            return Ok(r.clone());
        }
        let req = tokio::time::timeout(self.timeout, self.registrations.recv())
            .await
            .map_err(|_| Error::HandshakeTimeout { stage: "receive a registration from", timeout: self.timeout })?
            .ok_or(Error::NotConnected)?;
        self.registration = Some(req.clone());
        Ok(req)
    }

    /// A `ConfigureRequest` like containerd 2.3 sends (runtime `containerd`, NRI v0.12.0,
    /// registration timeout 5 s, request timeout 2 s, no plugin config).
    pub fn default_configure_request() -> ConfigureRequest {
        let mut req = ConfigureRequest::new();
        req.runtime_name = "containerd".into();
        req.runtime_version = "v2.3.0-test-peer".into();
        req.registration_timeout = 5000;
        req.request_timeout = 2000;
        req.NRI_version = "v0.12.0".into();
        req
    }

    /// Sends `Configure` and returns the plugin's reply (its event subscription).
    pub async fn configure(&self, req: ConfigureRequest) -> Result<ConfigureResponse, Error> {
        let resp: ConfigureResponse = self.call("Configure", &req).await?;
        let mask = EventMask::from_bits(resp.events as u32)?;
        if let Ok(mut g) = self.events.lock() {
            *g = Some(mask);
        }
        Ok(resp)
    }

    /// The subscription from the last `Configure` reply (`None` before configuration). An empty
    /// mask means "all events" to a runtime.
    pub fn events(&self) -> Option<EventMask> {
        self.events.lock().ok().and_then(|g| *g)
    }

    /// Registration, then `Configure` with [`default_configure_request`](Self::default_configure_request):
    /// what a runtime does right after a plugin connects.
    pub async fn handshake(&mut self) -> Result<(RegisterPluginRequest, ConfigureResponse), Error> {
        let reg = self.registration().await?;
        let cfg = self.configure(Self::default_configure_request()).await?;
        Ok((reg, cfg))
    }

    /// Sends the runtime's state with `Synchronize`, split like containerd does into chunks of at
    /// most `per_chunk` pods and `per_chunk` containers (`more = true` on all but the last). Checks
    /// that the plugin answers every non-final chunk with `{more: true}` and no updates, and returns
    /// the updates from the reply to the final chunk.
    pub async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
        per_chunk: usize,
    ) -> Result<Vec<ContainerUpdate>, Error> {
        let per_chunk = per_chunk.max(1);
        let mut pods = pods.into_iter().peekable();
        let mut ctrs = containers.into_iter().peekable();
        loop {
            let mut req = SynchronizeRequest::new();
            req.pods = pods.by_ref().take(per_chunk).collect();
            req.containers = ctrs.by_ref().take(per_chunk).collect();
            req.more = pods.peek().is_some() || ctrs.peek().is_some();
            let resp: SynchronizeResponse = self.call("Synchronize", &req).await?;
            if !req.more {
                return Ok(resp.update);
            }
            if !resp.update.is_empty() || !resp.more {
                return Err(Error::Protocol(format!(
                    "plugin does not handle split sync requests (more={}, {} updates)",
                    resp.more,
                    resp.update.len()
                )));
            }
        }
    }

    /// Sends one lifecycle event in the given delivery style and returns the plugin's reply, or
    /// the error status it answered with as [`Error::Rpc`].
    pub async fn send(&self, delivery: Delivery, event: LifecycleEvent) -> Result<EventReply, Error> {
        if delivery == Delivery::StateChange && event.has_state_change_form() {
            let ev = event.event();
            let (pod, ctr) = match event {
                LifecycleEvent::RunPodSandbox(p)
                | LifecycleEvent::PostUpdatePodSandbox(p)
                | LifecycleEvent::StopPodSandbox(p)
                | LifecycleEvent::RemovePodSandbox(p) => (p, None),
                LifecycleEvent::PostCreateContainer(p, c)
                | LifecycleEvent::StartContainer(p, c)
                | LifecycleEvent::PostStartContainer(p, c)
                | LifecycleEvent::PostUpdateContainer(p, c)
                | LifecycleEvent::RemoveContainer(p, c) => (p, Some(c)),
                _ => unreachable!("has_state_change_form covers exactly these variants"),
            };
            self.state_change(ev, pod, ctr).await?;
            return Ok(EventReply::Ack);
        }
        let method = event_name(event.event());
        macro_rules! pod_req {
            ($ty:ident, $pod:expr) => {{
                let mut req = $ty::new();
                req.pod = MessageField::some($pod);
                let _: Empty = self.call_empty(method, &req).await?;
                Ok(EventReply::Ack)
            }};
        }
        macro_rules! ctr_req {
            ($ty:ident, $pod:expr, $ctr:expr) => {{
                let mut req = $ty::new();
                req.pod = MessageField::some($pod);
                req.container = MessageField::some($ctr);
                let _: Empty = self.call_empty(method, &req).await?;
                Ok(EventReply::Ack)
            }};
        }
        match event {
            LifecycleEvent::RunPodSandbox(p) => pod_req!(RunPodSandboxRequest, p),
            LifecycleEvent::PostUpdatePodSandbox(p) => {
                pod_req!(PostUpdatePodSandboxRequest, p)
            }
            LifecycleEvent::StopPodSandbox(p) => pod_req!(StopPodSandboxRequest, p),
            LifecycleEvent::RemovePodSandbox(p) => pod_req!(RemovePodSandboxRequest, p),
            LifecycleEvent::UpdatePodSandbox(req) => {
                let _: Empty = self.call_empty(method, &req).await?;
                Ok(EventReply::Ack)
            }
            LifecycleEvent::CreateContainer(p, c) => {
                let mut req = CreateContainerRequest::new();
                req.pod = MessageField::some(p);
                req.container = MessageField::some(c);
                Ok(EventReply::CreateContainer(self.call(method, &req).await?))
            }
            LifecycleEvent::PostCreateContainer(p, c) => {
                ctr_req!(PostCreateContainerRequest, p, c)
            }
            LifecycleEvent::StartContainer(p, c) => ctr_req!(StartContainerRequest, p, c),
            LifecycleEvent::PostStartContainer(p, c) => {
                ctr_req!(PostStartContainerRequest, p, c)
            }
            LifecycleEvent::UpdateContainer(p, c, r) => {
                let mut req = UpdateContainerRequest::new();
                req.pod = MessageField::some(p);
                req.container = MessageField::some(c);
                req.linux_resources = r.into();
                Ok(EventReply::UpdateContainer(self.call(method, &req).await?))
            }
            LifecycleEvent::PostUpdateContainer(p, c) => {
                ctr_req!(PostUpdateContainerRequest, p, c)
            }
            LifecycleEvent::StopContainer(p, c) => {
                let mut req = StopContainerRequest::new();
                req.pod = MessageField::some(p);
                req.container = MessageField::some(c);
                Ok(EventReply::StopContainer(self.call(method, &req).await?))
            }
            LifecycleEvent::RemoveContainer(p, c) => ctr_req!(RemoveContainerRequest, p, c),
            LifecycleEvent::ValidateContainerAdjustment(req) => {
                Ok(EventReply::ValidateContainerAdjustment(self.call(method, &req).await?))
            }
        }
    }

    /// Sends a `StateChange` notification for any event (the way runtimes up to NRI v0.11 deliver
    /// most events).
    pub async fn state_change(&self, event: Event, pod: PodSandbox, container: Option<Container>) -> Result<(), Error> {
        let mut req = StateChangeEvent::new();
        req.event = EnumOrUnknown::new(event);
        req.pod = MessageField::some(pod);
        req.container = container.into();
        let _: Empty = self.call("StateChange", &req).await?;
        Ok(())
    }

    /// Sends `Shutdown` (the runtime is going down).
    pub async fn shutdown(&self) -> Result<(), Error> {
        let _: Empty = self.call("Shutdown", &Empty::new()).await?;
        Ok(())
    }

    /// Calls any method of the plugin service with a typed request and response.
    pub async fn call<Req: Message, Resp: Message>(&self, method: &str, req: &Req) -> Result<Resp, Error> {
        rpc::call(&self.client, PLUGIN_SERVICE, method, req, Some(self.timeout)).await
    }

    /// Calls a method whose response is empty (the `*Response {}` messages); decodes it as the
    /// well-known `Empty`, which accepts any of them.
    async fn call_empty<Req: Message>(&self, method: &str, req: &Req) -> Result<Empty, Error> {
        self.call(method, req).await
    }

    /// Calls a method of the plugin service with raw payload bytes (for testing malformed input).
    pub async fn call_raw(&self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, Error> {
        rpc::call_raw(&self.client, PLUGIN_SERVICE, method, payload, Some(self.timeout)).await
    }

    /// Waits for the plugin's next `UpdateContainers` call.
    pub async fn next_update_containers(&mut self) -> Result<UpdateContainersRequest, Error> {
        tokio::time::timeout(self.timeout, self.updates.recv())
            .await
            .map_err(|_| Error::Timeout { method: "UpdateContainers".into(), timeout: self.timeout })?
            .ok_or(Error::NotConnected)
    }

    /// Sets the `failed` list the peer answers `UpdateContainers` with (default: none failed).
    pub fn set_update_containers_reply(&self, failed: Vec<ContainerUpdate>) {
        if let Ok(mut g) = self.state.update_reply.lock() {
            *g = failed;
        }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }

    /// Waits (up to the timeout) for the plugin to close the connection. `Ok` if it closed.
    pub async fn closed(&self) -> Result<(), Error> {
        tokio::time::timeout(self.timeout, self.mux.closed())
            .await
            .map(|_| ())
            .map_err(|_| Error::Timeout { method: "close".into(), timeout: self.timeout })
    }

    /// Drops the connection, as a runtime that exits does.
    pub fn close(self) {
        self.mux.close();
    }
}
