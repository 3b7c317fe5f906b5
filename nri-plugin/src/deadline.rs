//! Handler deadlines: every request is answered before the runtime's request timeout.
//!
//! A runtime that gets no answer within its request timeout (`ConfigureRequest.request_timeout`,
//! 2 s by default in containerd) treats the plugin as broken and closes its connection: every
//! container started until the plugin is back runs without it (fail-open). The runner therefore
//! gives each handler a [`Deadline`] a [margin](DeadlinePolicy::margin) below that timeout, runs
//! the handler in its own task, and when the deadline passes answers in the handler's place with
//! what [`Plugin::on_deadline`](crate::Plugin::on_deadline) chooses: by default an error (which
//! for CreateContainer and StartContainer fails that container), or a plain success. The handler
//! itself is not cancelled: it runs to completion in the background and its result is dropped.
//! Handlers see their deadline through [`Deadline::current`].

use std::time::Duration;

use crate::api::{Container, Event, PodSandbox};

/// How handler deadlines are derived ([`RunnerBuilder::deadlines`](crate::RunnerBuilder::deadlines)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// How long before the runtime's request timeout the answer must be sent (time for the
    /// answer to travel and for the runtime to read it). Default 500 ms.
    pub margin: Duration,
    /// Request timeout assumed until `Configure` says otherwise, and when the runtime sends 0
    /// there. Default 2 s, containerd's default.
    pub default_request_timeout: Duration,
}

/// Default [`DeadlinePolicy::margin`].
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// Default [`DeadlinePolicy::default_request_timeout`] (containerd's `plugin_request_timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for DeadlinePolicy {
    fn default() -> Self {
        DeadlinePolicy { margin: DEFAULT_DEADLINE_MARGIN, default_request_timeout: DEFAULT_REQUEST_TIMEOUT }
    }
}

impl DeadlinePolicy {
    /// The deadline of a request arriving now, for a runtime request timeout of `runtime_timeout`:
    /// that timeout minus the margin, but at least half of it.
    pub fn deadline(&self, runtime_timeout: Duration) -> Deadline {
        let budget = runtime_timeout.saturating_sub(self.margin).max(runtime_timeout / 2);
        Deadline { at: tokio::time::Instant::now() + budget, budget, runtime_timeout }
    }
}

/// The time by which the current NRI request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: tokio::time::Instant,
    budget: Duration,
    runtime_timeout: Duration,
}

tokio::task_local! {
    static CURRENT: Deadline;
}

impl Deadline {
    /// The deadline of the request being handled by the calling task (`None` outside a handler,
    /// or when deadlines are disabled).
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// When the answer is due.
    pub fn instant(&self) -> tokio::time::Instant {
        self.at
    }

    /// Time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(tokio::time::Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The whole time the handler was given.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The runtime's request timeout the deadline was derived from.
    pub fn runtime_timeout(&self) -> Duration {
        self.runtime_timeout
    }

    /// Runs `fut` with `self` as its [`Deadline::current`].
    pub(crate) async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// A request whose handler missed its deadline, for [`Plugin::on_deadline`](crate::Plugin::on_deadline).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Overrun<'a> {
    /// The NRI method (`"StartContainer"`, `"StateChange"`, ...).
    pub method: &'a str,
    /// The lifecycle event, for the container and pod methods and `StateChange`.
    pub event: Option<Event>,
    /// The pod, when the request carries one.
    pub pod: Option<&'a PodSandbox>,
    /// The container, when the request carries one.
    pub container: Option<&'a Container>,
    /// The deadline that passed.
    pub deadline: Deadline,
}

impl<'a> Overrun<'a> {
    /// An overrun (for testing [`Plugin::on_deadline`](crate::Plugin::on_deadline) implementations).
    pub fn new(
        method: &'a str,
        event: Option<Event>,
        pod: Option<&'a PodSandbox>,
        container: Option<&'a Container>,
        deadline: Deadline,
    ) -> Self {
        Overrun { method, event, pod, container, deadline }
    }
}

/// What to answer in place of a handler that missed its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverrunAnswer {
    /// An error status naming the method and the deadline. For CreateContainer and StartContainer
    /// (also as `StateChange`) the runtime fails that container: the safe answer for a container
    /// the plugin must not let start without it.
    Error,
    /// Success with an empty reply (no adjustments, no updates): as if the plugin had nothing to
    /// do. Not possible for `Configure` (the reply carries the subscription), which always gets
    /// [`Error`](Self::Error).
    Proceed,
}
