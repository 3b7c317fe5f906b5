//! Builders for the changes a plugin asks the runtime for: [`AdjustmentBuilder`] for a container
//! being created (the `adjust` of a `CreateContainerResponse`) and [`UpdateBuilder`] for the
//! resources of an existing container (the `update` lists of `CreateContainer`,
//! `UpdateContainer`, `StopContainer` and `Synchronize` answers, and
//! [`RuntimeClient::update_containers`](crate::RuntimeClient::update_containers)).
//!
//! They fill the generated messages' optional sub-messages (`MessageField`s and the
//! `Optional*` wrappers) for you, and encode removals the way NRI expects them: as an entry
//! whose key is the removed key prefixed with `-` (the runtime applies removals before
//! additions, so `remove_env("A")` then `add_env("A", ..)` replaces `A`).
//!
//! ```
//! use nri_plugin::adjust::{AdjustmentBuilder, HookStage, UpdateBuilder};
//!
//! let adjustment = AdjustmentBuilder::new()
//!     .add_env("GREETING", "hello")
//!     .remove_env("DEBUG")
//!     .add_bind_mount("/srv/config", "/etc/app", &["ro"])
//!     .add_annotation("example.com/adjusted", "true")
//!     .add_hook(HookStage::Poststop, nri_plugin::adjust::hook("/usr/bin/cleanup", ["cleanup"]))
//!     .set_memory_limit(512 << 20)
//!     .build();
//! assert_eq!(adjustment.env[0].key, "GREETING");
//! assert_eq!(adjustment.env[1].key, "-DEBUG");
//! assert_eq!(adjustment.linux.resources.memory.limit.value, 512 << 20);
//!
//! let update = UpdateBuilder::new("4f3c…").set_cpu_shares(512).ignore_failure(true).build();
//! assert_eq!(update.linux.resources.cpu.shares.value, 512);
//! ```

use protobuf::MessageField;

use crate::api::{
    CDIDevice, ContainerAdjustment, ContainerEviction, ContainerUpdate, CreateContainerResponse, Hook, Hooks,
    HugepageLimit, KeyValue, LinuxContainerAdjustment, LinuxContainerUpdate, LinuxDevice, LinuxNamespace, LinuxPids,
    LinuxResources, Mount, OptionalBool, OptionalInt, OptionalInt64, OptionalString, OptionalUInt64, POSIXRlimit,
};

/// Prefix that marks an entry of an adjustment as a removal.
pub const REMOVAL_PREFIX: char = '-';

fn removal(key: &str) -> String {
    format!("{REMOVAL_PREFIX}{key}")
}

/// The sub-message behind `field`, created (all defaults) if unset.
fn sub<M: protobuf::Message>(field: &mut MessageField<M>) -> &mut M {
    field.mut_or_insert_default()
}

fn some<M: protobuf::Message>(m: M) -> MessageField<M> {
    MessageField::some(m)
}

fn opt_i64(v: i64) -> MessageField<OptionalInt64> {
    let mut o = OptionalInt64::new();
    o.value = v;
    some(o)
}

fn opt_u64(v: u64) -> MessageField<OptionalUInt64> {
    let mut o = OptionalUInt64::new();
    o.value = v;
    some(o)
}

fn opt_string(v: String) -> MessageField<OptionalString> {
    let mut o = OptionalString::new();
    o.value = v;
    some(o)
}

/// An OCI hook running `path` with `args` (`args[0]` is the program name, as in OCI).
///
/// Set `env` and `timeout` on the returned [`Hook`] if needed.
pub fn hook<I, S>(path: impl Into<String>, args: I) -> Hook
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut h = Hook::new();
    h.path = path.into();
    h.args = args.into_iter().map(Into::into).collect();
    h
}

