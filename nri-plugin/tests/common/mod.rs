//! Shared helpers of the integration tests: a plugin that records every call, sample pods and
//! containers, and a runner wired to a test socket.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nri_plugin::api::*;
use nri_plugin::protobuf::MessageField;
use nri_plugin::{Backoff, ConnectionEvent, EventMask, HandlerResult, Plugin, Runner, RuntimeClient};
use tokio::sync::{mpsc, Mutex};

pub const WAIT: Duration = Duration::from_secs(10);

/// A handler invocation, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Configure(ConfigureRequest),
    Synchronize(Vec<PodSandbox>, Vec<Container>),
    Shutdown,
    RunPodSandbox(PodSandbox),
    UpdatePodSandbox(UpdatePodSandboxRequest),
    PostUpdatePodSandbox(PodSandbox),
    StopPodSandbox(PodSandbox),
    RemovePodSandbox(PodSandbox),
    CreateContainer(PodSandbox, Container),
    PostCreateContainer(PodSandbox, Container),
    StartContainer(PodSandbox, Container),
    PostStartContainer(PodSandbox, Container),
    UpdateContainer(PodSandbox, Container, Option<LinuxResources>),
    PostUpdateContainer(PodSandbox, Container),
    StopContainer(PodSandbox, Container),
    RemoveContainer(PodSandbox, Container),
    ValidateContainerAdjustment(ValidateContainerAdjustmentRequest),
}

/// Records every call; refuses containers named `refuse-me`; blocks StartContainer of pods named
/// `slow` until `release` is notified.
pub struct Recorder {
    pub calls: mpsc::UnboundedSender<Call>,
    pub release: Arc<tokio::sync::Notify>,
    pub sync_updates: usize,
}

impl Recorder {
    fn rec(&self, c: Call) {
        let _ = self.calls.send(c);
    }
}

impl Plugin for Recorder {
    fn events(&self) -> EventMask {
        EventMask::ALL
    }
    async fn configure(&self, req: &ConfigureRequest) -> HandlerResult<()> {
        self.rec(Call::Configure(req.clone()));
        Ok(())
    }
    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> HandlerResult<Vec<ContainerUpdate>> {
        let updates = containers
            .iter()
            .take(self.sync_updates)
            .map(|c| {
                let mut u = ContainerUpdate::new();
                u.container_id = c.id.clone();
                u.ignore_failure = true;
                u
            })
            .collect();
        self.rec(Call::Synchronize(pods, containers));
        Ok(updates)
    }
    async fn shutdown(&self) {
        self.rec(Call::Shutdown);
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        self.rec(Call::RunPodSandbox(pod.clone()));
        Ok(())
    }
    async fn update_pod_sandbox(
        &self,
        pod: &PodSandbox,
        overhead: Option<&LinuxResources>,
        resources: Option<&LinuxResources>,
    ) -> HandlerResult<()> {
        // Reassembled into the request, so tests compare it with what the runtime sent.
        let mut req = UpdatePodSandboxRequest::new();
        req.pod = MessageField::some(pod.clone());
        req.overhead_linux_resources = overhead.cloned().into();
        req.linux_resources = resources.cloned().into();
        self.rec(Call::UpdatePodSandbox(req));
        Ok(())
    }
    async fn post_update_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        self.rec(Call::PostUpdatePodSandbox(pod.clone()));
        Ok(())
    }
    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        self.rec(Call::StopPodSandbox(pod.clone()));
        Ok(())
    }
    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> HandlerResult<()> {
        self.rec(Call::RemovePodSandbox(pod.clone()));
        Ok(())
    }
    async fn create_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<CreateContainerResponse> {
        self.rec(Call::CreateContainer(pod.clone(), c.clone()));
        if c.name == "refuse-me" {
            return Err(format!("driftguard refuses container {}", c.name).into());
        }
        let mut resp = CreateContainerResponse::new();
        let mut adjust = ContainerAdjustment::new();
        adjust.annotations.insert("driftguard.io/seen".into(), c.id.clone());
        resp.adjust = MessageField::some(adjust);
        Ok(resp)
    }
    async fn post_create_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<()> {
        self.rec(Call::PostCreateContainer(pod.clone(), c.clone()));
        Ok(())
    }
    async fn start_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<()> {
        if pod.name == "slow" {
            self.release.notified().await;
        }
        self.rec(Call::StartContainer(pod.clone(), c.clone()));
        if c.name == "refuse-me" {
            return Err(format!("driftguard refuses container {}", c.name).into());
        }
        Ok(())
    }
    async fn post_start_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<()> {
        self.rec(Call::PostStartContainer(pod.clone(), c.clone()));
        Ok(())
    }
    async fn update_container(
        &self,
        pod: &PodSandbox,
        c: &Container,
        r: Option<&LinuxResources>,
    ) -> HandlerResult<UpdateContainerResponse> {
        self.rec(Call::UpdateContainer(pod.clone(), c.clone(), r.cloned()));
        Ok(UpdateContainerResponse::new())
    }
    async fn post_update_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<()> {
        self.rec(Call::PostUpdateContainer(pod.clone(), c.clone()));
        Ok(())
    }
    async fn stop_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<Vec<ContainerUpdate>> {
        self.rec(Call::StopContainer(pod.clone(), c.clone()));
        Ok(Vec::new())
    }
    async fn remove_container(&self, pod: &PodSandbox, c: &Container) -> HandlerResult<()> {
        self.rec(Call::RemoveContainer(pod.clone(), c.clone()));
        Ok(())
    }
    async fn validate_container_adjustment(
        &self,
        req: &ValidateContainerAdjustmentRequest,
    ) -> HandlerResult<ValidateContainerAdjustmentResponse> {
        self.rec(Call::ValidateContainerAdjustment(req.clone()));
        Ok(ValidateContainerAdjustmentResponse::new())
    }
}

