//! [`Runner`]: connects a [`Plugin`] to the runtime, registers it, serves it, and reconnects.

use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::api::{Empty, RegisterPluginRequest};
use crate::client::RuntimeClient;
use crate::deadline::DeadlinePolicy;
use crate::error::Error;
use crate::events::EventMask;
use crate::farewell;
use crate::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use crate::plugin::{Plugin, PluginDispatch, SessionSignal, PLUGIN_METHODS};
use crate::rpc::{call, client_on, serve_stream, service_table, PLUGIN_SERVICE, RUNTIME_SERVICE};
use crate::stop::{StopHandle, STOP_CLOSE_TIMEOUT};
use crate::watch;

/// Default NRI socket path.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/nri/nri.sock";
/// Environment variable holding the plugin's socket fd when the runtime launched the plugin.
pub const PLUGIN_SOCKET_ENV: &str = "NRI_PLUGIN_SOCKET";
/// Environment variable holding the plugin name when the runtime launched the plugin.
pub const PLUGIN_NAME_ENV: &str = "NRI_PLUGIN_NAME";
/// Environment variable holding the plugin index when the runtime launched the plugin.
pub const PLUGIN_IDX_ENV: &str = "NRI_PLUGIN_IDX";
/// The NRI release whose protocol this crate speaks, sent in `RegisterPlugin`. It is stated once,
/// in `proto/nri.proto` (the `// nri-version:` line), and read from there at build time.
pub const NRI_API_VERSION: &str = env!("NRI_API_VERSION");
/// Default time allowed for registration (the runtime's default is 5 s too).
pub const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed between registration and the runtime's `Configure` call.
pub const DEFAULT_CONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);

/// The rule [`validate_name`] checks, in words (for error messages).
pub const NAME_RULE: &str = "must be non-empty and contain only ASCII letters, digits, '_', '.', '+' and '-'";
/// The rule [`validate_index`] checks, in words (for error messages).
pub const INDEX_RULE: &str = "must be exactly two digits, \"00\" to \"99\"";

/// Checks a plugin name: non-empty, only `[A-Za-z0-9_.+-]` (the rule containerd's NRI applies to
/// the name in `RegisterPlugin`; see [`NAME_RULE`]).
///
/// ```
/// assert!(nri_plugin::validate_name("my-plugin").is_ok());
/// assert!(nri_plugin::validate_name("my plugin").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Checks a plugin index: exactly two ASCII digits (see [`INDEX_RULE`]).
///
/// ```
/// assert!(nri_plugin::validate_index("05").is_ok());
/// assert!(nri_plugin::validate_index("5").is_err());
/// ```
pub fn validate_index(index: &str) -> Result<(), Error> {
    if index.len() == 2 && index.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::InvalidIndex(index.to_string()))
    }
}