/// An eviction request for the container `container_id`, for the `evict` lists of
/// `CreateContainerResponse` and `UpdateContainerResponse` and
/// [`RuntimeClient::update_containers`](crate::RuntimeClient::update_containers).
pub fn eviction(container_id: impl Into<String>, reason: impl Into<String>) -> ContainerEviction {
    let mut e = ContainerEviction::new();
    e.container_id = container_id.into();
    e.reason = reason.into();
    e
}

/// The OCI hook stages ([`Hooks`]' lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HookStage {
    /// `prestart` (deprecated by OCI in favour of the three `create*`/`start*` stages).
    Prestart,
    /// `createRuntime`: in the runtime's namespaces, once the container's namespaces exist.
    CreateRuntime,
    /// `createContainer`: in the container's namespaces, before `pivot_root`.
    CreateContainer,
    /// `startContainer`: in the container, right before its entrypoint.
    StartContainer,
    /// `poststart`: after the entrypoint started.
    Poststart,
    /// `poststop`: after the container was deleted.
    Poststop,
}

impl HookStage {
    fn list(self, hooks: &mut Hooks) -> &mut Vec<Hook> {
        match self {
            HookStage::Prestart => &mut hooks.prestart,
            HookStage::CreateRuntime => &mut hooks.create_runtime,
            HookStage::CreateContainer => &mut hooks.create_container,
            HookStage::StartContainer => &mut hooks.start_container,
            HookStage::Poststart => &mut hooks.poststart,
            HookStage::Poststop => &mut hooks.poststop,
        }
    }
}

/// Resource setters shared by both builders (each has a `resources()` accessor that creates the
/// `LinuxResources` on first use).
macro_rules! resource_setters {
    () => {
        /// Sets the memory limit, in bytes.
        pub fn set_memory_limit(mut self, bytes: i64) -> Self {
            sub(&mut self.resources().memory).limit = opt_i64(bytes);
            self
        }

        /// Sets the memory reservation (soft limit), in bytes.
        pub fn set_memory_reservation(mut self, bytes: i64) -> Self {
            sub(&mut self.resources().memory).reservation = opt_i64(bytes);
            self
        }

        /// Sets the memory plus swap limit, in bytes.
        pub fn set_memory_swap(mut self, bytes: i64) -> Self {
            sub(&mut self.resources().memory).swap = opt_i64(bytes);
            self
        }

        /// Sets the swappiness, 0 to 100 (cgroup v1).
        pub fn set_memory_swappiness(mut self, swappiness: u64) -> Self {
            sub(&mut self.resources().memory).swappiness = opt_u64(swappiness);
            self
        }

        /// Disables (or enables) the OOM killer (cgroup v1).
        pub fn set_memory_disable_oom_killer(mut self, disable: bool) -> Self {
            let mut b = OptionalBool::new();
            b.value = disable;
            sub(&mut self.resources().memory).disable_oom_killer = some(b);
            self
        }

        /// Sets the relative CPU weight (cgroup v1 shares; the runtime converts it on cgroup v2).
        pub fn set_cpu_shares(mut self, shares: u64) -> Self {
            sub(&mut self.resources().cpu).shares = opt_u64(shares);
            self
        }

        /// Sets the CPU quota per period, in microseconds (-1: no limit).
        pub fn set_cpu_quota(mut self, quota_us: i64) -> Self {
            sub(&mut self.resources().cpu).quota = opt_i64(quota_us);
            self
        }

        /// Sets the CPU quota period, in microseconds.
        pub fn set_cpu_period(mut self, period_us: u64) -> Self {
            sub(&mut self.resources().cpu).period = opt_u64(period_us);
            self
        }

        /// Sets the realtime runtime per period, in microseconds.
        pub fn set_cpu_realtime_runtime(mut self, runtime_us: i64) -> Self {
            sub(&mut self.resources().cpu).realtime_runtime = opt_i64(runtime_us);
            self
        }

        /// Sets the realtime period, in microseconds.
        pub fn set_cpu_realtime_period(mut self, period_us: u64) -> Self {
            sub(&mut self.resources().cpu).realtime_period = opt_u64(period_us);
            self
        }

        /// Sets the allowed CPUs, in cpuset list format (`"0-3,8"`).
        pub fn set_cpuset_cpus(mut self, cpus: impl Into<String>) -> Self {
            sub(&mut self.resources().cpu).cpus = cpus.into();
            self
        }

        /// Sets the allowed memory nodes, in cpuset list format (`"0"`).
        pub fn set_cpuset_mems(mut self, mems: impl Into<String>) -> Self {
            sub(&mut self.resources().cpu).mems = mems.into();
            self
        }

        /// Sets the maximum number of tasks.
        pub fn set_pids_limit(mut self, limit: i64) -> Self {
            let mut p = LinuxPids::new();
            p.limit = limit;
            self.resources().pids = some(p);
            self
        }

        /// Adds a huge page limit: `limit` bytes of pages of `page_size` (such as `"2MB"`).
        pub fn add_hugepage_limit(mut self, page_size: impl Into<String>, limit: u64) -> Self {
            let mut h = HugepageLimit::new();
            h.page_size = page_size.into();
            h.limit = limit;
            self.resources().hugepage_limits.push(h);
            self
        }

        /// Sets a cgroup v2 file to write, such as `("memory.high", "1G")`.
        pub fn set_unified(mut self, file: impl Into<String>, value: impl Into<String>) -> Self {
            self.resources().unified.insert(file.into(), value.into());
            self
        }

        /// Sets the block I/O class (as configured in the runtime's goresctrl setup).
        pub fn set_blockio_class(mut self, class: impl Into<String>) -> Self {
            self.resources().blockio_class = opt_string(class.into());
            self
        }

        /// Sets the RDT class (as configured in the runtime's goresctrl setup).
        pub fn set_rdt_class(mut self, class: impl Into<String>) -> Self {
            self.resources().rdt_class = opt_string(class.into());
            self
        }
    };
}