pub fn pod(i: usize) -> PodSandbox {
    pod_named(i, &format!("pod-{i}"))
}

pub fn pod_named(i: usize, name: &str) -> PodSandbox {
    let mut p = PodSandbox::new();
    p.id = format!("{i:064x}");
    p.name = name.to_string();
    p.uid = format!("uid-{i}");
    p.namespace = "default".into();
    p.labels = HashMap::from([("app".to_string(), format!("web-{i}"))]);
    p.annotations = HashMap::from([
        ("io.kubernetes.cri.sandbox-id".to_string(), p.id.clone()),
        ("driftguard.io/policy".to_string(), "strict".to_string()),
    ]);
    p.runtime_handler = "runc".into();
    let mut linux = LinuxPodSandbox::new();
    linux.cgroup_parent = format!("/kubepods/besteffort/pod{}", p.uid);
    linux.cgroups_path = format!("/kubepods/besteffort/pod{}/{}", p.uid, p.id);
    p.linux = MessageField::some(linux);
    p.pid = 1000 + i as u32;
    p.ips = vec![format!("10.0.{}.{}", i / 250, i % 250)];
    p
}

pub fn container(i: usize, pod: &PodSandbox) -> Container {
    container_named(i, pod, &format!("ctr-{i}"))
}

pub fn container_named(i: usize, pod: &PodSandbox, name: &str) -> Container {
    let mut c = Container::new();
    c.id = format!("{:064x}", i + 1_000_000);
    c.pod_sandbox_id = pod.id.clone();
    c.name = name.to_string();
    c.state = ContainerState::CONTAINER_CREATED.into();
    c.labels = HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]);
    c.annotations = HashMap::from([
        ("io.kubernetes.cri.container-type".to_string(), "container".to_string()),
        ("driftguard.io/allow".to_string(), format!("/usr/bin/app-{i}")),
    ]);
    c.args = vec!["/usr/bin/app".into(), "--serve".into()];
    c.env = vec!["PATH=/usr/bin:/bin".into(), format!("INDEX={i}")];
    let mut m = Mount::new();
    m.destination = "/etc/hosts".into();
    m.type_ = "bind".into();
    m.source = "/var/lib/containerd/hosts".into();
    m.options = vec!["rbind".into(), "ro".into()];
    c.mounts = vec![m];
    let mut linux = LinuxContainer::new();
    linux.cgroups_path = format!("kubepods-besteffort-pod{}.slice:cri-containerd:{}", pod.uid, c.id);
    let mut res = LinuxResources::new();
    let mut mem = LinuxMemory::new();
    let mut limit = OptionalInt64::new();
    limit.value = 256 << 20;
    mem.limit = MessageField::some(limit);
    res.memory = MessageField::some(mem);
    linux.resources = MessageField::some(res);
    c.linux = MessageField::some(linux);
    c.pid = 2000 + i as u32;
    let mut img = Image::new();
    img.name = "registry.example/app:1".into();
    c.image = MessageField::some(img);
    c
}

