//! NRI adjuster: adds environment variables and bind mounts to every container as it is created.
//!
//! ```text
//! sudo cargo run -p nri-plugin --example adjuster -- \
//!     --env GREETING=hello --mount /srv/shared:/shared:ro [--namespace NS] \
//!     [--socket /var/run/nri/nri.sock] [--name adjuster] [--index 90]
//! ```
//!
//! `--env NAME=VALUE` and `--mount HOST_PATH:CONTAINER_PATH[:ro]` may be repeated. With
//! `--namespace NS` only containers of pods in Kubernetes namespace `NS` are adjusted. The plugin
//! subscribes to CreateContainer only and answers it with an adjustment built by
//! [`AdjustmentBuilder`]; containerd applies it to the container's OCI spec before the container
//! exists.
//!
//! Output, one line per fact on stdout: `synchronized pods=N containers=M` once the runtime has
//! registered, configured and synchronized the plugin (from then on every new container is
//! adjusted), and `adjusted <namespace>/<pod>/<container> id=<id>` per adjusted container.
//! Errors go to stderr.

use nri_plugin::api::{Container, CreateContainerResponse, Event, PodSandbox};
use nri_plugin::{AdjustmentBuilder, ConnectionEvent, EventMask, HandlerResult, Plugin, Runner, DEFAULT_SOCKET_PATH};

/// What to add to each container.
#[derive(Debug, Default)]
struct Adjuster {
    env: Vec<(String, String)>,
    /// Host path, container path, read-only.
    mounts: Vec<(String, String, bool)>,
    namespace: Option<String>,
}

impl Adjuster {
    fn adjustment(&self) -> AdjustmentBuilder {
        let mut adj = AdjustmentBuilder::new();
        for (name, value) in &self.env {
            adj = adj.add_env(name, value);
        }
        for (source, destination, read_only) in &self.mounts {
            let options: &[&str] = if *read_only { &["ro"] } else { &["rw"] };
            adj = adj.add_bind_mount(source, destination, options);
        }
        adj
    }
}

impl Plugin for Adjuster {
    fn events(&self) -> EventMask {
        EventMask::of(&[Event::CREATE_CONTAINER])
    }

    async fn create_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<CreateContainerResponse> {
        if self.namespace.as_ref().is_some_and(|ns| *ns != pod.namespace) {
            return Ok(CreateContainerResponse::new());
        }
        println!("adjusted {}/{}/{} id={}", pod.namespace, pod.name, ctr.name, ctr.id);
        Ok(self.adjustment().into_response())
    }
}

const USAGE: &str = "usage: adjuster [--env NAME=VALUE]... [--mount HOST_PATH:CONTAINER_PATH[:ro]]... \
                     [--namespace NS] [--socket PATH] [--name NAME] [--index NN]";

fn parse_args(args: impl Iterator<Item = String>) -> Result<(Adjuster, String, String, String), String> {
    let mut adjuster = Adjuster::default();
    let (mut socket, mut name, mut index) = (DEFAULT_SOCKET_PATH.to_string(), "adjuster".to_string(), "90".to_string());
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--env" => {
                let v = value()?;
                let (n, val) = v.split_once('=').ok_or_else(|| format!("--env {v:?}: expected NAME=VALUE"))?;
                if n.is_empty() {
                    return Err(format!("--env {v:?}: empty name"));
                }
                adjuster.env.push((n.to_string(), val.to_string()));
            }
            "--mount" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(':').collect();
                let (src, dst, ro) = match parts.as_slice() {
                    [s, d] => (*s, *d, false),
                    [s, d, "ro"] => (*s, *d, true),
                    [s, d, "rw"] => (*s, *d, false),
                    _ => return Err(format!("--mount {v:?}: expected HOST_PATH:CONTAINER_PATH[:ro]")),
                };
                if !src.starts_with('/') || !dst.starts_with('/') {
                    return Err(format!("--mount {v:?}: both paths must be absolute"));
                }
                adjuster.mounts.push((src.to_string(), dst.to_string(), ro));
            }
            "--namespace" => adjuster.namespace = Some(value()?),
            "--socket" => socket = value()?,
            "--name" => name = value()?,
            "--index" => index = value()?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((adjuster, socket, name, index))
}

fn fail(msg: &str, code: i32) -> ! {
    if !msg.is_empty() {
        eprintln!("adjuster: {msg}");
    }
    eprintln!("{USAGE}");
    std::process::exit(code)
}

#[tokio::main]
async fn main() {
    let (adjuster, socket, name, index) = parse_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(&e, 2));
    let runner = Runner::builder(name, index)
        .socket_path(socket)
        .on_connection_event(|ev| match ev {
            ConnectionEvent::Synchronized { pods, containers, .. } => {
                println!("synchronized pods={pods} containers={containers}")
            }
            ConnectionEvent::Disconnected { error: Some(e), .. } => eprintln!("adjuster: disconnected: {e}"),
            _ => {}
        })
        .build()
        .unwrap_or_else(|e| fail(&e.to_string(), 2));
    // Ctrl-C / SIGINT: a graceful stop (requests in flight answered, connection closed).
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = runner.run_until(adjuster, interrupted).await {
        eprintln!("adjuster: {e}");
        std::process::exit(1);
    }
}