/// Builds the [`ContainerAdjustment`] a plugin returns from
/// [`Plugin::create_container`](crate::Plugin::create_container).
///
/// Every method consumes and returns the builder; finish with [`build`](Self::build) or
/// [`into_response`](Self::into_response):
///
/// ```
/// use nri_plugin::api::{Container, CreateContainerResponse, PodSandbox};
/// use nri_plugin::{AdjustmentBuilder, HandlerResult, Plugin};
///
/// struct AddTraceId;
///
/// impl Plugin for AddTraceId {
///     async fn create_container(&self, _pod: &PodSandbox, ctr: &Container) -> HandlerResult<CreateContainerResponse> {
///         Ok(AdjustmentBuilder::new().add_env("TRACE_ID", &ctr.id).into_response())
///     }
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdjustmentBuilder {
    adj: ContainerAdjustment,
}

impl AdjustmentBuilder {
    /// An adjustment that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn linux(&mut self) -> &mut LinuxContainerAdjustment {
        sub(&mut self.adj.linux)
    }

    fn resources(&mut self) -> &mut LinuxResources {
        sub(&mut self.linux().resources)
    }

    /// Adds or replaces the annotation `key`.
    pub fn add_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.adj.annotations.insert(key.into(), value.into());
        self
    }

    /// Removes the annotation `key`.
    pub fn remove_annotation(mut self, key: &str) -> Self {
        self.adj.annotations.insert(removal(key), String::new());
        self
    }

    /// Sets the environment variable `name` to `value` (replacing an existing one).
    pub fn add_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut kv = KeyValue::new();
        kv.key = name.into();
        kv.value = value.into();
        self.adj.env.push(kv);
        self
    }

    /// Removes the environment variable `name`.
    pub fn remove_env(mut self, name: &str) -> Self {
        let mut kv = KeyValue::new();
        kv.key = removal(name);
        self.adj.env.push(kv);
        self
    }

    /// Adds a mount (OCI terms: `destination` in the container, `type`, `source`, `options`).
    pub fn add_mount(mut self, mount: Mount) -> Self {
        self.adj.mounts.push(mount);
        self
    }

    /// Adds a bind mount of the host path `source` at `destination` in the container, with
    /// `rbind` and the extra `options` (such as `"ro"`, `"nosuid"`, `"nodev"`).
    pub fn add_bind_mount(
        mut self,
        source: impl Into<String>,
        destination: impl Into<String>,
        options: &[&str],
    ) -> Self {
        let mut m = Mount::new();
        m.source = source.into();
        m.destination = destination.into();
        m.type_ = "bind".to_string();
        m.options = std::iter::once("rbind").chain(options.iter().copied()).map(str::to_string).collect();
        self.adj.mounts.push(m);
        self
    }

    /// Removes the mount at `destination` in the container.
    pub fn remove_mount(mut self, destination: &str) -> Self {
        let mut m = Mount::new();
        m.destination = removal(destination);
        self.adj.mounts.push(m);
        self
    }

    /// Replaces the container's entrypoint and arguments (an empty list leaves them alone).
    pub fn set_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.adj.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Appends an OCI hook to `stage` (see [`hook`]).
    pub fn add_hook(mut self, stage: HookStage, hook: Hook) -> Self {
        stage.list(sub(&mut self.adj.hooks)).push(hook);
        self
    }

    /// Adds a device node.
    pub fn add_device(mut self, device: LinuxDevice) -> Self {
        self.linux().devices.push(device);
        self
    }

    /// Removes the device node at `path` in the container.
    pub fn remove_device(mut self, path: &str) -> Self {
        let mut d = LinuxDevice::new();
        d.path = removal(path);
        self.linux().devices.push(d);
        self
    }

    /// Injects the CDI device `name` (`vendor.com/class=name`).
    pub fn add_cdi_device(mut self, name: impl Into<String>) -> Self {
        let mut d = CDIDevice::new();
        d.name = name.into();
        self.adj.CDI_devices.push(d);
        self
    }

    /// Sets a POSIX resource limit, such as `("RLIMIT_NOFILE", 4096, 1024)`.
    pub fn add_rlimit(mut self, kind: impl Into<String>, hard: u64, soft: u64) -> Self {
        let mut r = POSIXRlimit::new();
        r.type_ = kind.into();
        r.hard = hard;
        r.soft = soft;
        self.adj.rlimits.push(r);
        self
    }

    /// Sets the container's cgroup path.
    pub fn set_cgroups_path(mut self, path: impl Into<String>) -> Self {
        self.linux().cgroups_path = path.into();
        self
    }

    /// Sets the container's OOM score adjustment.
    pub fn set_oom_score_adj(mut self, adj: i64) -> Self {
        let mut o = OptionalInt::new();
        o.value = adj;
        self.linux().oom_score_adj = some(o);
        self
    }

    /// Sets the namespaced sysctl `key`.
    pub fn add_sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.linux().sysctl.insert(key.into(), value.into());
        self
    }

    /// Removes the sysctl `key`.
    pub fn remove_sysctl(mut self, key: &str) -> Self {
        self.linux().sysctl.insert(removal(key), String::new());
        self
    }

    /// Adds or replaces the namespace of kind `kind` (`"network"`, `"ipc"`, ...): joins the one
    /// at `path`, or a new one when `path` is empty.
    pub fn add_namespace(mut self, kind: impl Into<String>, path: impl Into<String>) -> Self {
        let mut ns = LinuxNamespace::new();
        ns.type_ = kind.into();
        ns.path = path.into();
        self.linux().namespaces.push(ns);
        self
    }

    /// Removes the namespace of kind `kind` (the container then shares the runtime's).
    pub fn remove_namespace(mut self, kind: &str) -> Self {
        let mut ns = LinuxNamespace::new();
        ns.type_ = removal(kind);
        self.linux().namespaces.push(ns);
        self
    }

    resource_setters!();

    /// Whether the adjustment changes nothing.
    pub fn is_empty(&self) -> bool {
        self.adj == ContainerAdjustment::new()
    }

    /// The adjustment.
    pub fn build(self) -> ContainerAdjustment {
        self.adj
    }

    /// A `CreateContainer` answer carrying the adjustment (and no updates or evictions).
    pub fn into_response(self) -> CreateContainerResponse {
        let mut resp = CreateContainerResponse::new();
        resp.adjust = some(self.adj);
        resp
    }
}

