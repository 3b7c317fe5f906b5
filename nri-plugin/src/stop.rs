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
/// 1. takes no new request: a request that reaches the plugin after `stop` returned is not given
///    to any handler and never answered (the runtime sees the connection close instead, as when
///    a plugin goes away, and goes on without the plugin);
/// 2. lets the requests in flight finish: each is answered as usual, by its handler or, when the
///    handler overruns, at its [`Deadline`](crate::Deadline) with
///    [`Plugin::on_deadline`](crate::Plugin::on_deadline)'s answer, so waiting is bounded by the
///    deadlines (without deadlines, by the ttrpc server's 10 s shutdown bound);
/// 3. closes the connection for writing once every answer is on the socket, waits up to
///    [`STOP_CLOSE_TIMEOUT`] for the runtime to close its end, and
/// 4. returns `Ok(())` from [`run`](crate::Runner::run) without reconnecting. A runner that is
///    waiting for the runtime (not connected) returns at once.
///
/// Stopping does not unregister the plugin: NRI has no such call. A runtime using containerd's
/// NRI adaptation (containerd 1.7 and 2.x, CRI-O) notices the closed connection and logs it; it
/// drops the plugin from its list only after its next event dispatch, and if that event is one
/// the plugin subscribed to, it logs an error for it (`closing plugin …: ttrpc: closed`) before
/// dropping the plugin. That line says the plugin had gone, not that a request was cut off.
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

    /// Asks the runner to stop (see the type's documentation). From the moment this returns, no
    /// request arriving on the connection reaches a handler. Idempotent.
    pub fn stop(&self) {
        self.inner.gate.store(true, Ordering::Release);
        self.inner.tx.send_replace(true);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.gate.load(Ordering::Acquire)
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
