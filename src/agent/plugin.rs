//! The NRI plugin: container lifecycle → cgroup → policy in the kernel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use nri_plugin::api::{Container, ContainerState, ContainerUpdate, Event, PodSandbox};
use nri_plugin::{EventMask, HandlerResult, Plugin};

use super::metrics::Metrics;
use super::output::{rfc3339, Notice, Output, Refusal};
use super::registry::{ContainerInfo, Registry, Rootfs};
use crate::annotations::{self, FailurePolicy};
use crate::cgroup::{self, CgroupError, CgroupRoot};
use crate::enforcer::{Owner, PolicyStore};
use crate::install::{self, InstallError};
use crate::policy::{Mode, Policy};
use crate::provenance::{self, ProvenanceError};
use crate::rules::{self, NodePolicy, PolicySource};

/// Annotation containerd's CRI plugin sets with the image reference.
const CRI_IMAGE_ANNOTATION: &str = "io.kubernetes.cri.image-name";

/// Why a container's policy could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Bad `driftguard.dev/` annotation: always refuses the container.
    #[error("driftguard refused container {container:?} of pod {namespace}/{pod}: {source}")]
    Annotation {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// Cause.
        source: Box<annotations::AnnotationError>,
    },
    /// The cgroup could not be found or resolved.
    #[error("driftguard cannot find the cgroup of container {container:?} (cgroups_path {cgroups_path:?}): {source}")]
    Cgroup {
        /// Container.
        container: String,
        /// What the runtime gave.
        cgroups_path: String,
        /// Cause.
        source: CgroupError,
    },
    /// The container's root filesystem or exempt volumes could not be identified.
    #[error("driftguard cannot tell the image of container {container:?} (pid {pid}): {source}")]
    Provenance {
        /// Container.
        container: String,
        /// Its init process.
        pid: u32,
        /// Cause.
        source: ProvenanceError,
    },
    /// The kernel maps refused the policy.
    #[error("driftguard cannot install the policy of container {container:?}: {source}")]
    Install {
        /// Container.
        container: String,
        /// Cause.
        source: crate::enforcer::Error,
    },
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Mode off: nothing installed (any earlier policy removed).
    Off,
    /// Installed in this mode on this cgroup.
    Installed {
        /// Mode.
        mode: Mode,
        /// Cgroup id.
        cgroup_id: u64,
    },
    /// Could not install, failure policy `ignore`: the container runs unprotected.
    Unprotected,
}

/// The driftguard NRI plugin.
pub struct DriftguardPlugin {
    store: PolicyStore,
    registry: Arc<Registry>,
    cgroot: CgroupRoot,
    policy: NodePolicy,
    metrics: Arc<Metrics>,
    output: Arc<Output>,
    node: String,
}

impl DriftguardPlugin {
    /// Build the plugin.
    pub fn new(
        store: PolicyStore,
        registry: Arc<Registry>,
        cgroot: CgroupRoot,
        policy: NodePolicy,
        metrics: Arc<Metrics>,
        output: Arc<Output>,
        node: String,
    ) -> Self {
        DriftguardPlugin { store, registry, cgroot, policy, metrics, output, node }
    }

    /// The container's policy: the node policy (exclusions, rules, default) for its pod's
    /// namespace and labels, refined by the pod's and the container's annotations.
    fn resolve(&self, pod: &PodSandbox, ctr: &Container) -> Result<rules::Resolved, ApplyError> {
        let facts = rules::Pod { namespace: Some(pod.namespace.as_str()), labels: Some(&pod.labels) };
        self.policy.resolve(&facts, &pod.annotations, &ctr.name, &ctr.annotations).map_err(|source| {
            ApplyError::Annotation {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container: ctr.name.clone(),
                source: Box::new(source),
            }
        })
    }