impl From<AdjustmentBuilder> for ContainerAdjustment {
    fn from(b: AdjustmentBuilder) -> Self {
        b.build()
    }
}

/// Builds a [`ContainerUpdate`]: new resources for an existing container.
///
/// ```
/// use nri_plugin::UpdateBuilder;
///
/// let update = UpdateBuilder::new("4f3c…").set_memory_limit(1 << 30).set_cpuset_cpus("0-1").build();
/// assert_eq!(update.container_id, "4f3c…");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateBuilder {
    upd: ContainerUpdate,
}

impl UpdateBuilder {
    /// An update of the container with runtime ID `container_id` that changes nothing yet.
    pub fn new(container_id: impl Into<String>) -> Self {
        let mut upd = ContainerUpdate::new();
        upd.container_id = container_id.into();
        UpdateBuilder { upd }
    }

    fn resources(&mut self) -> &mut LinuxResources {
        sub(&mut sub::<LinuxContainerUpdate>(&mut self.upd.linux).resources)
    }

    /// Whether the runtime may ignore a failure to apply this update (default: no).
    pub fn ignore_failure(mut self, yes: bool) -> Self {
        self.upd.ignore_failure = yes;
        self
    }

    resource_setters!();

    /// The update.
    pub fn build(self) -> ContainerUpdate {
        self.upd
    }
}