/// A running plugin under test.
pub struct Harness {
    pub calls: mpsc::UnboundedReceiver<Call>,
    pub events: mpsc::UnboundedReceiver<ConnectionEvent>,
    pub release: Arc<tokio::sync::Notify>,
    pub client: RuntimeClient,
    pub task: tokio::task::JoinHandle<Result<(), nri_plugin::Error>>,
}

impl Harness {
    pub fn start(socket: &Path) -> Harness {
        Self::start_with(socket, 0)
    }

    pub fn start_with(socket: &Path, sync_updates: usize) -> Harness {
        init_tracing();
        let (ctx, calls) = mpsc::unbounded_channel();
        let (etx, events) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let runner = Runner::builder("driftguard", "10")
            .socket_path(socket)
            .use_env(false)
            .backoff(Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200), multiplier: 2.0 })
            .on_connection_event(move |ev| {
                let _ = etx.send(ev.clone());
            })
            .build()
            .expect("valid runner");
        let client = runner.runtime_client();
        let plugin = Recorder { calls: ctx, release: release.clone(), sync_updates };
        let task = tokio::spawn(runner.run(plugin));
        Harness { calls, events, release, client, task }
    }

    pub async fn next_call(&mut self) -> Call {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("timed out waiting for a plugin call")
            .expect("plugin gone")
    }

    /// Waits for a connection event matching `pred`, skipping others.
    pub async fn wait_event(&mut self, pred: impl Fn(&ConnectionEvent) -> bool) -> ConnectionEvent {
        let fut = async {
            loop {
                let ev = self.events.recv().await.expect("runner gone");
                if pred(&ev) {
                    return ev;
                }
            }
        };
        tokio::time::timeout(WAIT, fut).await.expect("timed out waiting for a connection event")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The call a lifecycle event must produce in the plugin.
pub fn expected_call(ev: &nri_plugin::testing::LifecycleEvent) -> Call {
    use nri_plugin::testing::LifecycleEvent as E;
    match ev.clone() {
        E::RunPodSandbox(p) => Call::RunPodSandbox(p),
        E::UpdatePodSandbox(r) => Call::UpdatePodSandbox(r),
        E::PostUpdatePodSandbox(p) => Call::PostUpdatePodSandbox(p),
        E::StopPodSandbox(p) => Call::StopPodSandbox(p),
        E::RemovePodSandbox(p) => Call::RemovePodSandbox(p),
        E::CreateContainer(p, c) => Call::CreateContainer(p, c),
        E::PostCreateContainer(p, c) => Call::PostCreateContainer(p, c),
        E::StartContainer(p, c) => Call::StartContainer(p, c),
        E::PostStartContainer(p, c) => Call::PostStartContainer(p, c),
        E::UpdateContainer(p, c, r) => Call::UpdateContainer(p, c, r),
        E::PostUpdateContainer(p, c) => Call::PostUpdateContainer(p, c),
        E::StopContainer(p, c) => Call::StopContainer(p, c),
        E::RemoveContainer(p, c) => Call::RemoveContainer(p, c),
        E::ValidateContainerAdjustment(r) => Call::ValidateContainerAdjustment(r),
    }
}

pub type Shared<T> = Arc<Mutex<T>>;

/// Logs to the test output when RUST_LOG is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The example `name`, built as a program at `<target>/<profile>/examples/<name>`, next to the
/// test's `deps/` directory. A targeted `cargo test --test <name>_example` builds it that way;
/// `cargo test --all-targets` builds examples only as test harnesses, so tests/run.sh runs
/// `cargo build --workspace --examples` first. A missing binary is a failure, not a skip.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("test binary in <target>/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} not built as a program: run `cargo build -p nri-plugin --examples` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// The example `name` ([`example_binary`]) connecting to `socket`: none of the runtime's
/// `NRI_PLUGIN_*` variables (the flags decide), stdout piped, killed on drop. Add the example's
/// own flags before spawning.
pub fn example_command(name: &str, socket: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(example_binary(name));
    cmd.arg("--socket")
        .arg(socket)
        .env_remove("NRI_PLUGIN_SOCKET")
        .env_remove("NRI_PLUGIN_NAME")
        .env_remove("NRI_PLUGIN_IDX")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}
