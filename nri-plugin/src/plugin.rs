//! The [`Plugin`] trait and the plugin-side dispatch of NRI requests.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::{Enum, EnumOrUnknown};
use ttrpc::Code;

use crate::api::{
    ConfigureRequest, ConfigureResponse, Container, ContainerUpdate, CreateContainerRequest, CreateContainerResponse,
    Empty, Event, LinuxResources, PodSandbox, PostCreateContainerRequest, PostCreateContainerResponse,
    PostStartContainerRequest, PostStartContainerResponse, PostUpdateContainerRequest, PostUpdateContainerResponse,
    PostUpdatePodSandboxRequest, PostUpdatePodSandboxResponse, RemoveContainerRequest, RemoveContainerResponse,
    RemovePodSandboxRequest, RemovePodSandboxResponse, RunPodSandboxRequest, RunPodSandboxResponse,
    StartContainerRequest, StartContainerResponse, StateChangeEvent, StopContainerRequest, StopContainerResponse,
    StopPodSandboxRequest, StopPodSandboxResponse, SynchronizeRequest, SynchronizeResponse, UpdateContainerRequest,
    UpdateContainerResponse, UpdatePodSandboxRequest, UpdatePodSandboxResponse, ValidateContainerAdjustmentRequest,
    ValidateContainerAdjustmentResponse,
};
use crate::deadline::{Deadline, DeadlinePolicy, Overrun, OverrunAnswer};
use crate::error::{BoxError, HandlerResult};
use crate::events::{self, event_name, EventMask};
use crate::rpc::{decode, encode, BoxFuture, Dispatch, RpcStatus};