/// Capped exponential backoff between connection attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Factor applied after each consecutive failure (values below 1 are treated as 1).
    pub multiplier: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling, capped at 30 s.
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(30), multiplier: 2.0 }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1` after `failures` consecutive failures (>= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.max(1.0).powi(exp);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).min(self.max)
        }
    }
}

/// Connection lifecycle notifications, delivered to the
/// [`on_connection_event`](RunnerBuilder::on_connection_event) callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The transport to the runtime is up. `connection` counts successful connections since the
    /// runner started (1 for the first); anything above 1 is a reconnect.
    Connected {
        /// Connection number, starting at 1.
        connection: u64,
    },
    /// The runtime accepted the plugin's registration.
    Registered {
        /// Connection number.
        connection: u64,
    },
    /// The runtime configured the plugin.
    Configured {
        /// Connection number.
        connection: u64,
        /// Runtime name (e.g. `containerd`).
        runtime_name: String,
        /// Runtime version.
        runtime_version: String,
        /// NRI version of the runtime, empty if it did not say (runtimes before NRI v0.10).
        nri_version: String,
        /// Subscription sent to the runtime.
        events: EventMask,
    },
    /// The runtime sent its pods and containers.
    Synchronized {
        /// Connection number.
        connection: u64,
        /// Number of pods.
        pods: usize,
        /// Number of containers.
        containers: usize,
    },
    /// The runtime announced its shutdown.
    ShutdownRequested {
        /// Connection number.
        connection: u64,
    },
    /// The connection ended; `error` says why if it was not a clean close by the runtime.
    Disconnected {
        /// Connection number.
        connection: u64,
        /// Reason, if any.
        error: Option<String>,
    },
    /// The runner was stopped ([`StopHandle`]) and stopped taking requests on this connection:
    /// from now on none reaches a handler. The requests in flight are being answered.
    Stopping {
        /// Connection number.
        connection: u64,
        /// Whether the runtime is holding its events for the farewell connection (see
        /// [`RunnerBuilder::farewell`]); `false` when the stop goes without it.
        farewell: bool,
    },
    /// The runner was stopped ([`StopHandle`]) and closed the connection after answering the
    /// requests in flight; sent instead of [`Disconnected`](Self::Disconnected), and nothing
    /// follows it.
    Stopped {
        /// Connection number.
        connection: u64,
    },
    /// Connecting failed; the next attempt follows after `retry_in` at the latest (earlier when
    /// the watched socket appears, see [`RunnerBuilder::watch_socket`]).
    /// Sent for every attempt; the runner itself logs outages at debug level only, so an
    /// application says what an unreachable runtime means for it here (once per change of
    /// `error`, not per attempt).
    ConnectFailed {
        /// Consecutive failures so far.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

type EventCallback = Arc<dyn Fn(&ConnectionEvent) + Send + Sync + 'static>;

/// Builder for a [`Runner`]. Created by [`Runner::builder`].
pub struct RunnerBuilder {
    name: String,
    index: String,
    socket_path: PathBuf,
    use_env: bool,
    backoff: Backoff,
    events: Option<EventMask>,
    registration_timeout: Duration,
    configure_timeout: Duration,
    reconnect: bool,
    watch_socket: bool,
    deadlines: Option<DeadlinePolicy>,
    farewell: bool,
    on_event: Option<EventCallback>,
}

impl std::fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("socket_path", &self.socket_path)
            .field("use_env", &self.use_env)
            .field("backoff", &self.backoff)
            .field("events", &self.events)
            .field("reconnect", &self.reconnect)
            .field("watch_socket", &self.watch_socket)
            .field("deadlines", &self.deadlines)
            .field("farewell", &self.farewell)
            .finish_non_exhaustive()
    }
}

impl RunnerBuilder {
    /// Socket to connect to (default [`DEFAULT_SOCKET_PATH`]).
    pub fn socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket_path = path.into();
        self
    }

    /// Whether to honour `NRI_PLUGIN_SOCKET`, `NRI_PLUGIN_NAME` and `NRI_PLUGIN_IDX`, set when the
    /// runtime itself launched the plugin (default `true`). With an inherited socket there is
    /// nothing to reconnect to: [`Runner::run`] returns when that connection ends.
    pub fn use_env(mut self, yes: bool) -> Self {
        self.use_env = yes;
        self
    }

    /// Backoff between connection attempts (default [`Backoff::default`]). While the socket's
    /// directory is watched ([`watch_socket`](Self::watch_socket)), `backoff.max` is the slow
    /// fallback period between attempts; the exponential delays apply when it is not.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether to watch the socket's directory with inotify while the runtime is unreachable
    /// (default `true`): the next attempt is made as soon as the socket is created (a restarted
    /// runtime binds a new one), with attempts every `backoff.max` as a fallback. A directory that
    /// does not exist yet is waited for through its deepest existing ancestor. If inotify cannot
    /// be used the runner retries with the backoff.
    pub fn watch_socket(mut self, yes: bool) -> Self {
        self.watch_socket = yes;
        self
    }

    /// Event subscription, overriding [`Plugin::events`].
    pub fn events(mut self, events: EventMask) -> Self {
        self.events = Some(events);
        self
    }

    /// Time allowed for the `RegisterPlugin` call (default 5 s).
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        self.registration_timeout = timeout;
        self
    }

    /// Time allowed between registration and the runtime's `Configure` call (default 30 s); if it
    /// elapses the connection is dropped and re-established.
    pub fn configure_timeout(mut self, timeout: Duration) -> Self {
        self.configure_timeout = timeout;
        self
    }

    /// Whether to reconnect after the connection ends or cannot be made (default `true`). When
    /// `false`, [`Runner::run`] returns after the first connection ends or fails.
    pub fn reconnect(mut self, yes: bool) -> Self {
        self.reconnect = yes;
        self
    }

    /// Handler deadlines (default [`DeadlinePolicy::default`]: the runtime's request timeout from
    /// `Configure`, 2 s until then, minus 500 ms). Each request is answered by its deadline: by
    /// the handler, or else by [`Plugin::on_deadline`](crate::Plugin::on_deadline) while the
    /// handler finishes in the background. `None` lets handlers take as long as they take (and
    /// the runtime drop the plugin when they exceed its timeout).
    pub fn deadlines(mut self, policy: Option<DeadlinePolicy>) -> Self {
        self.deadlines = policy;
        self
    }

    /// Whether a graceful stop ([`StopHandle`]) first opens a short farewell connection (default
    /// `true`), so that the runtime drops the plugin from its list without logging an error: the
    /// runtime synchronizes the farewell connection while holding off its events, the main
    /// connection is closed in that moment, and completing the farewell connection makes the
    /// runtime remove the closed one. Until the runtime holds its events (at most
    /// [`FAREWELL_TIMEOUT`]) the main connection keeps serving requests. Not used with an
    /// inherited socket (`NRI_PLUGIN_SOCKET`), and skipped when it fails. With `false`, the stop
    /// closes the main connection at once.
    pub fn farewell(mut self, yes: bool) -> Self {
        self.farewell = yes;
        self
    }

    /// Callback for connection lifecycle events (connects, reconnects, disconnects). Called inline:
    /// keep it quick (bump a metric, log).
    pub fn on_connection_event<F>(mut self, f: F) -> Self
    where
        F: Fn(&ConnectionEvent) + Send + Sync + 'static,
    {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Validates the settings and builds the runner.
    pub fn build(self) -> Result<Runner, Error> {
        let mut name = self.name;
        let mut index = self.index;
        let mut inherited_fd = None;
        if self.use_env {
            if let Ok(v) = std::env::var(PLUGIN_NAME_ENV) {
                if !v.is_empty() {
                    name = v;
                }
            }
            if let Ok(v) = std::env::var(PLUGIN_IDX_ENV) {
                if !v.is_empty() {
                    index = v;
                }
            }
            if let Ok(v) = std::env::var(PLUGIN_SOCKET_ENV) {
                if !v.is_empty() {
                    let fd: RawFd = v.trim().parse().map_err(|_| Error::InvalidSocketEnv(v.clone()))?;
                    if fd < 0 {
                        return Err(Error::InvalidSocketEnv(v));
                    }
                    inherited_fd = Some(fd);
                }
            }
        }
        validate_name(&name)?;
        validate_index(&index)?;
        if let Some(events) = self.events {
            EventMask::from_bits(events.bits())?;
        }
        Ok(Runner {
            name,
            index,
            socket_path: self.socket_path,
            inherited_fd: Mutex::new(inherited_fd),
            backoff: self.backoff,
            events: self.events,
            registration_timeout: self.registration_timeout,
            configure_timeout: self.configure_timeout,
            reconnect: self.reconnect,
            watch_socket: self.watch_socket,
            deadlines: self.deadlines,
            farewell: self.farewell,
            on_event: self.on_event,
            client: RuntimeClient::default(),
            stop: StopHandle::new(),
        })
    }
}

/// Runs a [`Plugin`]: connects to the runtime's NRI socket (or uses the socket inherited through
/// `NRI_PLUGIN_SOCKET`), registers, serves the runtime's requests, and reconnects when the runtime
/// restarts or is not there yet: as soon as its socket appears (inotify on the socket's
/// directory), with a slow fallback retry, or with capped exponential backoff when not watching.
///
/// ```no_run
/// # use nri_plugin::{Plugin, Runner};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {}
/// # async fn f() -> Result<(), nri_plugin::Error> {
/// let runner = Runner::builder("my-plugin", "10")
///     .socket_path("/var/run/nri/nri.sock")
///     .on_connection_event(|ev| tracing::info!(?ev, "NRI connection event"))
///     .build()?;
/// runner.run(MyPlugin).await
/// # }
/// ```
///
/// To stop it gracefully (requests in flight answered, then the connection closed), use
/// [`run_until`](Self::run_until) or a [`StopHandle`].
pub struct Runner {
    name: String,
    index: String,
    socket_path: PathBuf,
    inherited_fd: Mutex<Option<RawFd>>,
    backoff: Backoff,
    events: Option<EventMask>,
    registration_timeout: Duration,
    configure_timeout: Duration,
    reconnect: bool,
    watch_socket: bool,
    deadlines: Option<DeadlinePolicy>,
    farewell: bool,
    on_event: Option<EventCallback>,
    client: RuntimeClient,
    stop: StopHandle,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("socket_path", &self.socket_path)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

enum Transport {
    Path(PathBuf),
    Fd(RawFd),
}

impl Runner {
    /// Starts building a runner for a plugin registered as `name` with index `index` (two digits,
    /// plugins are called in ascending index order).
    pub fn builder(name: impl Into<String>, index: impl Into<String>) -> RunnerBuilder {
        RunnerBuilder {
            name: name.into(),
            index: index.into(),
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            use_env: true,
            backoff: Backoff::default(),
            events: None,
            registration_timeout: DEFAULT_REGISTRATION_TIMEOUT,
            configure_timeout: DEFAULT_CONFIGURE_TIMEOUT,
            reconnect: true,
            watch_socket: true,
            deadlines: Some(DeadlinePolicy::default()),
            farewell: true,
            on_event: None,
        }
    }

