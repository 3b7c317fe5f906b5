//! NRI logger: prints every NRI event it receives as one JSON line on stdout.
//!
//! The first thing to run on a node to see NRI working:
//!
//! ```text
//! sudo cargo run -p nri-plugin --example logger -- [--socket /var/run/nri/nri.sock] \
//!     [--name logger] [--index 99] [--all-events]
//! ```
//!
//! Each line is `{"ts": <unix seconds>, "event": "<Name>", ...}` with the pod and container as
//! NRI sent them (protobuf JSON mapping). Connection events (connects, reconnects, disconnects)
//! are printed too, with `"event": "connection"`. Diagnostics go to stderr (`RUST_LOG=debug`).

use std::time::{SystemTime, UNIX_EPOCH};

use nri_plugin::api::{
    ConfigureRequest, Container, ContainerUpdate, CreateContainerResponse, LinuxResources, PodSandbox,
    UpdateContainerResponse, ValidateContainerAdjustmentRequest, ValidateContainerAdjustmentResponse,
};
use nri_plugin::protobuf::MessageFull;
use nri_plugin::{ConnectionEvent, EventMask, HandlerResult, Plugin, Runner, DEFAULT_SOCKET_PATH};
use serde_json::{json, Map, Value};

struct Logger {
    events: EventMask,
}

fn to_json<M: MessageFull>(m: &M) -> Value {
    protobuf_json_mapping::print_to_string(m).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null)
}

fn emit(event: &str, fields: Value) {
    let mut line = Map::new();
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    line.insert("ts".into(), json!(ts));
    line.insert("event".into(), json!(event));
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    println!("{}", Value::Object(line));
}

fn pod_ctr(event: &str, pod: &PodSandbox, ctr: &Container) {
    emit(event, json!({"pod": to_json(pod), "container": to_json(ctr)}));
}

impl Plugin for Logger {
    fn events(&self) -> EventMask {
        self.events
    }
    async fn configure(&self, req: &ConfigureRequest) -> HandlerResult<()> {
        emit("Configure", json!({"request": to_json(req)}));
        Ok(())
    }
    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> HandlerResult<Vec<ContainerUpdate>> {
        emit(
            "Synchronize",
            json!({
                "pods": pods.iter().map(to_json).collect::<Vec<_>>(),
                "containers": containers.iter().map(to_json).collect::<Vec<_>>(),
            }),
        );
        Ok(Vec::new())
    }
    async fn shutdown(&self) {
        emit("Shutdown", json!({}));
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        emit("RunPodSandbox", json!({"pod": to_json(pod)}));
        Ok(())
    }
    async fn update_pod_sandbox(
        &self,
        pod: &PodSandbox,
        overhead: Option<&LinuxResources>,
        resources: Option<&LinuxResources>,
    ) -> HandlerResult<()> {
        let overhead = overhead.map(to_json);
        let resources = resources.map(to_json);
        emit("UpdatePodSandbox", json!({"pod": to_json(pod), "overhead": overhead, "resources": resources}));
        Ok(())
    }
    async fn post_update_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        emit("PostUpdatePodSandbox", json!({"pod": to_json(pod)}));
        Ok(())
    }
    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        emit("StopPodSandbox", json!({"pod": to_json(pod)}));
        Ok(())
    }
    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        emit("RemovePodSandbox", json!({"pod": to_json(pod)}));
        Ok(())
    }
    async fn create_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<CreateContainerResponse> {
        pod_ctr("CreateContainer", pod, ctr);
        Ok(CreateContainerResponse::new())
    }
    async fn post_create_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        pod_ctr("PostCreateContainer", pod, ctr);
        Ok(())
    }
    async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        pod_ctr("StartContainer", pod, ctr);
        Ok(())
    }
    async fn post_start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        pod_ctr("PostStartContainer", pod, ctr);
        Ok(())
    }
    async fn update_container(
        &self,
        pod: &PodSandbox,
        ctr: &Container,
        resources: Option<&LinuxResources>,
    ) -> HandlerResult<UpdateContainerResponse> {
        emit(
            "UpdateContainer",
            json!({"pod": to_json(pod), "container": to_json(ctr), "resources": resources.map(to_json)}),
        );
        Ok(UpdateContainerResponse::new())
    }
    async fn post_update_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        pod_ctr("PostUpdateContainer", pod, ctr);
        Ok(())
    }
    async fn stop_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<Vec<ContainerUpdate>> {
        pod_ctr("StopContainer", pod, ctr);
        Ok(Vec::new())
    }
    async fn remove_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        pod_ctr("RemoveContainer", pod, ctr);
        Ok(())
    }
    async fn validate_container_adjustment(
        &self,
        req: &ValidateContainerAdjustmentRequest,
    ) -> HandlerResult<ValidateContainerAdjustmentResponse> {
        emit("ValidateContainerAdjustment", json!({"request": to_json(req)}));
        Ok(ValidateContainerAdjustmentResponse::new())
    }
}

fn connection_json(ev: &ConnectionEvent) -> Value {
    match ev {
        ConnectionEvent::Connected { connection } => json!({"state": "connected", "connection": connection}),
        ConnectionEvent::Registered { connection } => json!({"state": "registered", "connection": connection}),
        ConnectionEvent::Configured { connection, runtime_name, runtime_version, nri_version, events } => json!({
            "state": "configured", "connection": connection, "runtime": runtime_name,
            "runtime_version": runtime_version, "nri_version": nri_version, "events": events.to_string(),
        }),
        ConnectionEvent::Synchronized { connection, pods, containers } => {
            json!({"state": "synchronized", "connection": connection, "pods": pods, "containers": containers})
        }
        ConnectionEvent::ShutdownRequested { connection } => json!({"state": "shutdown", "connection": connection}),
        ConnectionEvent::Disconnected { connection, error } => {
            json!({"state": "disconnected", "connection": connection, "error": error})
        }
        ConnectionEvent::Stopping { connection, farewell } => {
            json!({"state": "stopping", "connection": connection, "farewell": farewell})
        }
        ConnectionEvent::Stopped { connection } => json!({"state": "stopped", "connection": connection}),
        ConnectionEvent::ConnectFailed { attempt, error, retry_in } => json!({
            "state": "connect-failed", "attempt": attempt, "error": error, "retry_in_ms": retry_in.as_millis() as u64,
        }),
        other => json!({"state": format!("{other:?}")}),
    }
}

fn usage() -> ! {
    eprintln!("usage: logger [--socket PATH] [--name NAME] [--index NN] [--all-events]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let (mut socket, mut name, mut index, mut events) =
        (DEFAULT_SOCKET_PATH.to_string(), "logger".to_string(), "99".to_string(), EventMask::LIFECYCLE);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = args.next().unwrap_or_else(|| usage()),
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--index" => index = args.next().unwrap_or_else(|| usage()),
            "--all-events" => events = EventMask::ALL,
            _ => usage(),
        }
    }

    let runner = match Runner::builder(name, index)
        .socket_path(socket)
        .on_connection_event(|ev| emit("connection", connection_json(ev)))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logger: {e}");
            std::process::exit(2);
        }
    };
    // Ctrl-C / SIGINT: a graceful stop (requests in flight answered, connection closed).
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = runner.run_until(Logger { events }, interrupted).await {
        eprintln!("logger: {e}");
        std::process::exit(1);
    }
}