/// An NRI plugin: a handler for every NRI request, each with a default that does nothing.
///
/// Override the handlers you need and, if they are not among the default subscription
/// ([`EventMask::LIFECYCLE`]), [`events`](Self::events). Handlers run concurrently: a slow handler
/// does not hold up other requests. Each handler gets the pod and container as the runtime sent
/// them, whether the runtime used the dedicated RPC (NRI v0.12+) or a `StateChange` notification
/// (runtimes up to NRI v0.11): both end up in the same method.
///
/// Handlers are declared as `fn … -> impl Future<Output = …> + Send`; implement them with plain
/// `async fn` (no macro needed). The future must be `Send`: do not hold a
/// `std::sync::MutexGuard` or an `Rc` across an `.await`.
///
/// ```
/// use nri_plugin::api::{Container, PodSandbox};
/// use nri_plugin::{HandlerResult, Plugin};
///
/// struct Observer;
///
/// impl Plugin for Observer {
///     async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
///         println!("{}/{}: {} is starting", pod.namespace, pod.name, ctr.name);
///         Ok(())
///     }
/// }
/// ```
///
/// Returning an error sends the runtime a ttrpc error status (code `UNKNOWN`, the error's message).
/// For [`create_container`](Self::create_container) and [`start_container`](Self::start_container)
/// the runtime then fails that container: this is how a plugin refuses a container.
///
/// A runtime whose request timeout (2 s by default, `ConfigureRequest.request_timeout`) passes
/// drops the plugin. The [`Runner`](crate::Runner) prevents that: each handler has a
/// [`Deadline`](crate::Deadline) a margin below the timeout, and a handler still running then is
/// answered for by [`on_deadline`](Self::on_deadline) (see [`crate::DeadlinePolicy`]).
pub trait Plugin: Send + Sync + 'static {
    /// Events to subscribe to, sent in the reply to `Configure`. The default is
    /// [`EventMask::LIFECYCLE`] (events 1-11). A mask set with
    /// [`RunnerBuilder::events`](crate::RunnerBuilder::events) takes precedence.
    fn events(&self) -> EventMask {
        EventMask::LIFECYCLE
    }

    /// What to answer when a handler misses its [`Deadline`](crate::Deadline) (the handler keeps
    /// running in the background; its result is dropped). The default is
    /// [`OverrunAnswer::Error`]: for CreateContainer and StartContainer that fails the container,
    /// which is the safe answer for a container the plugin must see before it runs. Answer
    /// [`OverrunAnswer::Proceed`] for requests where letting the runtime go on is safe.
    fn on_deadline(&self, overrun: &Overrun<'_>) -> OverrunAnswer {
        let _ = overrun;
        OverrunAnswer::Error
    }

    /// The runtime configures the plugin (`req.config` is the plugin's configuration from the
    /// runtime, if any; `req.request_timeout` the runtime's request timeout in milliseconds,
    /// which the runner already turned into handler deadlines). Called once per connection,
    /// before `synchronize`. An error fails the registration; the runtime closes the connection.
    fn configure(&self, req: &ConfigureRequest) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = req;
        async { Ok(()) }
    }

    /// The runtime's current pods and containers, sent once per connection after `configure`.
    /// Chunked synchronization is reassembled: this is called once with everything. Return updates
    /// to apply to existing containers (usually none; see [`UpdateBuilder`](crate::UpdateBuilder)).
    fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> impl Future<Output = HandlerResult<Vec<ContainerUpdate>>> + Send {
        let _ = (pods, containers);
        async { Ok(Vec::new()) }
    }

    /// The runtime is shutting down; the connection will close afterwards.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A pod sandbox is being started.
    fn run_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox's resources are being updated (event 12, NRI v0.10+): `overhead` is the pod's
    /// overhead, `resources` the sum of its containers' resources, each `None` if the runtime did
    /// not send it.
    fn update_pod_sandbox(
        &self,
        pod: &PodSandbox,
        overhead: Option<&LinuxResources>,
        resources: Option<&LinuxResources>,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, overhead, resources);
        async { Ok(()) }
    }

    /// A pod sandbox was updated (event 13, NRI v0.10+).
    fn post_update_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox is being stopped.
    fn stop_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A pod sandbox was removed.
    fn remove_pod_sandbox(&self, pod: &PodSandbox) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// A container is being created (its cgroup does not exist yet). Return adjustments of this
    /// container (build them with [`AdjustmentBuilder`](crate::AdjustmentBuilder)), updates of
    /// other containers, or evictions; an error fails the container's creation.
    fn create_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<CreateContainerResponse>> + Send {
        let _ = (pod, container);
        async { Ok(CreateContainerResponse::new()) }
    }

    /// A container was created.
    fn post_create_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container is about to start: its task exists (cgroup and init pid are there) but its
    /// entrypoint has not been executed yet. An error fails the container's start.
    fn start_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container was started.
    fn post_start_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container's resources are being updated to `resources` (`None` if the runtime did not
    /// send any). Return updates of this or other containers (see
    /// [`UpdateBuilder`](crate::UpdateBuilder)) or evictions.
    fn update_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
        resources: Option<&LinuxResources>,
    ) -> impl Future<Output = HandlerResult<UpdateContainerResponse>> + Send {
        let _ = (pod, container, resources);
        async { Ok(UpdateContainerResponse::new()) }
    }

    /// A container was updated.
    fn post_update_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// A container is being stopped. Return updates to other containers (usually none).
    fn stop_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<Vec<ContainerUpdate>>> + Send {
        let _ = (pod, container);
        async { Ok(Vec::new()) }
    }

    /// A container was removed.
    fn remove_container(
        &self,
        pod: &PodSandbox,
        container: &Container,
    ) -> impl Future<Output = HandlerResult<()>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// Validate the adjustments other plugins made to a container (event 14, NRI v0.10+).
    /// Return a response with `reject = true` (and a `reason`) to fail the container.
    fn validate_container_adjustment(
        &self,
        req: &ValidateContainerAdjustmentRequest,
    ) -> impl Future<Output = HandlerResult<ValidateContainerAdjustmentResponse>> + Send {
        let _ = req;
        async { Ok(ValidateContainerAdjustmentResponse::new()) }
    }
}

