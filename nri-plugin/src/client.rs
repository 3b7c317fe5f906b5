//! [`RuntimeClient`]: plugin-initiated calls to the runtime.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::{ContainerEviction, ContainerUpdate, UpdateContainersRequest, UpdateContainersResponse};
use crate::error::Error;
use crate::rpc::{call, RUNTIME_SERVICE};

/// Default timeout of calls made through a [`RuntimeClient`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A cloneable handle for calling the runtime's NRI service (`UpdateContainers`).
///
/// Get one from [`Runner::runtime_client`](crate::Runner::runtime_client) before running the plugin
/// and keep it in the plugin. It always refers to the runner's current connection: calls made while
/// disconnected fail with [`Error::NotConnected`], and after a reconnect the same handle works again.
///
/// Do not await a call from inside a handler for the same runtime request path if the runtime
/// holds locks while waiting for the handler (containerd serializes NRI requests); issue
/// unsolicited updates from a separate task instead.
#[derive(Clone)]
pub struct RuntimeClient {
    inner: Arc<RwLock<Option<ttrpc::r#async::Client>>>,
    timeout: Duration,
}

impl Default for RuntimeClient {
    fn default() -> Self {
        RuntimeClient { inner: Arc::new(RwLock::new(None)), timeout: DEFAULT_CALL_TIMEOUT }
    }
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("connected", &self.is_connected())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RuntimeClient {
    /// A clone of this handle whose calls time out after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> RuntimeClient {
        RuntimeClient { inner: self.inner.clone(), timeout }
    }

    /// Whether the runner currently has a connection to the runtime. It is set as soon as the
    /// plugin has connected and is registering (the runtime may configure it, and handlers may
    /// call back, before the registration reply arrives) and cleared when the connection ends.
    pub fn is_connected(&self) -> bool {
        self.inner.read().map(|g| g.is_some()).unwrap_or(false)
    }

    pub(crate) fn set(&self, client: Option<ttrpc::r#async::Client>) {
        if let Ok(mut g) = self.inner.write() {
            *g = client;
        }
    }

    fn current(&self) -> Result<ttrpc::r#async::Client, Error> {
        self.inner.read().ok().and_then(|g| g.clone()).ok_or(Error::NotConnected)
    }

    /// Asks the runtime to update (and/or evict) containers unsolicitedly. Returns the updates the
    /// runtime failed to apply.
    pub async fn update_containers(
        &self,
        update: Vec<ContainerUpdate>,
        evict: Vec<ContainerEviction>,
    ) -> Result<Vec<ContainerUpdate>, Error> {
        let client = self.current()?;
        let mut req = UpdateContainersRequest::new();
        req.update = update;
        req.evict = evict;
        let resp: UpdateContainersResponse =
            call(&client, RUNTIME_SERVICE, "UpdateContainers", &req, Some(self.timeout)).await?;
        Ok(resp.failed)
    }
}