    /// Plugin name used for registration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Plugin index used for registration.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// Socket path connected to (unless an inherited socket is used).
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A handle for calling the runtime; valid across reconnects.
    pub fn runtime_client(&self) -> RuntimeClient {
        self.client.clone()
    }

    /// A handle that stops this runner gracefully: no new requests, the ones in flight answered,
    /// the connection closed, [`run`](Self::run) returning `Ok(())`. See [`StopHandle`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs `plugin` like [`run`](Self::run) until `signal` completes, then stops gracefully
    /// (see [`StopHandle`]) and returns `Ok(())` once the runtime has its answers and the
    /// connection is closed. Returns earlier, like `run`, if the runner gives up by itself.
    ///
    /// ```no_run
    /// # use nri_plugin::{Plugin, Runner};
    /// # struct MyPlugin;
    /// # impl Plugin for MyPlugin {}
    /// # async fn f() -> Result<(), nri_plugin::Error> {
    /// let runner = Runner::builder("my-plugin", "10").build()?;
    /// let sigterm = async {
    ///     let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    ///         .expect("SIGTERM handler");
    ///     term.recv().await;
    /// };
    /// runner.run_until(MyPlugin, sigterm).await
    /// # }
    /// ```
    pub async fn run_until<P, F>(self, plugin: P, signal: F) -> Result<(), Error>
    where
        P: Plugin,
        F: std::future::Future<Output = ()>,
    {
        let stop = self.stop_handle();
        let run = self.run(plugin);
        tokio::pin!(run, signal);
        tokio::select! {
            res = &mut run => res,
            _ = &mut signal => {
                stop.stop();
                run.await
            }
        }
    }