pub(crate) use crate::events::PLUGIN_METHODS;

/// Something that happened on the plugin service that the runner needs to know about.
#[derive(Debug, Clone)]
pub(crate) enum SessionSignal {
    Configured {
        runtime_name: String,
        runtime_version: String,
        nri_version: String,
        events: EventMask,
    },
    Synchronized {
        pods: usize,
        containers: usize,
    },
    Shutdown,
    /// Undecodable input: the connection must be closed.
    ProtocolError(String),
}

/// Per-connection dispatcher of the plugin service.
pub(crate) struct PluginDispatch<P: Plugin> {
    plugin: Arc<P>,
    events_override: Option<EventMask>,
    sync_buffer: Mutex<Option<(Vec<PodSandbox>, Vec<Container>)>>,
    signals: tokio::sync::mpsc::UnboundedSender<SessionSignal>,
    deadlines: Option<DeadlinePolicy>,
    /// The runtime's request timeout, from `Configure` (0 there means "not said").
    request_timeout: Mutex<Option<Duration>>,
}

impl<P: Plugin> PluginDispatch<P> {
    pub(crate) fn new(
        plugin: Arc<P>,
        events_override: Option<EventMask>,
        signals: tokio::sync::mpsc::UnboundedSender<SessionSignal>,
    ) -> Self {
        PluginDispatch {
            plugin,
            events_override,
            sync_buffer: Mutex::new(None),
            signals,
            deadlines: None,
            request_timeout: Mutex::new(None),
        }
    }

    /// Enforce handler deadlines derived with `policy` (`None`: no deadlines).
    pub(crate) fn with_deadlines(mut self, policy: Option<DeadlinePolicy>) -> Self {
        self.deadlines = policy;
        self
    }

    fn signal(&self, s: SessionSignal) {
        let _ = self.signals.send(s);
    }

    fn decode<M: protobuf::Message>(&self, method: &str, payload: &[u8]) -> Result<M, RpcStatus> {
        decode(method, payload).inspect_err(|status| {
            tracing::warn!(method, error = %status.message, "undecodable NRI request, closing connection");
            self.signal(SessionSignal::ProtocolError(status.message.clone()));
        })
    }

