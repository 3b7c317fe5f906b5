//! Glue between the generated protobuf messages and the `ttrpc` crate: generic unary method
//! dispatch for a ttrpc server and a typed unary call for a ttrpc client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message;
use ttrpc::proto::ResponseInit;
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};
use ttrpc::{Code, Request, Response};

use crate::deadline::Deadline;
use crate::error::Error;

/// Fully qualified name of the plugin-side service.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// Fully qualified name of the runtime-side service.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A ttrpc status: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcStatus {
    pub code: Code,
    pub message: String,
}

impl RpcStatus {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcStatus { code, message: message.into() }
    }
}

/// Something that answers the unary methods of one service: gets the method name and the raw
/// request payload, returns the raw response payload or a status.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn dispatch<'a>(&'a self, method: &'a str, payload: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, RpcStatus>>;

    /// The deadline of a request arriving now (`runtime_timeout`: the caller's `timeout_nano`,
    /// if it sent one); `None` lets the handler take as long as it takes.
    fn deadline(&self, method: &str, runtime_timeout: Option<Duration>) -> Option<Deadline> {
        let _ = (method, runtime_timeout);
        None
    }

    /// The answer sent in place of a handler that missed `deadline`.
    fn overrun(&self, method: &str, payload: &[u8], deadline: &Deadline) -> Result<Vec<u8>, RpcStatus> {
        let _ = payload;
        Err(RpcStatus::new(Code::DEADLINE_EXCEEDED, format!("{method} did not finish within {:?}", deadline.budget())))
    }
}

struct MethodEntry<D: Dispatch> {
    method: &'static str,
    dispatcher: Arc<D>,
}

#[async_trait::async_trait]
impl<D: Dispatch> MethodHandler for MethodEntry<D> {
    async fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let runtime_timeout = u64::try_from(ctx.timeout_nano).ok().filter(|n| *n > 0).map(Duration::from_nanos);
        let res = match self.dispatcher.deadline(self.method, runtime_timeout) {
            None => self.dispatcher.dispatch(self.method, req.payload).await,
            Some(deadline) => self.dispatch_by(deadline, req.payload).await,
        };
        let res = match res {
            Ok(payload) => {
                let mut res = Response::init_status(ttrpc::get_status(Code::OK, ""));
                res.set_payload(payload);
                res
            }
            Err(status) => Response::init_status(ttrpc::get_status(status.code, status.message)),
        };
        Ok(res)
    }
}

impl<D: Dispatch> MethodEntry<D> {
    /// Runs the handler in its own task and answers by `deadline` whatever it does: with its
    /// result if it is done, else with [`Dispatch::overrun`]. The handler is not cancelled (it
    /// may be in the middle of changing state); it finishes in the background.
    async fn dispatch_by(&self, deadline: Deadline, payload: Vec<u8>) -> Result<Vec<u8>, RpcStatus> {
        let method = self.method;
        let request = payload.clone();
        let dispatcher = self.dispatcher.clone();
        let task = tokio::spawn(deadline.scope(async move { dispatcher.dispatch(method, payload).await }));
        match tokio::time::timeout_at(deadline.instant(), task).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                tracing::error!(method, error = %e, "NRI handler panicked");
                Err(RpcStatus::new(Code::INTERNAL, format!("{method} handler failed: {e}")))
            }
            Err(_) => self.dispatcher.overrun(method, &request, &deadline),
        }
    }
}

/// Builds the ttrpc service table for `service` with `methods`, all answered by `dispatcher`.
pub(crate) fn service_table<D: Dispatch>(
    service: &str,
    methods: &[&'static str],
    dispatcher: Arc<D>,
) -> HashMap<String, Service> {
    let mut table: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    for &method in methods {
        table.insert(method.to_string(), Box::new(MethodEntry { method, dispatcher: dispatcher.clone() }));
    }
    let mut services = HashMap::new();
    services.insert(service.to_string(), Service { methods: table, streams: HashMap::new() });
    services
}

/// Decodes a request payload, mapping failure to an `INVALID_ARGUMENT` status.
pub(crate) fn decode<M: Message>(method: &str, payload: &[u8]) -> Result<M, RpcStatus> {
    M::parse_from_bytes(payload)
        .map_err(|e| RpcStatus::new(Code::INVALID_ARGUMENT, format!("failed to decode {method} request: {e}")))
}

/// Encodes a response message.
pub(crate) fn encode<M: Message>(method: &str, msg: &M) -> Result<Vec<u8>, RpcStatus> {
    msg.write_to_bytes().map_err(|e| RpcStatus::new(Code::INTERNAL, format!("failed to encode {method} response: {e}")))
}

/// Calls `service/method` on `client` with `req` and decodes the response.
pub(crate) async fn call<Req: Message, Resp: Message>(
    client: &ttrpc::r#async::Client,
    service: &str,
    method: &str,
    req: &Req,
    timeout: Option<Duration>,
) -> Result<Resp, Error> {
    let payload =
        req.write_to_bytes().map_err(|e| Error::Protocol(format!("failed to encode {method} request: {e}")))?;
    let raw = call_raw(client, service, method, payload, timeout).await?;
    Resp::parse_from_bytes(&raw).map_err(|e| Error::Protocol(format!("failed to decode {method} response: {e}")))
}

/// Calls `service/method` with a raw payload and returns the raw response payload.
pub(crate) async fn call_raw(
    client: &ttrpc::r#async::Client,
    service: &str,
    method: &str,
    payload: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, Error> {
    let mut request = Request::new();
    request.service = service.to_string();
    request.method = method.to_string();
    request.payload = payload;
    let timeout_nano = timeout.map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0);
    request.timeout_nano = timeout_nano;

    let fut = client.request(request);
    let result = match timeout {
        // Guard against a peer that never answers even if the transport layer does not time out.
        Some(t) => match tokio::time::timeout(t + Duration::from_millis(500), fut).await {
            Ok(r) => r,
            Err(_) => return Err(Error::Timeout { method: method.to_string(), timeout: t }),
        },
        None => fut.await,
    };
    match result {
        Ok(resp) => Ok(resp.payload),
        Err(ttrpc::Error::RpcStatus(status)) => {
            let code = status.code.value();
            if code == Code::DEADLINE_EXCEEDED as i32 {
                if let Some(t) = timeout {
                    return Err(Error::Timeout { method: method.to_string(), timeout: t });
                }
            }
            Err(Error::Rpc { method: method.to_string(), code, message: status.message })
        }
        Err(e) => Err(Error::Transport { method: method.to_string(), message: e.to_string() }),
    }
}

/// Starts a ttrpc server for `services` on one already connected byte stream.
pub(crate) async fn serve_stream<S>(
    stream: S,
    services: HashMap<String, Service>,
) -> Result<ttrpc::r#async::Server, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    let listener =
        ttrpc::r#async::transport::Listener::new(futures::stream::once(async move { Ok::<_, std::io::Error>(stream) }));
    let mut server = ttrpc::r#async::Server::new().register_service(services).add_listener(listener);
    server.start().await.map_err(|e| Error::Ttrpc(e.to_string()))?;
    Ok(server)
}

/// Creates a ttrpc client on one already connected byte stream.
pub(crate) fn client_on<S>(stream: S) -> ttrpc::r#async::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream))
}