    fn emit(&self, ev: ConnectionEvent) {
        tracing::debug!(?ev, "NRI connection event");
        if let Some(cb) = &self.on_event {
            cb(&ev);
        }
    }

    /// Runs `plugin` until the runner gives up: never with reconnection enabled (the default),
    /// except for an inherited socket (`NRI_PLUGIN_SOCKET`), where it returns when that connection
    /// ends; or until it is stopped through its [`StopHandle`] (then `Ok(())`). Dropping the
    /// returned future closes the connection at once, without answering requests in flight.
    pub async fn run<P: Plugin>(self, plugin: P) -> Result<(), Error> {
        self.run_shared(Arc::new(plugin)).await
    }

    /// Like [`run`](Self::run), for a plugin the caller keeps a reference to.
    pub async fn run_shared<P: Plugin>(self, plugin: Arc<P>) -> Result<(), Error> {
        let mut connections: u64 = 0;
        let mut failures: u32 = 0;
        let mut waiting = Waiting::new(self.watch_socket);
        loop {
            if self.stop.is_stopped() {
                tracing::debug!(plugin = %self.name, "NRI runner stopped");
                return Ok(());
            }
            let transport = match self.inherited_fd.lock().ok().and_then(|mut g| g.take()) {
                Some(fd) => Transport::Fd(fd),
                None => Transport::Path(self.socket_path.clone()),
            };
            let inherited = matches!(transport, Transport::Fd(_));
            // The socket file this attempt is about: once it fails or its session ends, only a
            // new one is worth another attempt.
            let socket_id = if inherited { None } else { watch::file_id(&self.socket_path) };
            let stream = match connect(transport).await {
                Ok(s) => s,
                Err(e) => {
                    if inherited || !self.reconnect {
                        return Err(e);
                    }
                    // The socket was just created but the runtime is not listening on it yet
                    // (bind and listen are two calls): try again in a moment, not at the fallback.
                    // Also when a fallback attempt hits a socket other than the last one refused.
                    let new_socket = socket_id.is_some() && socket_id != waiting.refused;
                    let quick = waiting.watch && (waiting.woken || new_socket) && waiting.quick_retries < QUICK_RETRIES;
                    if quick && is_refused(&e) {
                        self.until_stopped(tokio::time::sleep(quick_retry_delay(waiting.quick_retries))).await;
                        waiting.quick_retries += 1;
                        waiting.woken = true;
                        continue;
                    }
                    if is_refused(&e) {
                        waiting.refused = socket_id;
                    }
                    failures = failures.saturating_add(1);
                    let retry_in = if waiting.watch { self.backoff.max } else { self.backoff.delay(failures) };
                    waiting.log_failure(&self.socket_path, &e, retry_in);
                    self.emit(ConnectionEvent::ConnectFailed { attempt: failures, error: e.to_string(), retry_in });
                    self.until_stopped(self.wait_for_socket(&mut waiting, failures, socket_id)).await;
                    continue;
                }
            };
            waiting.reset();
            connections += 1;
            tracing::debug!(connection = connections, plugin = %self.name, index = %self.index, "NRI connected");
            self.emit(ConnectionEvent::Connected { connection: connections });
            let (configured, result) = self.session(stream, plugin.clone(), connections, !inherited).await;
            self.client.set(None);
            match &result {
                // Debug only: the application hears it as ConnectionEvent::Disconnected and says
                // what it means for it, once.
                Ok(()) => tracing::debug!(connection = connections, "NRI connection closed"),
                Err(e) => tracing::debug!(connection = connections, error = %e, "NRI connection failed"),
            }
            if self.stop.is_stopped() && result.is_ok() {
                self.emit(ConnectionEvent::Stopped { connection: connections });
            } else {
                self.emit(ConnectionEvent::Disconnected {
                    connection: connections,
                    error: result.as_ref().err().map(|e| e.to_string()),
                });
            }
            if inherited || !self.reconnect || self.stop.is_stopped() {
                return result;
            }
            if configured {
                failures = 0;
                // The runtime went away after a working session: it is probably restarting. With
                // the socket watched, try right away (a refused or missing socket then waits for
                // the new one); without, give it a moment.
                if !waiting.watch {
                    self.until_stopped(tokio::time::sleep(self.backoff.initial)).await;
                }
            } else {
                // Connected but never configured: a runtime going down as we connected, or one
                // that does not take us (registration refused, handshake timeout). Wait for a
                // new socket, or back off.
                failures = failures.saturating_add(1);
                self.until_stopped(self.wait_for_socket(&mut waiting, failures, socket_id)).await;
            }
        }
    }