    async fn handle(&self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcStatus> {
        // The method names of the events are the table's (crate::events); the match on the event
        // is exhaustive, so an event the table or the protocol adds cannot go without a handler.
        match events::event_of_method(method) {
            Some(event) => self.handle_event(event, method, &payload).await,
            None => self.handle_session(method, &payload).await,
        }
    }

    /// The session methods: Configure, Synchronize, Shutdown, StateChange.
    async fn handle_session(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, RpcStatus> {
        let p = &*self.plugin;
        match method {
            "Configure" => {
                let req: ConfigureRequest = self.decode(method, payload)?;
                tracing::debug!(
                    runtime = %req.runtime_name,
                    runtime_version = %req.runtime_version,
                    nri_version = %req.NRI_version,
                    "NRI configure"
                );
                if req.request_timeout > 0 {
                    if let Ok(mut t) = self.request_timeout.lock() {
                        *t = Some(Duration::from_millis(u64::try_from(req.request_timeout).unwrap_or(0)));
                    }
                }
                p.configure(&req).await.map_err(handler_error(method))?;
                let events = self.events_override.unwrap_or_else(|| p.events());
                if EventMask::from_bits(events.bits()).is_err() {
                    return Err(RpcStatus::new(
                        Code::INVALID_ARGUMENT,
                        format!("plugin subscribes to unknown events {:#x}", events.bits()),
                    ));
                }
                self.signal(SessionSignal::Configured {
                    runtime_name: req.runtime_name.clone(),
                    runtime_version: req.runtime_version.clone(),
                    nri_version: req.NRI_version.clone(),
                    events,
                });
                let mut resp = ConfigureResponse::new();
                // The mask has at most 14 bits set, it always fits an i32.
                resp.events = events.bits() as i32;
                encode(method, &resp)
            }
            "Synchronize" => {
                let mut req: SynchronizeRequest = self.decode(method, payload)?;
                let mut resp = SynchronizeResponse::new();
                let (pods, containers) = {
                    let mut buf =
                        self.sync_buffer.lock().map_err(|_| RpcStatus::new(Code::INTERNAL, "sync state poisoned"))?;
                    let (pods, containers) = buf.get_or_insert_with(Default::default);
                    pods.append(&mut req.pods);
                    containers.append(&mut req.containers);
                    tracing::debug!(
                        pods = pods.len(),
                        containers = containers.len(),
                        more = req.more,
                        "NRI synchronize chunk"
                    );
                    if req.more {
                        resp.more = true;
                        return encode(method, &resp);
                    }
                    buf.take().unwrap_or_default()
                };
                let (npods, nctrs) = (pods.len(), containers.len());
                resp.update = p.synchronize(pods, containers).await.map_err(handler_error(method))?;
                resp.more = false;
                self.signal(SessionSignal::Synchronized { pods: npods, containers: nctrs });
                encode(method, &resp)
            }
            "Shutdown" => {
                let _: Empty = self.decode(method, payload)?;
                tracing::info!("NRI runtime is shutting down");
                p.shutdown().await;
                self.signal(SessionSignal::Shutdown);
                encode(method, &Empty::new())
            }
            "StateChange" => {
                let req: StateChangeEvent = self.decode(method, payload)?;
                self.state_change(&req).await?;
                encode(method, &Empty::new())
            }
            other => Err(RpcStatus::new(Code::UNIMPLEMENTED, format!("{other} method"))),
        }
    }

    /// The request of `event`, whose method is `method`, to its handler.
    async fn handle_event(&self, event: Event, method: &str, payload: &[u8]) -> Result<Vec<u8>, RpcStatus> {
        let p = &*self.plugin;
        match event {
            Event::RUN_POD_SANDBOX => {
                let req: RunPodSandboxRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), None);
                p.run_pod_sandbox(opt(&req.pod)).await.map_err(handler_error(method))?;
                encode(method, &RunPodSandboxResponse::new())
            }
            Event::UPDATE_POD_SANDBOX => {
                let req: UpdatePodSandboxRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), None);
                p.update_pod_sandbox(
                    opt(&req.pod),
                    req.overhead_linux_resources.as_ref(),
                    req.linux_resources.as_ref(),
                )
                .await
                .map_err(handler_error(method))?;
                encode(method, &UpdatePodSandboxResponse::new())
            }
            Event::POST_UPDATE_POD_SANDBOX => {
                let req: PostUpdatePodSandboxRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), None);
                p.post_update_pod_sandbox(opt(&req.pod)).await.map_err(handler_error(method))?;
                encode(method, &PostUpdatePodSandboxResponse::new())
            }
            Event::STOP_POD_SANDBOX => {
                let req: StopPodSandboxRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), None);
                p.stop_pod_sandbox(opt(&req.pod)).await.map_err(handler_error(method))?;
                encode(method, &StopPodSandboxResponse::new())
            }
            Event::REMOVE_POD_SANDBOX => {
                let req: RemovePodSandboxRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), None);
                p.remove_pod_sandbox(opt(&req.pod)).await.map_err(handler_error(method))?;
                encode(method, &RemovePodSandboxResponse::new())
            }
            Event::CREATE_CONTAINER => {
                let req: CreateContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                let resp =
                    p.create_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &resp)
            }
            Event::POST_CREATE_CONTAINER => {
                let req: PostCreateContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                p.post_create_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &PostCreateContainerResponse::new())
            }
            Event::START_CONTAINER => {
                let req: StartContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                p.start_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &StartContainerResponse::new())
            }
            Event::POST_START_CONTAINER => {
                let req: PostStartContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                p.post_start_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &PostStartContainerResponse::new())
            }
            Event::UPDATE_CONTAINER => {
                let req: UpdateContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                let resp = p
                    .update_container(opt(&req.pod), opt(&req.container), req.linux_resources.as_ref())
                    .await
                    .map_err(handler_error(method))?;
                encode(method, &resp)
            }
            Event::POST_UPDATE_CONTAINER => {
                let req: PostUpdateContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                p.post_update_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &PostUpdateContainerResponse::new())
            }
            Event::STOP_CONTAINER => {
                let req: StopContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                let update =
                    p.stop_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                let mut resp = StopContainerResponse::new();
                resp.update = update;
                encode(method, &resp)
            }
            Event::REMOVE_CONTAINER => {
                let req: RemoveContainerRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                p.remove_container(opt(&req.pod), opt(&req.container)).await.map_err(handler_error(method))?;
                encode(method, &RemoveContainerResponse::new())
            }
            Event::VALIDATE_CONTAINER_ADJUSTMENT => {
                let req: ValidateContainerAdjustmentRequest = self.decode(method, payload)?;
                trace_event(method, opt(&req.pod), Some(opt(&req.container)));
                let resp = p.validate_container_adjustment(&req).await.map_err(handler_error(method))?;
                encode(method, &resp)
            }
            Event::UNKNOWN | Event::LAST => Err(RpcStatus::new(Code::UNIMPLEMENTED, format!("{method} method"))),
        }
    }

    /// Routes a `StateChange` notification (runtimes up to NRI v0.11) to the same handler the
    /// dedicated RPC would reach.
    async fn state_change(&self, evt: &StateChangeEvent) -> Result<(), RpcStatus> {
        let p = &*self.plugin;
        let pod = opt(&evt.pod);
        let ctr = opt(&evt.container);
        let event = match event_of(&evt.event) {
            Some(e) => e,
            None => {
                tracing::debug!(event = evt.event.value(), "ignoring StateChange with unknown event");
                return Ok(());
            }
        };
        let name = event_name(event);
        let is_container_event = events::info(event).is_some_and(|i| i.scope == events::Scope::Container);
        trace_event(name, pod, is_container_event.then_some(ctr));
        let method = "StateChange";
        match event {
            Event::RUN_POD_SANDBOX => p.run_pod_sandbox(pod).await,
            Event::POST_UPDATE_POD_SANDBOX => p.post_update_pod_sandbox(pod).await,
            Event::STOP_POD_SANDBOX => p.stop_pod_sandbox(pod).await,
            Event::REMOVE_POD_SANDBOX => p.remove_pod_sandbox(pod).await,
            Event::POST_CREATE_CONTAINER => p.post_create_container(pod, ctr).await,
            Event::START_CONTAINER => p.start_container(pod, ctr).await,
            Event::POST_START_CONTAINER => p.post_start_container(pod, ctr).await,
            Event::POST_UPDATE_CONTAINER => p.post_update_container(pod, ctr).await,
            Event::REMOVE_CONTAINER => p.remove_container(pod, ctr).await,
            // Runtimes always send these as dedicated requests (they carry a reply); a
            // StateChange for them has nothing to reply to, as in containerd's Go stub.
            _ => {
                tracing::debug!(event = name, "ignoring StateChange for a request-type event");
                Ok(())
            }
        }
        .map_err(handler_error(method))
    }
}

