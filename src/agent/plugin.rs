//! The NRI plugin: container lifecycle → cgroup → policy in the kernel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use nri_plugin::api::{Container, ContainerState, ContainerUpdate, Event, PodSandbox};
use nri_plugin::{EventMask, HandlerResult, Plugin};

use super::metrics::Metrics;
use super::output::{rfc3339, Notice, Output};
use super::registry::{ContainerInfo, Registry, Rootfs};
use crate::annotations::{self, Defaults, FailurePolicy};
use crate::cgroup::{self, CgroupError, CgroupRoot};
use crate::enforcer::{Owner, PolicyStore};
use crate::policy::Mode;

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
    defaults: Defaults,
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
        defaults: Defaults,
        metrics: Arc<Metrics>,
        output: Arc<Output>,
        node: String,
    ) -> Self {
        DriftguardPlugin { store, registry, cgroot, defaults, metrics, output, node }
    }

    fn resolve(&self, pod: &PodSandbox, ctr: &Container) -> Result<annotations::ContainerPolicy, ApplyError> {
        annotations::resolve(&self.defaults, &pod.annotations, &ctr.name, &ctr.annotations).map_err(|source| {
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
        let resolved = self.resolve(pod, ctr)?;
        if resolved.policy.mode == Mode::Off {
            self.forget(ctr);
            return Ok(Applied::Off);
        }
        match self.install(pod, ctr, &resolved.policy) {
            Ok(cgroup_id) => Ok(Applied::Installed { mode: resolved.policy.mode, cgroup_id }),
            Err(e) => match resolved.failure_policy {
                FailurePolicy::Fail => Err(e),
                FailurePolicy::Ignore => {
                    tracing::warn!(error = %e, "failure-policy ignore: container runs without drift protection");
                    self.metrics.policy_errors.with_label_values(&["ignored"]).inc();
                    self.notice(
                        pod,
                        ctr,
                        "unprotected",
                        &format!("{e}; failure-policy is ignore, so it runs unprotected"),
                    );
                    Ok(Applied::Unprotected)
                }
            },
        }
    }

    fn install(&self, pod: &PodSandbox, ctr: &Container, policy: &crate::policy::Policy) -> Result<u64, ApplyError> {
        let cgroups_path = ctr.linux.cgroups_path.clone();
        let cg_err =
            |source| ApplyError::Cgroup { container: ctr.name.clone(), cgroups_path: cgroups_path.clone(), source };
        let path = self.cgroot.resolve_cgroups_path(&cgroups_path).map_err(cg_err)?;
        let cgroup_id = cgroup::cgroup_id(&path).map_err(cg_err)?;
        let level = self.cgroot.level(&path).map_err(cg_err)?;
        self.store
            .set_owned(cgroup_id, level, policy, Owner::Agent)
            .map_err(|source| ApplyError::Install { container: ctr.name.clone(), source })?;
        let previous = self.registry.get(&ctr.id);
        // Known from before (resync, restart): don't re-read /proc/<pid>/mountinfo.
        let rootfs = match &previous {
            Some(old) if old.cgroup_id == cgroup_id && old.rootfs != Rootfs::Unknown => old.rootfs.clone(),
            _ => {
                let r = rootfs_of(ctr.pid);
                if let Rootfs::Other(fs) = &r {
                    self.notice(
                        pod,
                        ctr,
                        "rootfs_not_overlay",
                        &format!(
                            "root filesystem is {fs}, not overlayfs: the drift rule cannot tell image files from written ones \
                             for this container; deny/allow lists and the fileless rule still apply"
                        ),
                    );
                }
                r
            }
        };
        // A container id re-started on a new cgroup leaves the old entry behind: drop it.
        if let Some(old) = previous {
            if old.cgroup_id != cgroup_id {
                let _ = self.store.remove(old.cgroup_id);
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
        });
        tracing::debug!(
            namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, mode = %policy.mode,
            cgroup = %path.display(), cgroup_id, "policy installed"
        );
        Ok(cgroup_id)
    }

    /// Remove a container's policy (stop/remove, or mode off).
    pub fn forget(&self, ctr: &Container) {
        let cgroup_id = match self.registry.remove(&ctr.id) {
            Some(info) => Some(info.cgroup_id),
            None => {
                self.cgroot.resolve_cgroups_path(&ctr.linux.cgroups_path).ok().and_then(|p| cgroup::cgroup_id(&p).ok())
            }
        };
        if let Some(id) = cgroup_id {
            match self.store.owner(id) {
                // Never remove what an OCI hook installed for the same cgroup.
                Ok(Some(Owner::OciHook)) => {}
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
        for ctr in containers {
            let state = ctr.state.enum_value_or_default();
            if state != ContainerState::CONTAINER_RUNNING && state != ContainerState::CONTAINER_PAUSED {
                continue;
            }
            let pod = pods.get(ctr.pod_sandbox_id.as_str()).copied().unwrap_or(&empty);
            match self.apply(pod, ctr) {
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

    fn notice(&self, pod: &PodSandbox, ctr: &Container, reason: &str, message: &str) {
        let n = Notice {
            event: "notice",
            time: rfc3339(std::time::SystemTime::now()),
            node: self.node.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: ctr.name.clone(),
            container_id: ctr.id.clone(),
            reason: reason.to_string(),
            message: message.to_string(),
        };
        tracing::warn!(namespace = %pod.namespace, pod = %pod.name, container = %ctr.name, reason, "{message}");
        if let Ok(line) = serde_json::to_string(&n) {
            self.output.emit(&line);
        }
    }

    fn timed<T>(&self, event: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
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
}

fn image_of(ctr: &Container) -> String {
    let name = &ctr.image.name;
    if !name.is_empty() {
        return name.clone();
    }
    ctr.annotations.get(CRI_IMAGE_ANNOTATION).cloned().unwrap_or_default()
}

/// The filesystem type of a process's root.
///
/// One `statfs(2)` of `/proc/<pid>/root` (the process's own root, so chroot and pivot_root
/// both count). That needs ptrace access to the process, which the agent lacks when it runs
/// with the capabilities the systemd unit and the DaemonSet grant (no `CAP_SYS_PTRACE`); then,
/// and to name a filesystem whose magic number is not in [`fs_name`], the last mount on `/` in
/// `/proc/<pid>/mountinfo` (readable without ptrace access) decides. Reading mountinfo for
/// every container was the largest cost of a Synchronize of thousands of containers.
pub fn rootfs_of(pid: u32) -> Rootfs {
    if pid == 0 {
        return Rootfs::Unknown;
    }
    let Ok(path) = std::ffi::CString::new(format!("/proc/{pid}/root")) else {
        return Rootfs::Unknown;
    };
    // SAFETY: statfs writes into a zeroed, properly sized struct; path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let magic = if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 {
        #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, u32/i32 elsewhere
        let m = st.f_type as u64 & 0xffff_ffff;
        if m == OVERLAYFS_SUPER_MAGIC {
            return Rootfs::Overlay;
        }
        if let Some(name) = fs_name(m) {
            return Rootfs::Other(name.to_string());
        }
        Some(m)
    } else {
        None // no ptrace access, or the process is gone: mountinfo tells which
    };
    match std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok().as_deref().and_then(root_fstype) {
        Some(t) if t == "overlay" => Rootfs::Overlay,
        Some(t) => Rootfs::Other(t),
        None => magic.map(|m| Rootfs::Other(format!("{m:#x}"))).unwrap_or(Rootfs::Unknown),
    }
}

const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// Names of the filesystems a container root is commonly on (statfs magic numbers, from
/// `include/uapi/linux/magic.h`).
pub fn fs_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x794c_7630 => "overlay",
        0xef53 => "ext4", // ext2/3/4 share the magic
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x2fc1_2fc1 => "zfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x7371_7368 => "squashfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0xf15f => "ecryptfs",
        0x0187 => "autofs",
        _ => return None,
    })
}

/// fstype of the last mount on "/" in a mountinfo text.
pub fn root_fstype(mountinfo: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (mount_point == "/").then(|| post.split_whitespace().next().map(str::to_string))?
        })
        .next_back()
}

fn refuse(metrics: &Metrics, e: ApplyError) -> nri_plugin::BoxError {
    let reason = match &e {
        ApplyError::Annotation { .. } => "annotation",
        ApplyError::Cgroup { .. } => "cgroup",
        ApplyError::Install { .. } => "install",
    };
    metrics.refused.with_label_values(&[reason]).inc();
    tracing::warn!(error = %e, "refusing container");
    Box::new(e)
}

#[nri_plugin::async_trait]
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
        super::overrun::answer(o, |pod, ctr| self.resolve(pod, ctr).map(|r| r.policy.mode))
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
        self.timed("create_container", || self.resolve(pod, ctr)).map_err(|e| refuse(&self.metrics, e))?;
        Ok(Default::default())
    }

    async fn start_container(&self, pod: &PodSandbox, ctr: &Container) -> HandlerResult<()> {
        // Task created (cgroup exists, init waiting), entrypoint not yet exec'd: install now.
        let applied = self.timed("start_container", || self.apply(pod, ctr)).map_err(|e| refuse(&self.metrics, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_fstype_takes_the_last_root_mount() {
        let mi = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                  30 22 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n\
                  31 30 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(root_fstype(mi).as_deref(), Some("overlay"));
        assert_eq!(root_fstype("31 30 0:5 / /proc rw - proc proc rw\n"), None);
        assert_eq!(rootfs_of(0), Rootfs::Unknown);
        assert_eq!(rootfs_of(u32::MAX), Rootfs::Unknown, "no such process");
        assert_eq!(fs_name(0x794c_7630), Some("overlay"));
        assert_eq!(fs_name(0xef53), Some("ext4"));
        assert_eq!(fs_name(1), None);
    }
}