    /// Runs `fut` (a wait between attempts) unless the runner is stopped first.
    async fn until_stopped<F: std::future::Future<Output = ()>>(&self, fut: F) {
        tokio::select! {
            _ = fut => {}
            _ = self.stop.stopped() => {}
        }
    }

    /// Waits after a failed connection attempt: until the socket is (re)created, when watched,
    /// or the fallback delay; without a watch, the backoff delay.
    async fn wait_for_socket(&self, waiting: &mut Waiting, failures: u32, stale: Option<watch::FileId>) {
        waiting.woken = false;
        waiting.quick_retries = 0;
        if waiting.watch {
            tracing::debug!(socket = %self.socket_path.display(), fallback = ?self.backoff.max, "waiting for the NRI socket to appear");
            match watch::wait_for_socket(&self.socket_path, stale, self.backoff.max).await {
                Ok(watch::Wake::Appeared) => {
                    tracing::debug!(socket = %self.socket_path.display(), "NRI socket appeared");
                    waiting.woken = true;
                    return;
                }
                Ok(watch::Wake::Fallback) => return,
                Err(e) => {
                    tracing::warn!(
                        socket = %self.socket_path.display(), error = %e,
                        "cannot watch the NRI socket's directory; retrying with backoff instead"
                    );
                    waiting.watch = false;
                }
            }
        }
        tokio::time::sleep(self.backoff.delay(failures)).await;
    }