impl<P: Plugin> Dispatch for PluginDispatch<P> {
    fn dispatch<'a>(&'a self, method: &'a str, payload: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, RpcStatus>> {
        Box::pin(self.handle(method, payload))
    }

    fn deadline(&self, _method: &str, runtime_timeout: Option<Duration>) -> Option<Deadline> {
        let policy = self.deadlines?;
        let configured = self.request_timeout.lock().ok().and_then(|t| *t);
        let mut timeout = configured.unwrap_or(policy.default_request_timeout);
        if let Some(t) = runtime_timeout {
            timeout = timeout.min(t);
        }
        Some(policy.deadline(timeout))
    }

    fn overrun(&self, method: &str, payload: &[u8], deadline: &Deadline) -> Result<Vec<u8>, RpcStatus> {
        let subject = Subject::decode(method, payload);
        let answer = if method == "Configure" {
            OverrunAnswer::Error
        } else {
            self.plugin.on_deadline(&Overrun {
                method,
                event: subject.event,
                pod: subject.pod.as_ref(),
                container: subject.container.as_ref(),
                deadline: *deadline,
            })
        };
        let what = match (&subject.pod, &subject.container) {
            (Some(p), Some(c)) => format!(" for container {:?} of pod {}/{}", c.name, p.namespace, p.name),
            (Some(p), None) => format!(" for pod {}/{}", p.namespace, p.name),
            _ => String::new(),
        };
        tracing::warn!(
            method,
            event = subject.event.map(event_name),
            budget = ?deadline.budget(),
            runtime_timeout = ?deadline.runtime_timeout(),
            answer = ?answer,
            "NRI handler missed its deadline{what}; answering in its place (it keeps running)"
        );
        match answer {
            // Every reply message but Configure's is all-defaults when there is nothing to say,
            // and encodes to zero bytes.
            OverrunAnswer::Proceed => Ok(Vec::new()),
            _ => Err(RpcStatus::new(
                Code::UNKNOWN,
                format!(
                    "NRI {method}{what}: the plugin did not answer within its deadline of {:?} \
                     (runtime request timeout {:?}); answered with an error instead of leaving the \
                     runtime to time out",
                    deadline.budget(),
                    deadline.runtime_timeout()
                ),
            )),
        }
    }
}