    /// Compute and install the policy of a started (or running) container.
    pub fn apply(&self, pod: &PodSandbox, ctr: &Container) -> Result<Applied, ApplyError> {
        let r = self.resolve(pod, ctr)?;
        self.apply_resolved(pod, ctr, r)
    }

    /// [`DriftguardPlugin::apply`] of a policy already resolved.
    fn apply_resolved(&self, pod: &PodSandbox, ctr: &Container, r: rules::Resolved) -> Result<Applied, ApplyError> {
        let rules::Resolved { policy: resolved, source, .. } = r;
        if resolved.policy.mode == Mode::Off {
            // The agent knows the pod's labels, the OCI hook does not: an entry the hook made
            // from a label rule that may have applied goes too.
            self.forget_with(ctr, true);
            return Ok(Applied::Off);
        }
        match self.install(pod, ctr, &resolved.policy, &source) {
            Ok(cgroup_id) => Ok(Applied::Installed { mode: resolved.policy.mode, cgroup_id }),
            Err(e) => match resolved.failure_policy {
                FailurePolicy::Fail => Err(e),
                FailurePolicy::Ignore => {
                    tracing::warn!(error = %e, "failure-policy ignore: container runs without drift protection");
                    self.metrics.policy_errors.with_label_values(&["ignored"]).inc();
                    self.notice(
                        pod,
                        ctr,
                        &source.to_string(),
                        "unprotected",
                        &format!("{e}; failure-policy is ignore, so it runs unprotected"),
                    );
                    Ok(Applied::Unprotected)
                }
            },
        }
    }

    fn install(
        &self,
        pod: &PodSandbox,
        ctr: &Container,
        policy: &Policy,
        source: &PolicySource,
    ) -> Result<u64, ApplyError> {
        let cgroups_path = ctr.linux.cgroups_path.clone();
        let cg_err =
            |source| ApplyError::Cgroup { container: ctr.name.clone(), cgroups_path: cgroups_path.clone(), source };
        let path = self.cgroot.resolve_cgroups_path(&cgroups_path).map_err(cg_err)?;
        let previous = self.registry.get(&ctr.id);
        let known_rootfs_type = previous.as_ref().and_then(|p| match &p.rootfs {
            Rootfs::Overlay => Some(provenance::OVERLAY_FSTYPE),
            Rootfs::Other(t) => Some(t.as_str()),
            Rootfs::Unknown => None,
        });
        // At StartContainer the container's root is `/` of its init process.
        let c = install::Container { cgroup: &path, pid: ctr.pid, root: std::path::Path::new("/"), known_rootfs_type };
        let apply_err = |e| match e {
            InstallError::Cgroup { source, .. } => cg_err(source),
            InstallError::Provenance(source) => {
                ApplyError::Provenance { container: ctr.name.clone(), pid: ctr.pid, source }
            }
            InstallError::Enforcer(source) => ApplyError::Install { container: ctr.name.clone(), source },
        };
        let prepared = install::prepare(&self.store, &self.cgroot, &c, policy).map_err(apply_err)?;
        prepared.commit(&self.store, Owner::Agent, previous.as_ref().map(|p| p.cgroup_id)).map_err(apply_err)?;
        let (cgroup_id, prov, policy) = (prepared.cgroup_id, &prepared.provenance, &prepared.policy);
        let rootfs = match prov.rootfs_type.as_str() {
            "" => previous.as_ref().map(|p| p.rootfs.clone()).unwrap_or(Rootfs::Unknown),
            provenance::OVERLAY_FSTYPE => Rootfs::Overlay,
            other => Rootfs::Other(other.to_string()),
        };
        if let Rootfs::Other(fs) = &rootfs {
            if previous.as_ref().map(|p| &p.rootfs) != Some(&rootfs) {
                self.notice(
                    pod,
                    ctr,
                    &source.to_string(),
                    "rootfs_not_overlay",
                    &format!(
                        "root filesystem is {fs}, not overlayfs: the drift rule cannot tell image files from written ones \
                         for this container (non-image is off for it); deny lists and the fileless rule still apply"
                    ),
                );
            }
        }
        self.registry.insert(ContainerInfo {
            container_id: ctr.id.clone(),
            container: ctr.name.clone(),
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            pod_uid: pod.uid.clone(),
            image: image_of(ctr),
            cgroup_path: path.clone(),
            cgroup_id,
            mode: policy.mode,
            rootfs,
            policy_source: Some(source.clone()),
            workload: Some(workload_of(pod)),
        });
        tracing::debug!(
            namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, mode = %policy.mode,
            cgroup = %path.display(), cgroup_id, rootfs_dev = prov.rootfs_dev, policy_source = %source, "policy installed"
        );
        Ok(cgroup_id)
    }