    /// Serves one connection until it ends. Returns whether it got configured, and how it ended.
    async fn session<P: Plugin>(
        &self,
        stream: UnixStream,
        plugin: Arc<P>,
        connection: u64,
        by_path: bool,
    ) -> (bool, Result<(), Error>) {
        let mux = Mux::new_blocked(stream);
        let mut configured = false;
        let result = self.session_inner(&mux, plugin, connection, &mut configured, by_path).await;
        mux.close();
        (configured, result)
    }

    async fn session_inner<P: Plugin>(
        &self,
        mux: &Mux,
        plugin: Arc<P>,
        connection: u64,
        configured: &mut bool,
        by_path: bool,
    ) -> Result<(), Error> {
        // Gated: once stopped, requests arriving from the runtime reach no handler.
        let plugin_conn = mux.open_gated(PLUGIN_SERVICE_CONN, self.stop.gate())?;
        let runtime_conn = mux.open(RUNTIME_SERVICE_CONN)?;
        let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel();
        let dispatch = Arc::new(PluginDispatch::new(plugin, self.events, sig_tx).with_deadlines(self.deadlines));
        // Kept alive for the session; dropping it shuts the server's connection down.
        let server = serve_stream(plugin_conn, service_table(PLUGIN_SERVICE, PLUGIN_METHODS, dispatch)).await?;
        let client = client_on(runtime_conn);
        mux.unblock();

        let mut req = RegisterPluginRequest::new();
        req.plugin_name = self.name.clone();
        req.plugin_idx = self.index.clone();
        req.NRI_version = NRI_API_VERSION.to_string();
        tracing::debug!(plugin = %self.name, index = %self.index, "registering NRI plugin");
        // Usable from here on: the runtime may configure the plugin (and handlers may call the
        // runtime) before the registration reply has reached us.
        self.client.set(Some(client.clone()));
        // The registration reply is awaited inside the session loop: the runtime may configure
        // the plugin (or even hang up) before that reply arrives.
        let register =
            call::<_, Empty>(&client, RUNTIME_SERVICE, "RegisterPlugin", &req, Some(self.registration_timeout));
        tokio::pin!(register);
        let mut registered = false;

        let configure_deadline = tokio::time::sleep(self.configure_timeout);
        tokio::pin!(configure_deadline);
        loop {
            tokio::select! {
                biased;
                res = mux.closed() => return close_result(res),
                res = &mut register, if !registered => match res {
                    Ok(_) => {
                        registered = true;
                        tracing::debug!(plugin = %self.name, index = %self.index, "NRI plugin registered");
                        self.emit(ConnectionEvent::Registered { connection });
                    }
                    // Failed because the connection went away: report how it went away.
                    Err(_) if mux.is_closed() => return close_result(mux.closed().await),
                    Err(e) => return Err(e),
                },
                sig = sig_rx.recv() => match sig {
                    Some(SessionSignal::Configured { runtime_name, runtime_version, nri_version, events }) => {
                        *configured = true;
                        self.emit(ConnectionEvent::Configured { connection, runtime_name, runtime_version, nri_version, events });
                    }
                    Some(SessionSignal::Synchronized { pods, containers }) => {
                        self.emit(ConnectionEvent::Synchronized { connection, pods, containers });
                    }
                    Some(SessionSignal::Shutdown) => {
                        self.emit(ConnectionEvent::ShutdownRequested { connection });
                    }
                    Some(SessionSignal::ProtocolError(msg)) => {
                        // Give the error response a moment to reach the runtime, then hang up.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return Err(Error::Protocol(msg));
                    }
                    None => {}
                },
                _ = &mut configure_deadline, if !*configured => {
                    return Err(Error::HandshakeTimeout { stage: "configure", timeout: self.configure_timeout });
                }
                _ = self.stop.stopped() => return self.stop_session(mux, server, connection, by_path && *configured).await,
            }
        }
    }

