//! The farewell connection: how a stopping runner leaves the runtime's plugin list without the
//! runtime logging an error.
//!
//! containerd's NRI adaptation (`github.com/containerd/nri/pkg/adaptation`, v0.6.1 in containerd
//! 1.7.24 through v0.12) marks a plugin closed when its connection closes, but removes closed
//! plugins from its list only at the end of an event dispatch or when another plugin connects.
//! The first event after a plugin left is therefore still sent to it, fails with `ttrpc: closed`,
//! and is logged as an error (`closing plugin …, failed to handle event …`) — unless a plugin
//! connection completes in between: that removes every closed plugin before any event is sent.
//!
//! So the stopping runner opens a second, short-lived connection to the same socket, registers
//! under the same name and index, subscribes to a single, rare event, and when the runtime sends
//! it `Synchronize` — with every event dispatch held off by the runtime, which synchronizes a
//! new plugin under the lock its event dispatch takes — closes the main connection (answering
//! what is in flight first), waits until the runtime has closed its end, and only then answers
//! `Synchronize`. The runtime then adds the farewell connection to its list and drops the closed
//! main one. The farewell connection closes right after; the runtime drops it at its next event
//! dispatch without calling it (it is not subscribed), unless that very event is the one it
//! subscribed to.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{ConfigureResponse, Empty, Event, RegisterPluginRequest, SynchronizeRequest, SynchronizeResponse};
use crate::error::Error;
use crate::events::EventMask;
use crate::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use crate::plugin::PLUGIN_METHODS;
use crate::rpc::{
    call, client_on, decode, encode, serve_stream, service_table, BoxFuture, Dispatch, RpcStatus, PLUGIN_SERVICE,
    RUNTIME_SERVICE,
};
use crate::stop::STOP_CLOSE_TIMEOUT;

/// The one event the farewell connection subscribes to (a subscription cannot be empty: 0 means
/// all). PostUpdateContainer follows only a CRI UpdateContainerResources, the rarest event.
const FAREWELL_EVENT: Event = Event::POST_UPDATE_CONTAINER;

/// How long `Synchronize` on the farewell connection waits for the main connection to close
/// (the runtime's request timeout is 2 s by default).
const RELEASE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A farewell connection being set up: resolves `quiesced` when the runtime holds its events
/// (its `Synchronize` arrived); answers that `Synchronize` once `release` is sent.
pub(crate) struct Farewell {
    pub quiesced: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
    pub task: JoinHandle<Result<(), Error>>,
}

/// Starts the farewell connection to `socket` as plugin `name`/`index`.
pub(crate) fn start(socket: PathBuf, name: String, index: String, timeout: Duration) -> Farewell {
    let (quiesced_tx, quiesced) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    let task = tokio::spawn(run(socket, name, index, timeout, quiesced_tx, release_rx));
    Farewell { quiesced, release, task }
}

async fn run(
    socket: PathBuf,
    name: String,
    index: String,
    timeout: Duration,
    quiesced: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|source| Error::Connect { path: socket.display().to_string(), source })?;
    let mux = Mux::new_blocked(stream);
    let plugin_conn = mux.open(PLUGIN_SERVICE_CONN)?;
    let runtime_conn = mux.open(RUNTIME_SERVICE_CONN)?;
    let (done_tx, done) = oneshot::channel();
    let dispatch =
        Arc::new(FarewellDispatch { hold: Mutex::new(Some((quiesced, release))), done: Mutex::new(Some(done_tx)) });
    let mut server = serve_stream(plugin_conn, service_table(PLUGIN_SERVICE, PLUGIN_METHODS, dispatch)).await?;
    let client = client_on(runtime_conn);
    mux.unblock();

    let mut req = RegisterPluginRequest::new();
    req.plugin_name = name;
    req.plugin_idx = index;
    req.NRI_version = crate::NRI_API_VERSION.to_string();
    call::<_, Empty>(&client, RUNTIME_SERVICE, "RegisterPlugin", &req, Some(timeout)).await?;
    tokio::select! {
        _ = done => {}
        res = mux.closed() => {
            return Err(Error::Transport {
                method: "Synchronize".into(),
                message: format!("the runtime closed the farewell connection first: {res:?}"),
            });
        }
    }
    // The final Synchronize answer is written; close as the main connection did.
    server.disconnect().await;
    drop(server);
    mux.flushed(PLUGIN_SERVICE_CONN).await;
    mux.shutdown_write().await?;
    let _ = tokio::time::timeout(STOP_CLOSE_TIMEOUT, mux.closed()).await;
    Ok(())
}

type Hold = (oneshot::Sender<()>, oneshot::Receiver<()>);

struct FarewellDispatch {
    /// Taken by the first `Synchronize`: say the runtime is quiet, wait for the release.
    hold: Mutex<Option<Hold>>,
    /// Sent when the final `Synchronize` chunk is answered.
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl FarewellDispatch {
    async fn handle(&self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcStatus> {
        match method {
            "Configure" => {
                let mut resp = ConfigureResponse::new();
                resp.events = EventMask::of(&[FAREWELL_EVENT]).bits() as i32;
                encode(method, &resp)
            }
            "Synchronize" => {
                let req: SynchronizeRequest = decode(method, &payload)?;
                let hold = self.hold.lock().ok().and_then(|mut h| h.take());
                if let Some((quiesced, release)) = hold {
                    let _ = quiesced.send(());
                    // Whatever happens to the main connection, answer before the runtime's timeout.
                    let _ = tokio::time::timeout(RELEASE_TIMEOUT, release).await;
                }
                let mut resp = SynchronizeResponse::new();
                resp.more = req.more;
                let out = encode(method, &resp);
                if !req.more {
                    if let Some(done) = self.done.lock().ok().and_then(|mut d| d.take()) {
                        let _ = done.send(());
                    }
                }
                out
            }
            // Nothing else concerns the farewell connection: every reply message with its fields
            // at their defaults encodes to no bytes.
            _ => Ok(Vec::new()),
        }
    }
}

impl Dispatch for FarewellDispatch {
    fn dispatch<'a>(&'a self, method: &'a str, payload: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, RpcStatus>> {
        Box::pin(self.handle(method, payload))
    }
}