/// The event, pod and container a request is about (for [`Overrun`]).
#[derive(Default)]
struct Subject {
    event: Option<Event>,
    pod: Option<PodSandbox>,
    container: Option<Container>,
}

impl Subject {
    fn decode(method: &str, payload: &[u8]) -> Subject {
        use protobuf::Message;
        fn pc<M: Message>(
            payload: &[u8],
            event: Event,
            f: impl FnOnce(M) -> (Option<PodSandbox>, Option<Container>),
        ) -> Subject {
            match M::parse_from_bytes(payload) {
                Ok(m) => {
                    let (pod, container) = f(m);
                    Subject { event: Some(event), pod, container }
                }
                Err(_) => Subject { event: Some(event), ..Subject::default() },
            }
        }
        if method == "StateChange" {
            return match StateChangeEvent::parse_from_bytes(payload) {
                Ok(e) => Subject {
                    event: event_of(&e.event),
                    pod: e.pod.into_option(),
                    container: e.container.into_option(),
                },
                Err(_) => Subject::default(),
            };
        }
        let Some(event) = events::event_of_method(method) else { return Subject::default() };
        macro_rules! both {
            ($ty:ty) => {
                pc::<$ty>(payload, event, |r| (r.pod.into_option(), r.container.into_option()))
            };
        }
        macro_rules! pod {
            ($ty:ty) => {
                pc::<$ty>(payload, event, |r| (r.pod.into_option(), None))
            };
        }
        match event {
            Event::CREATE_CONTAINER => both!(CreateContainerRequest),
            Event::POST_CREATE_CONTAINER => both!(PostCreateContainerRequest),
            Event::START_CONTAINER => both!(StartContainerRequest),
            Event::POST_START_CONTAINER => both!(PostStartContainerRequest),
            Event::UPDATE_CONTAINER => both!(UpdateContainerRequest),
            Event::POST_UPDATE_CONTAINER => both!(PostUpdateContainerRequest),
            Event::STOP_CONTAINER => both!(StopContainerRequest),
            Event::REMOVE_CONTAINER => both!(RemoveContainerRequest),
            Event::VALIDATE_CONTAINER_ADJUSTMENT => both!(ValidateContainerAdjustmentRequest),
            Event::RUN_POD_SANDBOX => pod!(RunPodSandboxRequest),
            Event::UPDATE_POD_SANDBOX => pod!(UpdatePodSandboxRequest),
            Event::POST_UPDATE_POD_SANDBOX => pod!(PostUpdatePodSandboxRequest),
            Event::STOP_POD_SANDBOX => pod!(StopPodSandboxRequest),
            Event::REMOVE_POD_SANDBOX => pod!(RemovePodSandboxRequest),
            Event::UNKNOWN | Event::LAST => Subject::default(),
        }
    }
}