    /// The stop sequence (see [`StopHandle`]): the farewell connection when possible, then the
    /// gate and [`close_gracefully`](Self::close_gracefully), then the farewell's release.
    async fn stop_session(
        &self,
        mux: &Mux,
        server: ttrpc::r#async::Server,
        connection: u64,
        farewell_possible: bool,
    ) -> Result<(), Error> {
        let mut farewell = None;
        if self.farewell && farewell_possible {
            let f = farewell::start(
                self.socket_path.clone(),
                self.name.clone(),
                self.index.clone(),
                self.registration_timeout.min(FAREWELL_TIMEOUT),
            );
            let farewell::Farewell { quiesced, release, mut task } = f;
            // The main connection keeps serving until the runtime holds its events.
            let held = tokio::select! {
                q = quiesced => q.is_ok(),
                _ = tokio::time::sleep(FAREWELL_TIMEOUT) => false,
                _ = mux.closed() => false,
            };
            if held {
                farewell = Some((release, task));
            } else {
                task.abort();
                match (&mut task).await {
                    Ok(Err(e)) => tracing::debug!(connection, error = %e, "NRI stop: no farewell connection"),
                    _ => tracing::debug!(connection, "NRI stop: no farewell connection (timed out)"),
                }
            }
        }
        self.stop.close_gate();
        self.emit(ConnectionEvent::Stopping { connection, farewell: farewell.is_some() });
        let res = self.close_gracefully(mux, server, connection).await;
        if let Some((release, task)) = farewell {
            // containerd closes its socket first and marks the plugin closed afterwards, in a
            // callback of its own; its events are still held, so give that callback time before
            // the farewell's Synchronize answer makes it prune its plugin list.
            tokio::time::sleep(CLOSE_SETTLE).await;
            let _ = release.send(());
            match tokio::time::timeout(FAREWELL_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => tracing::debug!(connection, "NRI stop: farewell connection done"),
                Ok(Ok(Err(e))) => tracing::debug!(connection, error = %e, "NRI stop: farewell connection failed"),
                _ => tracing::debug!(connection, "NRI stop: farewell connection did not finish"),
            }
        }
        res
    }