    /// Remove a container's policy (stop/remove, or mode off).
    pub fn forget(&self, ctr: &Container) {
        self.forget_with(ctr, false)
    }

    /// [`DriftguardPlugin::forget`]; with `hook_too`, also an entry the OCI hook installed.
    fn forget_with(&self, ctr: &Container, hook_too: bool) {
        let cgroup_id = match self.registry.remove(&ctr.id) {
            Some(info) => Some(info.cgroup_id),
            None => {
                self.cgroot.resolve_cgroups_path(&ctr.linux.cgroups_path).ok().and_then(|p| cgroup::cgroup_id(&p).ok())
            }
        };
        if let Some(id) = cgroup_id {
            match self.store.owner(id) {
                // At stop and remove, never what an OCI hook installed for the same cgroup (its
                // poststop removes it).
                Ok(Some(Owner::OciHook)) if !hook_too => {}
                Ok(Some(_)) => {
                    if let Err(e) = self.store.remove(id) {
                        tracing::warn!(container = %ctr.name, error = %e, "removing policy failed");
                        self.metrics.policy_errors.with_label_values(&["remove"]).inc();
                    } else {
                        tracing::info!(container = %ctr.name, cgroup_id = id, "policy removed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(container = %ctr.name, error = %e, "reading policy failed"),
            }
        }
        self.metrics.set_containers(&self.registry.count_by_mode());
    }

    /// Bring the kernel maps in line with the runtime's view: install missing policies,
    /// drop stale agent-owned ones (including pinned leftovers from before a restart).
    pub fn reconcile(&self, pods: &[PodSandbox], containers: &[Container]) -> ReconcileReport {
        let pods: HashMap<&str, &PodSandbox> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut report = ReconcileReport::default();
        let mut keep: HashSet<u64> = HashSet::new();
        let mut keep_ids: HashSet<String> = HashSet::new();
        let empty = PodSandbox::default();
        // What this agent (before a restart) pinned: a running container never gets a weaker
        // policy than that, whatever the configuration says now (docs/configuration.md,
        // "When the rules change"). The OCI hook's entries are not compared: the hook guesses
        // where labels decide, and the agent corrects it.
        let pinned: HashMap<u64, Policy> = match self.store.list() {
            Ok(list) => list.into_iter().filter(|p| p.owner == Owner::Agent).map(|p| (p.cgroup_id, p.policy)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading pinned policies for reconciliation failed");
                HashMap::new()
            }
        };
        for ctr in containers {
            let state = ctr.state.enum_value_or_default();
            if state != ContainerState::CONTAINER_RUNNING && state != ContainerState::CONTAINER_PAUSED {
                continue;
            }
            let pod = pods.get(ctr.pod_sandbox_id.as_str()).copied().unwrap_or(&empty);
            let cgroup_id =
                self.cgroot.resolve_cgroups_path(&ctr.linux.cgroups_path).ok().and_then(|p| cgroup::cgroup_id(&p).ok());
            let old = cgroup_id.and_then(|id| pinned.get(&id).map(|p| (id, p)));
            let resolved = self.resolve(pod, ctr);
            if let Some((id, old)) = old {
                let kept = match &resolved {
                    Ok(r) => {
                        let was = annotations::ContainerPolicy {
                            policy: old.clone(),
                            failure_policy: r.policy.failure_policy,
                        };
                        rules::weakening(&was, &r.policy).map(|(_, what)| {
                            format!(
                                "the configuration now gives this running container a weaker policy ({}: {what}); \
                                 it keeps its pinned {} policy until it restarts",
                                r.source, old.mode
                            )
                        })
                    }
                    Err(e) => Some(format!(
                        "its policy no longer resolves ({e}); the running container keeps its pinned {} policy \
                         until it restarts",
                        old.mode
                    )),
                };
                if let Some(message) = kept {
                    // The kept policy's source: what the agent recorded when it installed it.
                    let kept_source =
                        self.registry.get(&ctr.id).and_then(|c| c.policy_source).map(String::from).unwrap_or_default();
                    self.notice(pod, ctr, &kept_source, "policy_kept", &message);
                    keep.insert(id);
                    keep_ids.insert(ctr.id.clone());
                    report.kept += 1;
                    continue;
                }
            }
            match resolved.and_then(|r| self.apply_resolved(pod, ctr, r)) {
                Ok(Applied::Installed { cgroup_id, .. }) => {
                    keep.insert(cgroup_id);
                    keep_ids.insert(ctr.id.clone());
                    report.installed += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    // A running container cannot be refused any more: report loudly.
                    tracing::error!(error = %e, "container already running without its policy");
                    self.metrics.policy_errors.with_label_values(&["synchronize"]).inc();
                    report.failed += 1;
                }
            }
        }
        for c in self.registry.snapshot() {
            if !keep_ids.contains(&c.container_id) {
                self.registry.remove(&c.container_id);
            }
        }
        match self.store.list() {
            Ok(list) => {
                for p in list {
                    if p.owner == Owner::Agent && !keep.contains(&p.cgroup_id) && self.store.remove(p.cgroup_id).is_ok()
                    {
                        report.removed_stale += 1;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing policies for reconciliation failed"),
        }
        self.metrics.set_containers(&self.registry.count_by_mode());
        report
    }

    fn notice(&self, pod: &PodSandbox, ctr: &Container, policy_source: &str, reason: &str, message: &str) {
        let n = Notice {
            event: "notice",
            time: rfc3339(std::time::SystemTime::now()),
            node: self.node.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: ctr.name.clone(),
            container_id: ctr.id.clone(),
            workload: workload_of(pod),
            policy_source: policy_source.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        tracing::warn!(namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, reason, "{message}");
        if let Ok(line) = serde_json::to_string(&n) {
            self.output.emit(&line);
        }
    }

    /// Run a handler body, timed. The bodies make blocking syscalls (stat, mountinfo reads, BPF
    /// map updates): on the agent's multi-threaded runtime they run under `block_in_place`, so
    /// the worker's other tasks (the NRI connection, metrics, the event pipeline) move to
    /// another worker instead of waiting behind them.
    fn timed<T>(&self, event: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let r = if multi_thread { tokio::task::block_in_place(f) } else { f() };
        self.metrics.handler_seconds.with_label_values(&[event]).observe(t.elapsed().as_secs_f64());
        r
    }
}

/// Result of [`DriftguardPlugin::reconcile`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Policies installed or refreshed.
    pub installed: usize,
    /// Containers whose policy could not be installed.
    pub failed: usize,
    /// Stale agent-owned entries removed.
    pub removed_stale: usize,
    /// Running containers that keep their pinned policy because the configuration now gives
    /// them a weaker one (or none that resolves).
    pub kept: usize,
}

/// The pod's workload, from its name and labels (src/agent/workload.rs).
fn workload_of(pod: &PodSandbox) -> super::workload::Workload {
    super::workload::of_pod(&pod.name, &pod.labels)
}

fn image_of(ctr: &Container) -> String {
    let name = &ctr.image.name;
    if !name.is_empty() {
        return name.clone();
    }
    ctr.annotations.get(CRI_IMAGE_ANNOTATION).cloned().unwrap_or_default()
}

impl DriftguardPlugin {
    /// Refuse a container: count it, log it, and emit an `admission` event, so that a refusal is
    /// seen by more than `kubectl describe`.
    fn refuse(&self, pod: &PodSandbox, ctr: &Container, e: ApplyError) -> nri_plugin::BoxError {
        let (reason, key, rule) = match &e {
            ApplyError::Annotation { source, .. } => source.offence(),
            ApplyError::Cgroup { .. } => ("cgroup", "", ""),
            ApplyError::Provenance { .. } => ("provenance", "", ""),
            ApplyError::Install { .. } => ("install", "", ""),
        };
        let (key, rule) = (key.to_string(), rule.to_string());
        self.metrics.refused.with_label_values(&[reason]).inc();
        tracing::warn!(namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, reason, error = %e, "refusing container");
        let r = Refusal {
            event: "admission",
            time: rfc3339(std::time::SystemTime::now()),
            node: self.node.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: ctr.name.clone(),
            container_id: ctr.id.clone(),
            image: image_of(ctr),
            workload: workload_of(pod),
            action: "refused",
            source: "agent",
            reason: reason.to_string(),
            key,
            rule,
            message: e.to_string(),
        };
        if let Ok(line) = serde_json::to_string(&r) {
            self.output.emit(&line);
        }
        Box::new(e)
    }
}

impl Plugin for DriftguardPlugin {
    fn events(&self) -> EventMask {
        // Exactly the events handled below (Configure and Synchronize come regardless). Runtimes
        // up to NRI v0.11 send StartContainer and RemoveContainer as StateChange for these bits.
        EventMask::of(&[
            Event::CREATE_CONTAINER,
            Event::START_CONTAINER,
            Event::STOP_CONTAINER,
            Event::REMOVE_CONTAINER,
        ])
    }

    fn on_deadline(&self, o: &nri_plugin::Overrun<'_>) -> nri_plugin::OverrunAnswer {
        super::overrun::answer(o, |pod, ctr| self.resolve(pod, ctr).map(|r| r.policy.policy.mode))
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> HandlerResult<Vec<ContainerUpdate>> {
        let report = self.timed("synchronize", || self.reconcile(&pods, &containers));
        tracing::info!(
            pods = pods.len(),
            containers = containers.len(),
            installed = report.installed,
            failed = report.failed,
            removed_stale = report.removed_stale,
            kept_stronger_pinned = report.kept,
            "synchronized with the runtime"
        );
        Ok(Vec::new())
    }

    async fn create_container(
        &self,
        pod: &PodSandbox,
        ctr: &Container,
    ) -> HandlerResult<nri_plugin::api::CreateContainerResponse> {
        // The cgroup does not exist yet; refuse bad annotations as early as possible.
        self.timed("create_container", || self.resolve(pod, ctr)).map_err(|e| self.refuse(pod, ctr, e))?;
        Ok(Default::default())
    }

    async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        // Task created (cgroup exists, init waiting), entrypoint not yet exec'd: install now.
        let applied = self.timed("start_container", || self.apply(pod, ctr)).map_err(|e| self.refuse(pod, ctr, e))?;
        if let Applied::Installed { mode, cgroup_id } = applied {
            tracing::info!(
                namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, %mode, cgroup_id, "policy installed"
            );
        }
        self.metrics.set_containers(&self.registry.count_by_mode());
        Ok(())
    }

    async fn stop_container(&self, _pod: &PodSandbox, ctr: &Container) -> HandlerResult<Vec<ContainerUpdate>> {
        self.timed("stop_container", || self.forget(ctr));
        Ok(Vec::new())
    }

    async fn remove_container(&self, _pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        self.timed("remove_container", || self.forget(ctr));
        Ok(())
    }
}
