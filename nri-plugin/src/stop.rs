//! [`StopHandle`]: stops a running [`Runner`](crate::Runner) gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How long a stopping runner waits for the runtime to close its end after the plugin closed its
/// own (the runtime's acknowledgement that it saw the plugin go). It does not wait longer.
pub const STOP_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Stops a [`Runner`](crate::Runner) gracefully; obtained from
/// [`Runner::stop_handle`](crate::Runner::stop_handle), cheap to clone, usable from any thread.
///
/// After [`stop`](Self::stop) the runner
///
/// 1. when connected through a socket path, opens a farewell connection (see
///    [`RunnerBuilder::farewell`](crate::RunnerBuilder::farewell)) and keeps serving requests
///    until the runtime holds its events for it (at most
///    [`FAREWELL_TIMEOUT`](crate::FAREWELL_TIMEOUT));
/// 2. takes no new request ([`ConnectionEvent::Stopping`](crate::ConnectionEvent::Stopping)): a
///    request that reaches the plugin from then on is not given to any handler and never
///    answered (the runtime sees the connection close instead, as when a plugin goes away, and
///    goes on without the plugin);
/// 3. lets the requests in flight finish: each is answered as usual, by its handler or, when the
///    handler overruns, at its [`Deadline`](crate::Deadline) with
///    [`Plugin::on_deadline`](crate::Plugin::on_deadline)'s answer, so waiting is bounded by the
///    deadlines (without deadlines, by the ttrpc server's 10 s shutdown bound);
/// 4. closes the connection for writing once every answer is on the socket, and waits up to
///    [`STOP_CLOSE_TIMEOUT`] for the runtime to close its end;
/// 5. completes and closes the farewell connection, and
/// 6. returns `Ok(())` from [`run`](crate::Runner::run) without reconnecting
///    ([`ConnectionEvent::Stopped`](crate::ConnectionEvent::Stopped)). A runner that is waiting
///    for the runtime (not connected) returns at once.
///
/// NRI has no call to unregister. containerd's NRI adaptation (containerd 1.7 and 2.x, also used
/// by CRI-O) keeps a plugin whose connection closed in its list until its next event dispatch and
/// sends it that event, which fails and is logged as an error (`closing plugin …, failed to
/// handle event …: ttrpc: closed`). The farewell connection makes the runtime drop the closed
/// plugin before any event: after a stop with it, no such error is logged, except when the
/// runtime's very next event is a PostUpdateContainer (the farewell connection's subscription)
/// or when the farewell could not be made (then the line says only that the plugin had gone).
///
/// ```no_run
/// # use nri_plugin::{Plugin, Runner};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {}
/// # async fn f() -> Result<(), nri_plugin::Error> {
/// let runner = Runner::builder("my-plugin", "10").build()?;
/// let stop = runner.stop_handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     stop.stop();
/// });
/// runner.run(MyPlugin).await // Ok(()) once stopped and the runtime has its answers
/// # }
/// ```
#[derive(Clone)]
pub struct StopHandle {
    inner: Arc<StopState>,
}

struct StopState {
    /// Read by the multiplexer for every incoming frame of the plugin's connection.
    gate: Arc<AtomicBool>,
    tx: watch::Sender<bool>,
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle").field("stopped", &self.is_stopped()).finish()
    }
}

impl StopHandle {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(false);
        StopHandle { inner: Arc::new(StopState { gate: Arc::new(AtomicBool::new(false)), tx }) }
    }

    /// Asks the runner to stop (see the type's documentation). Idempotent.
    pub fn stop(&self) {
        self.inner.tx.send_replace(true);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        *self.inner.tx.borrow()
    }

    /// From now on no frame arriving on the plugin's connection reaches a handler.
    pub(crate) fn close_gate(&self) {
        self.inner.gate.store(true, Ordering::Release);
    }

    /// The flag the multiplexer checks for each incoming frame of the plugin's connection.
    pub(crate) fn gate(&self) -> Arc<AtomicBool> {
        self.inner.gate.clone()
    }

    /// Resolves once [`stop`](Self::stop) has been called.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.inner.tx.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}