    /// Closing the main connection: the gate already keeps new requests from the handlers; stop
    /// the plugin's ttrpc server reading, let it answer what is in flight and
    /// write the answers, wait until they are on the socket, close it for writing and give the
    /// runtime [`STOP_CLOSE_TIMEOUT`] to close its end.
    async fn close_gracefully(
        &self,
        mux: &Mux,
        mut server: ttrpc::r#async::Server,
        connection: u64,
    ) -> Result<(), Error> {
        tracing::debug!(connection, plugin = %self.name, "NRI stop: answering requests in flight");
        // Returns once every handler in flight has been answered for (by its deadline at the
        // latest) and the server's writer has written the answers to its connection.
        server.disconnect().await;
        drop(server);
        mux.flushed(PLUGIN_SERVICE_CONN).await;
        if let Err(e) = mux.shutdown_write().await {
            tracing::debug!(connection, error = %e, "NRI stop: closing the connection for writing failed");
            return Ok(());
        }
        match tokio::time::timeout(STOP_CLOSE_TIMEOUT, mux.closed()).await {
            Ok(_) => tracing::debug!(connection, "NRI stop: the runtime closed its end"),
            Err(_) => {
                tracing::debug!(connection, timeout = ?STOP_CLOSE_TIMEOUT, "NRI stop: the runtime did not close its end")
            }
        }
        Ok(())
    }
}

fn close_result(res: crate::mux::CloseResult) -> Result<(), Error> {
    match res {
        Ok(()) => Ok(()),
        Err(e) => match Arc::try_unwrap(e) {
            Ok(e) => Err(Error::Mux(e)),
            Err(e) => Err(Error::Transport { method: "mux".into(), message: e.to_string() }),
        },
    }
}

/// How long a graceful stop waits for the runtime to take the farewell connection (register,
/// configure, start synchronizing it) before closing without it; also the bound for the
/// farewell connection to finish afterwards.
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the farewell's `Synchronize` answer waits after the runtime closed its end of the
/// main connection. containerd (NRI v0.6 to v0.12) marks a plugin closed in its ttrpc client's
/// close callback, which runs after the socket is closed; a Synchronize answered before that
/// callback leaves the closed plugin in the list, and the next event logs `ttrpc: closed` (seen
/// in a CI run on a loaded 2-core machine without this wait). The runtime holds its events
/// meanwhile, so this only delays them, once, at stop.
const CLOSE_SETTLE: Duration = Duration::from_millis(250);

/// Connection attempts right after the socket appeared that may still find it not listening.
const QUICK_RETRIES: u32 = 28;

/// Delay before quick attempt `n` (from 0): every millisecond for 20 ms (a runtime preempted
/// between bind and listen on a busy node), then doubling from 2 to 256 ms: about half a second
/// in all.
fn quick_retry_delay(n: u32) -> Duration {
    Duration::from_millis(if n < 20 { 1 } else { 1 << (n - 19).min(8) })
}

fn is_refused(e: &Error) -> bool {
    matches!(e, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// State of the wait for the runtime's socket, and what has been logged about it: one line when
/// the runtime becomes unreachable and one when the reason changes, not one per attempt.
struct Waiting {
    /// Whether the socket's directory is watched (false when disabled or inotify failed).
    watch: bool,
    /// The last wait ended because the socket appeared.
    woken: bool,
    /// Quick attempts made since the socket appeared.
    quick_retries: u32,
    /// The socket file whose connection was last refused after the quick attempts.
    refused: Option<watch::FileId>,
    /// The reason last logged for the current outage.
    logged: Option<String>,
}

impl Waiting {
    fn new(watch: bool) -> Self {
        Waiting { watch, woken: false, quick_retries: 0, refused: None, logged: None }
    }

    fn reset(&mut self) {
        self.woken = false;
        self.quick_retries = 0;
        self.refused = None;
        self.logged = None;
    }

    fn log_failure(&mut self, socket: &Path, e: &Error, retry_in: Duration) {
        let reason = match e {
            Error::Connect { source, .. } => source.kind().to_string(),
            other => other.to_string(),
        };
        if self.logged.as_deref() == Some(reason.as_str()) {
            tracing::debug!(socket = %socket.display(), error = %e, ?retry_in, "NRI connect failed");
            return;
        }
        // Debug only, like the disconnect: the application hears it as
        // ConnectionEvent::ConnectFailed and says what it means for it, once.
        if self.watch {
            tracing::debug!(
                socket = %socket.display(), error = %e, fallback_retry = ?retry_in,
                "NRI socket unavailable; connecting as soon as it appears"
            );
        } else {
            tracing::debug!(socket = %socket.display(), error = %e, ?retry_in, "NRI socket unavailable; retrying with backoff");
        }
        self.logged = Some(reason);
    }
}

async fn connect(transport: Transport) -> Result<UnixStream, Error> {
    match transport {
        Transport::Path(path) => UnixStream::connect(&path)
            .await
            .map_err(|source| Error::Connect { path: path.display().to_string(), source }),
        Transport::Fd(fd) => {
            // SAFETY: the runtime passed this descriptor to us through NRI_PLUGIN_SOCKET; it is
            // taken out of the runner exactly once, so ownership is transferred only once.
            let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
            std_stream.set_nonblocking(true)?;
            Ok(UnixStream::from_std(std_stream)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes() {
        for ok in ["driftguard", "a", "x_y.z+1-2", "ABC09"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "ä", "x:y"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["00", "10", "99"] {
            validate_index(ok).unwrap();
        }
        for bad in ["", "1", "100", "1a", "٠١", "-1"] {
            assert!(validate_index(bad).is_err(), "{bad:?}");
        }
        assert!(Runner::builder("bad name", "10").use_env(false).build().is_err());
        assert!(Runner::builder("good", "7").use_env(false).build().is_err());
        assert!(Runner::builder("good", "07").use_env(false).build().is_ok());
    }

    #[test]
    fn quick_retries_cover_half_a_second() {
        let total: Duration = (0..QUICK_RETRIES).map(quick_retry_delay).sum();
        assert_eq!(quick_retry_delay(0), Duration::from_millis(1));
        assert_eq!(quick_retry_delay(19), Duration::from_millis(1));
        assert_eq!(quick_retry_delay(20), Duration::from_millis(2));
        assert_eq!(total, Duration::from_millis(20 + 510));
    }

    #[test]
    fn backoff_is_capped_exponential() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