fn event_of(e: &EnumOrUnknown<Event>) -> Option<Event> {
    Event::from_i32(e.value())
}

fn opt<M: protobuf::Message>(field: &protobuf::MessageField<M>) -> &M {
    field.as_ref().unwrap_or_else(|| M::default_instance())
}

fn handler_error(method: &str) -> impl Fn(BoxError) -> RpcStatus + '_ {
    move |e| {
        tracing::warn!(method, error = %e, "NRI handler returned an error");
        RpcStatus::new(Code::UNKNOWN, e.to_string())
    }
}

fn trace_event(event: &str, pod: &PodSandbox, container: Option<&Container>) {
    match container {
        Some(c) => tracing::debug!(
            event,
            pod = %pod.name,
            namespace = %pod.namespace,
            container = %c.name,
            container_id = %c.id,
            "NRI event"
        ),
        None => tracing::debug!(event, pod = %pod.name, namespace = %pod.namespace, pod_id = %pod.id, "NRI event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Plugin for Nop {}

    /// Every method answers garbage with INVALID_ARGUMENT and asks for the connection to be
    /// closed; random bytes never panic.
    #[tokio::test]
    async fn garbage_payloads_are_rejected() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let d = PluginDispatch::new(Arc::new(Nop), None, tx);
        for method in PLUGIN_METHODS {
            // Tag with field number 0 is invalid in protobuf.
            let err = d.handle(method, vec![0x00, 0x01]).await.expect_err(method);
            assert_eq!(err.code, Code::INVALID_ARGUMENT, "{method}");
            assert!(matches!(rx.try_recv(), Ok(SessionSignal::ProtocolError(_))), "{method}");
            // Truncated length-delimited field.
            let err = d.handle(method, vec![0x0a, 0x7f, 0x01]).await.expect_err(method);
            assert_eq!(err.code, Code::INVALID_ARGUMENT, "{method}");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|j| (state >> (j % 8 * 8)) as u8 ^ j as u8).collect();
            let method = PLUGIN_METHODS[i % PLUGIN_METHODS.len()];
            let _ = d.handle(method, bytes).await;
        }
        let err = d.handle("Bogus", Vec::new()).await.expect_err("unknown method");
        assert_eq!(err.code, Code::UNIMPLEMENTED);
    }

    /// Chunked synchronization is reassembled and answered as the protocol requires.
    #[tokio::test]
    async fn synchronize_chunks() {
        use protobuf::Message;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let d = PluginDispatch::new(Arc::new(Nop), None, tx);
        let mut req = SynchronizeRequest::new();
        req.pods.push(PodSandbox::new());
        req.more = true;
        let resp = d.handle("Synchronize", req.write_to_bytes().unwrap()).await.unwrap();
        let resp = SynchronizeResponse::parse_from_bytes(&resp).unwrap();
        assert!(resp.more && resp.update.is_empty());
        req.more = false;
        let resp = d.handle("Synchronize", req.write_to_bytes().unwrap()).await.unwrap();
        let resp = SynchronizeResponse::parse_from_bytes(&resp).unwrap();
        assert!(!resp.more);
        assert!(d.sync_buffer.lock().unwrap().is_none());
    }
}