impl From<UpdateBuilder> for ContainerUpdate {
    fn from(b: UpdateBuilder) -> Self {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_add_and_remove() {
        let a = AdjustmentBuilder::new().add_env("A", "1").remove_env("B").build();
        let kv: Vec<(&str, &str)> = a.env.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(kv, [("A", "1"), ("-B", "")]);
        assert!(a.linux.is_none(), "env alone must not create linux fields");
    }

    #[test]
    fn annotations_add_and_remove() {
        let a = AdjustmentBuilder::new().add_annotation("k", "v").remove_annotation("gone").build();
        assert_eq!(a.annotations.get("k").map(String::as_str), Some("v"));
        assert_eq!(a.annotations.get("-gone").map(String::as_str), Some(""));
        assert_eq!(a.annotations.len(), 2);
    }

    #[test]
    fn mounts() {
        let mut tmpfs = Mount::new();
        tmpfs.destination = "/scratch".into();
        tmpfs.type_ = "tmpfs".into();
        tmpfs.source = "tmpfs".into();
        let a = AdjustmentBuilder::new()
            .add_bind_mount("/host/dir", "/in/ctr", &["ro", "nosuid"])
            .add_mount(tmpfs.clone())
            .remove_mount("/old")
            .build();
        assert_eq!(a.mounts.len(), 3);
        let bind = &a.mounts[0];
        assert_eq!(
            (bind.source.as_str(), bind.destination.as_str(), bind.type_.as_str()),
            ("/host/dir", "/in/ctr", "bind")
        );
        assert_eq!(bind.options, ["rbind", "ro", "nosuid"]);
        assert_eq!(a.mounts[1], tmpfs);
        assert_eq!(a.mounts[2].destination, "-/old");
    }

    #[test]
    fn hooks_by_stage() {
        let a = AdjustmentBuilder::new()
            .add_hook(HookStage::CreateRuntime, hook("/bin/a", ["a", "x"]))
            .add_hook(HookStage::Poststop, hook("/bin/b", ["b"]))
            .add_hook(HookStage::Poststop, hook("/bin/c", Vec::<String>::new()))
            .build();
        assert_eq!(a.hooks.create_runtime.len(), 1);
        assert_eq!(a.hooks.create_runtime[0].args, ["a", "x"]);
        assert_eq!(a.hooks.poststop.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(), ["/bin/b", "/bin/c"]);
        assert!(a.hooks.prestart.is_empty() && a.hooks.start_container.is_empty());
        for stage in [
            HookStage::Prestart,
            HookStage::CreateRuntime,
            HookStage::CreateContainer,
            HookStage::StartContainer,
            HookStage::Poststart,
            HookStage::Poststop,
        ] {
            let h = AdjustmentBuilder::new().add_hook(stage, hook("/x", ["x"])).build().hooks.unwrap_or_default();
            let total = h.prestart.len()
                + h.create_runtime.len()
                + h.create_container.len()
                + h.start_container.len()
                + h.poststart.len()
                + h.poststop.len();
            assert_eq!(total, 1, "{stage:?}");
        }
    }

    #[test]
    fn args_devices_cdi_rlimits() {
        let mut dev = LinuxDevice::new();
        dev.path = "/dev/fuse".into();
        dev.type_ = "c".into();
        dev.major = 10;
        dev.minor = 229;
        let a = AdjustmentBuilder::new()
            .set_args(["/bin/sh", "-c", "true"])
            .add_device(dev.clone())
            .remove_device("/dev/kmsg")
            .add_cdi_device("vendor.com/gpu=0")
            .add_rlimit("RLIMIT_NOFILE", 4096, 1024)
            .build();
        assert_eq!(a.args, ["/bin/sh", "-c", "true"]);
        assert_eq!(
            a.linux.devices,
            [dev, {
                let mut d = LinuxDevice::new();
                d.path = "-/dev/kmsg".into();
                d
            }]
        );
        assert_eq!(a.CDI_devices[0].name, "vendor.com/gpu=0");
        assert_eq!((a.rlimits[0].type_.as_str(), a.rlimits[0].hard, a.rlimits[0].soft), ("RLIMIT_NOFILE", 4096, 1024));
    }

    #[test]
    fn linux_fields() {
        let a = AdjustmentBuilder::new()
            .set_cgroups_path("/pods/x")
            .set_oom_score_adj(-500)
            .add_sysctl("net.core.somaxconn", "1024")
            .remove_sysctl("kernel.shm_rmid_forced")
            .add_namespace("network", "/proc/1/ns/net")
            .remove_namespace("ipc")
            .build();
        let l = a.linux.as_ref().expect("linux set");
        assert_eq!(l.cgroups_path, "/pods/x");
        assert_eq!(l.oom_score_adj.value, -500);
        assert_eq!(l.sysctl.get("net.core.somaxconn").map(String::as_str), Some("1024"));
        assert!(l.sysctl.contains_key("-kernel.shm_rmid_forced"));
        let ns: Vec<(&str, &str)> = l.namespaces.iter().map(|n| (n.type_.as_str(), n.path.as_str())).collect();
        assert_eq!(ns, [("network", "/proc/1/ns/net"), ("-ipc", "")]);
        assert!(l.resources.is_none(), "no resource setter used");
    }

    /// Every resource setter, on both builders: set fields are present (`Some`), others unset.
    #[test]
    fn resources_on_both_builders() {
        fn check(r: &LinuxResources) {
            let m = r.memory.as_ref().expect("memory");
            assert_eq!(m.limit.value, 100);
            assert_eq!(m.reservation.value, 50);
            assert_eq!(m.swap.value, 200);
            assert_eq!(m.swappiness.value, 10);
            assert!(m.disable_oom_killer.value);
            assert!(m.kernel.is_none() && m.kernel_tcp.is_none() && m.use_hierarchy.is_none());
            let c = r.cpu.as_ref().expect("cpu");
            assert_eq!((c.shares.value, c.quota.value, c.period.value), (512, 50_000, 100_000));
            assert_eq!((c.realtime_runtime.value, c.realtime_period.value), (1, 2));
            assert_eq!((c.cpus.as_str(), c.mems.as_str()), ("0-1", "0"));
            assert_eq!(r.pids.limit, 64);
            assert_eq!(r.hugepage_limits.len(), 1);
            assert_eq!((r.hugepage_limits[0].page_size.as_str(), r.hugepage_limits[0].limit), ("2MB", 1 << 21));
            assert_eq!(r.unified.get("memory.high").map(String::as_str), Some("1G"));
            assert_eq!(r.blockio_class.value, "slow");
            assert_eq!(r.rdt_class.value, "gold");
            assert!(r.devices.is_empty());
        }
        macro_rules! all_setters {
            ($b:expr) => {
                $b.set_memory_limit(100)
                    .set_memory_reservation(50)
                    .set_memory_swap(200)
                    .set_memory_swappiness(10)
                    .set_memory_disable_oom_killer(true)
                    .set_cpu_shares(512)
                    .set_cpu_quota(50_000)
                    .set_cpu_period(100_000)
                    .set_cpu_realtime_runtime(1)
                    .set_cpu_realtime_period(2)
                    .set_cpuset_cpus("0-1")
                    .set_cpuset_mems("0")
                    .set_pids_limit(64)
                    .add_hugepage_limit("2MB", 1 << 21)
                    .set_unified("memory.high", "1G")
                    .set_blockio_class("slow")
                    .set_rdt_class("gold")
            };
        }
        let a = all_setters!(AdjustmentBuilder::new()).build();
        check(&a.linux.resources);
        let u = all_setters!(UpdateBuilder::new("c1")).build();
        check(&u.linux.resources);

        // One setter leaves the other sub-messages unset.
        let u = UpdateBuilder::new("c1").set_cpu_shares(2).build();
        assert!(u.linux.resources.memory.is_none() && u.linux.resources.pids.is_none());
        assert!(u.linux.resources.cpu.quota.is_none());
    }

    #[test]
    fn update_builder() {
        let u = UpdateBuilder::new("ctr-1").build();
        assert_eq!(u.container_id, "ctr-1");
        assert!(!u.ignore_failure && u.linux.is_none());
        assert!(UpdateBuilder::new("ctr-1").ignore_failure(true).build().ignore_failure);
        let u: ContainerUpdate = UpdateBuilder::new("x").set_memory_limit(1).into();
        assert_eq!(u.linux.resources.memory.limit.value, 1);
    }

    #[test]
    fn response_and_emptiness() {
        assert!(AdjustmentBuilder::new().is_empty());
        let b = AdjustmentBuilder::new().add_env("A", "1");
        assert!(!b.is_empty());
        let resp = b.clone().into_response();
        assert_eq!(resp.adjust.as_ref(), Some(&b.clone().build()));
        assert!(resp.update.is_empty() && resp.evict.is_empty());
        let adj: ContainerAdjustment = b.into();
        assert_eq!(adj.env.len(), 1);
    }

    #[test]
    fn evictions() {
        let e = eviction("c9", "out of budget");
        assert_eq!((e.container_id.as_str(), e.reason.as_str()), ("c9", "out of budget"));
    }

    /// The builders' output survives the wire (encode, decode) unchanged.
    #[test]
    fn wire_roundtrip() {
        use protobuf::Message;
        let resp = AdjustmentBuilder::new()
            .add_env("A", "1")
            .add_bind_mount("/a", "/b", &["ro"])
            .set_cpu_shares(3)
            .add_hook(HookStage::StartContainer, hook("/h", ["h"]))
            .into_response();
        let bytes = resp.write_to_bytes().expect("encode");
        assert_eq!(CreateContainerResponse::parse_from_bytes(&bytes).expect("decode"), resp);
    }
}
