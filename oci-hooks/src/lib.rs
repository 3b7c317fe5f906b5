//! `driftguard-oci-hook`: installs a container's driftguard policy from an OCI runtime hook,
//! for runtimes without NRI (podman, CRI-O without NRI, plain runc), and, run from containerd's
//! base runtime spec next to the NRI agent, so that container start fails closed while the agent
//! is down (`packaging/containerd/`).
//!
//! Contract (OCI runtime-spec, "hooks"): the runtime runs the hook with the container
//! state JSON on stdin (`ociVersion`, `id`, `status`, `pid`, `bundle`, `annotations`).
//!
//! - [`create_runtime`] (`createRuntime` stage: the container's cgroup exists, its
//!   entrypoint has not been exec'd yet): reads `<bundle>/config.json`, resolves the
//!   policy from its annotations with [`driftguard::annotations::resolve`] (the same code
//!   as the agent), finds the cgroup of the container's init process, records
//!   `<state-dir>/<id>` and writes the policy into the pinned policy map.
//! - [`poststop`]: removes the map entry recorded at createRuntime and the record.
//!
//! The agent daemon need not run: only the pinned programs and maps are used.
//! See `docs/oci-hooks.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use driftguard::annotations::{AnnotationError, FailurePolicy};
use driftguard::cgroup::CgroupError;
use driftguard::config::{Config, ConfigError};
use driftguard::enforcer::{self, Owner, PolicyStore};
use driftguard::install::{self, InstallError};
use driftguard::node_state::HookRefusal;
use driftguard::policy::Mode;
use driftguard::provenance::ProvenanceError;
use driftguard::rules;
use oci_spec::runtime::{Spec, State};
use serde::Deserialize;

/// Where createRuntime records the cgroup id of each container, for poststop, when neither
/// `--state-dir` nor the config's `[oci_hook] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = driftguard::node_state::DEFAULT_HOOK_STATE_DIR;
/// Annotations naming the pod, in the order they are consulted: containerd's CRI plugin, then
/// CRI-O (for the refusals the agent reports).
pub const POD_NAME_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"];
/// Annotations naming the image: containerd's CRI plugin, then CRI-O.
pub const IMAGE_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"];
/// Annotations naming the container, used to match per-container keys
/// `driftguard.dev/<key>.<name>`, in the order they are consulted: containerd's CRI plugin
/// sets `io.kubernetes.cri.container-name`, CRI-O sets `io.kubernetes.container.name`.
pub const CONTAINER_NAME_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.container-name", "io.kubernetes.container.name"];
/// Annotations naming the pod's namespace, in the order they are consulted: containerd's CRI
/// plugin, then CRI-O. The runtime sets them from the CRI request, after any annotation
/// passthrough, so a workload cannot choose them. Node policy rules by namespace apply to
/// containers that have one (podman and plain runc containers have none).
pub const NAMESPACE_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"];
/// Annotations naming the kind of container, with the value that marks a pod sandbox
/// ("pause") container: containerd's CRI plugin, then CRI-O. A sandbox is never put under
/// policy (the agent does not see sandboxes as containers either); with containerd's
/// `pod_annotations` passthrough the sandbox's spec carries the pod's driftguard keys too.
pub const SANDBOX_MARKERS: [(&str, &str); 2] =
    [("io.kubernetes.cri.container-type", "sandbox"), ("io.kubernetes.cri-o.ContainerType", "sandbox")];
/// Largest state JSON accepted on stdin.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Exit code: policy installed, nothing to do, or not installed under `failure-policy: ignore`.
pub const EXIT_OK: u8 = 0;
/// Exit code: the policy could not be installed and the failure policy is `fail`
/// (the runtime refuses to start the container).
pub const EXIT_INSTALL_FAILED: u8 = 1;
/// Exit code: invalid input (usage, state JSON, bundle, config.json, annotations,
/// driftguard config file). Always refuses the container.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// Where the hook finds things. Pin dir and config default to the agent's.
#[derive(Clone, Debug)]
pub struct Options {
    /// bpffs directory of the pinned maps; `None`: `bpf.pin_dir` of the config.
    pub pin_dir: Option<PathBuf>,
    /// driftguard config file; `None`: `/etc/driftguard/config.toml` (defaults if absent).
    pub config: Option<PathBuf>,
    /// Directory of the per-container records.
    pub state_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options { pin_dir: None, config: None, state_dir: PathBuf::from(DEFAULT_STATE_DIR) }
    }
}

/// Whether an error is about the input (always refuses the container) or about
/// installing the policy (the failure policy decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad input: exit [`EXIT_INVALID_INPUT`].
    Input,
    /// Installation failed: [`EXIT_INSTALL_FAILED`] or a warning, per failure policy.
    Install,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// stdin could not be read.
    #[error("reading the container state from stdin: {0}")]
    ReadState(#[source] io::Error),
    /// stdin is larger than [`MAX_STATE_BYTES`].
    #[error("container state on stdin is larger than {MAX_STATE_BYTES} bytes")]
    StateTooLarge,
    /// stdin is not an OCI state document.
    #[error("malformed container state JSON on stdin: {error} (input starts with {excerpt:?}); the runtime must pass the OCI state to the hook's stdin")]
    MalformedState {
        /// serde's message (line, column).
        error: serde_json::Error,
        /// The first bytes of the input.
        excerpt: String,
    },
    /// The state has an empty or unusable container id.
    #[error("container state on stdin has an invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// createRuntime without a pid.
    #[error("container {id}: the state on stdin has no pid (createRuntime needs the container's init process; is the hook configured for another stage?)")]
    MissingPid {
        /// Container id.
        id: String,
    },
    /// The state's pid is not a positive number.
    #[error("container {id}: invalid pid {pid} in the state on stdin")]
    InvalidPid {
        /// Container id.
        id: String,
        /// The pid.
        pid: i32,
    },
    /// The bundle directory named by the state does not exist.
    #[error("container {id}: bundle directory {bundle:?} does not exist{}", if bundle.as_os_str().is_empty() { " (the state on stdin has no \"bundle\")" } else { "" })]
    MissingBundle {
        /// Container id.
        id: String,
        /// The bundle path.
        bundle: PathBuf,
    },
    /// `<bundle>/config.json` cannot be read.
    #[error("container {id}: cannot read {path}: {source}")]
    ReadConfigJson {
        /// Container id.
        id: String,
        /// config.json path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// `<bundle>/config.json` is not JSON with an annotations object.
    #[error("container {id}: malformed {path}: {error}")]
    MalformedConfigJson {
        /// Container id.
        id: String,
        /// config.json path.
        path: PathBuf,
        /// serde's message.
        error: serde_json::Error,
    },
    /// The driftguard annotations are invalid (text from the library).
    #[error("container {id}: invalid driftguard annotations in {path}: {source}")]
    Annotation {
        /// Container id.
        id: String,
        /// config.json path.
        path: PathBuf,
        /// The library's error.
        source: Box<AnnotationError>,
    },
    /// The driftguard config file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The cgroup of the container's init process cannot be found.
    #[error("container {id}: cannot find the cgroup of its init process {pid}: {source}")]
    Cgroup {
        /// Container id.
        id: String,
        /// Init pid.
        pid: u32,
        /// Cause (vanished process, removed cgroup, no cgroup v2, ...).
        source: CgroupError,
    },
    /// No cgroup v2 hierarchy.
    #[error("container {id}: {source}")]
    CgroupRoot {
        /// Container id.
        id: String,
        /// Cause.
        source: CgroupError,
    },
    /// The pinned maps are missing, unreadable, or an update failed.
    #[error("container {id}: cannot install its {mode} policy: {source}")]
    Enforcer {
        /// Container id.
        id: String,
        /// Mode being installed.
        mode: Mode,
        /// Cause (nothing pinned, not permitted, map full, ...).
        source: enforcer::Error,
    },
    /// The container's root filesystem or exempt volumes could not be identified.
    #[error("container {id}: cannot tell its image (init pid {pid}): {source}")]
    Provenance {
        /// Container id.
        id: String,
        /// Init pid.
        pid: u32,
        /// Cause.
        source: ProvenanceError,
    },
    /// The maps are pinned but no programs are attached: the policy would do nothing.
    #[error("container {id}: driftguard maps are pinned under {dir} but no enforcement programs are attached (no link_dg_* pins): start the agent (`driftguard run`) first")]
    NotAttached {
        /// Container id.
        id: String,
        /// Pin dir.
        dir: PathBuf,
    },
    /// The per-container record could not be written, read or removed.
    #[error("container {id}: {op} {path}: {source}")]
    Record {
        /// Container id.
        id: String,
        /// What was done.
        op: &'static str,
        /// Record path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The per-container record is not ours.
    #[error("container {id}: malformed record {path}: {error}")]
    MalformedRecord {
        /// Container id.
        id: String,
        /// Record path.
        path: PathBuf,
        /// serde's message.
        error: serde_json::Error,
    },
}

impl HookError {
    /// Input error or installation error.
    pub fn class(&self) -> ErrorClass {
        match self {
            HookError::ReadState(_)
            | HookError::StateTooLarge
            | HookError::MalformedState { .. }
            | HookError::InvalidId { .. }
            | HookError::MissingPid { .. }
            | HookError::InvalidPid { .. }
            | HookError::MissingBundle { .. }
            | HookError::ReadConfigJson { .. }
            | HookError::MalformedConfigJson { .. }
            | HookError::Annotation { .. }
            | HookError::Config(_)
            | HookError::MalformedRecord { .. } => ErrorClass::Input,
            HookError::Cgroup { .. }
            | HookError::CgroupRoot { .. }
            | HookError::Provenance { .. }
            | HookError::Enforcer { .. }
            | HookError::NotAttached { .. }
            | HookError::Record { .. } => ErrorClass::Install,
        }
    }

    /// The process exit code for this error when it is fatal.
    pub fn exit_code(&self) -> u8 {
        match self.class() {
            ErrorClass::Input => EXIT_INVALID_INPUT,
            ErrorClass::Install => EXIT_INSTALL_FAILED,
        }
    }
}

/// The parts of the OCI state the hook uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookState {
    /// Container id (validated: usable as a file name).
    pub id: String,
    /// Pid of the container's init process, if given.
    pub pid: Option<i32>,
    /// Bundle directory.
    pub bundle: PathBuf,
}

/// Read the state JSON from `r` (stdin).
pub fn read_state(r: impl Read) -> Result<HookState, HookError> {
    let mut buf = Vec::new();
    r.take(MAX_STATE_BYTES + 1).read_to_end(&mut buf).map_err(HookError::ReadState)?;
    if buf.len() as u64 > MAX_STATE_BYTES {
        return Err(HookError::StateTooLarge);
    }
    parse_state(&buf)
}

/// Parse an OCI state document (`oci_spec::runtime::State`).
pub fn parse_state(bytes: &[u8]) -> Result<HookState, HookError> {
    let state: State = serde_json::from_slice(bytes).map_err(|error| HookError::MalformedState {
        error,
        excerpt: String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned(),
    })?;
    let id = state.id().clone();
    check_id(&id)?;
    Ok(HookState { id, pid: *state.pid(), bundle: state.bundle().clone() })
}

/// The id becomes a file name under the state dir.
fn check_id(id: &str) -> Result<(), HookError> {
    let reason = if id.is_empty() {
        Some("empty (the state on stdin has no \"id\")")
    } else if id.len() > 255 {
        Some("longer than 255 bytes")
    } else if id == "." || id == ".." || id.starts_with('.') {
        Some("starts with '.'")
    } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b':' | b'@')) {
        Some("may contain only letters, digits and - _ . + : @")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HookError::InvalidId { id: id.to_string(), reason }),
        None => Ok(()),
    }
}

/// Only what the hook needs from config.json, when oci-spec's full [`Spec`] rejects a
/// document (a field from a newer runtime-spec): the annotations.
#[derive(Deserialize)]
struct AnnotationsOnly {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    root: Option<RootOnly>,
}

#[derive(Deserialize)]
struct RootOnly {
    path: PathBuf,
}

/// The annotations of `<bundle>/config.json`.
pub fn bundle_annotations(st: &HookState) -> Result<(PathBuf, BTreeMap<String, String>), HookError> {
    bundle_config(st).map(|(p, a, _)| (p, a))
}

/// `<bundle>/config.json`'s path, annotations and `root.path` (made absolute against the
/// bundle; `rootfs` when the spec names none, as runc does).
pub fn bundle_config(st: &HookState) -> Result<(PathBuf, BTreeMap<String, String>, PathBuf), HookError> {
    if st.bundle.as_os_str().is_empty() || !st.bundle.is_dir() {
        return Err(HookError::MissingBundle { id: st.id.clone(), bundle: st.bundle.clone() });
    }
    let path = st.bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| HookError::ReadConfigJson {
        id: st.id.clone(),
        path: path.clone(),
        source,
    })?;
    let (annotations, root) = match serde_json::from_slice::<Spec>(&bytes) {
        Ok(spec) => (
            spec.annotations().clone().map(|m| m.into_iter().collect()),
            spec.root().as_ref().map(|r| r.path().clone()),
        ),
        Err(spec_err) => match serde_json::from_slice::<AnnotationsOnly>(&bytes) {
            Ok(a) => (a.annotations, a.root.map(|r| r.path)),
            // Not even JSON with an annotations object: report oci-spec's error.
            Err(_) => return Err(HookError::MalformedConfigJson { id: st.id.clone(), path, error: spec_err }),
        },
    };
    let rootfs = st.bundle.join(root.unwrap_or_else(|| PathBuf::from("rootfs")));
    Ok((path, annotations.unwrap_or_default(), rootfs))
}

/// What createRuntime stored for poststop (`<state-dir>/<id>`, JSON). Defined with the agent's
/// state, whose `driftguard unload` removes the records of the pin dir it unloads.
pub use driftguard::node_state::HookRecord as Record;

/// The container's name from the runtime's annotations (empty when none is set: then only
/// pod-wide keys apply).
pub fn container_name(annotations: &BTreeMap<String, String>) -> &str {
    CONTAINER_NAME_ANNOTATIONS.iter().find_map(|k| annotations.get(*k)).map_or("", String::as_str)
}

/// A refused createRuntime as the agent reports it ([`driftguard::node_state::HookRefusal`]):
/// the reason, the offending key and rule, and the container's names from its bundle's
/// annotations (empty when they cannot be read). `None` when the state on stdin names no
/// usable container id.
pub fn refusal(st: &HookState, err: &HookError) -> Option<HookRefusal> {
    let reason = match err {
        HookError::ReadState(_)
        | HookError::StateTooLarge
        | HookError::MalformedState { .. }
        | HookError::InvalidId { .. } => return None,
        HookError::Annotation { source, .. } => source.offence().0,
        HookError::Config(_) => "config",
        HookError::Cgroup { .. } | HookError::CgroupRoot { .. } => "cgroup",
        HookError::Provenance { .. } => "provenance",
        HookError::Enforcer { .. }
        | HookError::NotAttached { .. }
        | HookError::Record { .. }
        | HookError::MalformedRecord { .. } => "install",
        HookError::MissingPid { .. }
        | HookError::InvalidPid { .. }
        | HookError::MissingBundle { .. }
        | HookError::ReadConfigJson { .. }
        | HookError::MalformedConfigJson { .. } => "hook_input",
    };
    let (key, rule) = match err {
        HookError::Annotation { source, .. } => {
            let (_, key, rule) = source.offence();
            (key.to_string(), rule.to_string())
        }
        _ => (String::new(), String::new()),
    };
    let a = bundle_annotations(st).map(|(_, a)| a).unwrap_or_default();
    let first = |keys: &[&str]| keys.iter().find_map(|k| a.get(*k)).cloned().unwrap_or_default();
    Some(HookRefusal {
        time: driftguard::agent::output::rfc3339(std::time::SystemTime::now()),
        container_id: st.id.clone(),
        namespace: namespace(&a).unwrap_or_default().to_string(),
        pod: first(&POD_NAME_ANNOTATIONS),
        container: container_name(&a).to_string(),
        image: first(&IMAGE_ANNOTATIONS),
        reason: reason.to_string(),
        key,
        rule,
        message: err.to_string(),
    })
}

/// The pod's namespace from the runtime's annotations, if it set one.
pub fn namespace(annotations: &BTreeMap<String, String>) -> Option<&str> {
    NAMESPACE_ANNOTATIONS.iter().find_map(|k| annotations.get(*k)).map(String::as_str)
}

/// Whether the annotations mark a pod sandbox ("pause") container.
pub fn is_sandbox(annotations: &BTreeMap<String, String>) -> bool {
    SANDBOX_MARKERS.iter().any(|(k, v)| annotations.get(*k).is_some_and(|a| a == v))
}

/// What [`create_runtime`] did.
#[derive(Debug)]
pub enum CreateOutcome {
    /// The policy resolves to `off`: nothing touched.
    Off,
    /// A pod sandbox ("pause") container: never under policy, nothing touched.
    Sandbox,
    /// The policy is in the map.
    Installed(Record),
    /// It could not be installed and the failure policy is `ignore`: the container
    /// starts unprotected. The error says why.
    Unprotected(HookError),
}

impl fmt::Display for CreateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateOutcome::Off => f.write_str("mode off: nothing to do"),
            CreateOutcome::Sandbox => f.write_str("pod sandbox container: nothing to do"),
            CreateOutcome::Installed(r) => write!(
                f,
                "container {}: {} policy ({}) installed for cgroup {} (id {}, level {}) in {}",
                r.container_id,
                r.mode,
                r.policy_source,
                r.cgroup.display(),
                r.cgroup_id,
                r.level,
                r.pin_dir.display()
            ),
            CreateOutcome::Unprotected(e) => {
                write!(f, "{e}; the container starts WITHOUT driftguard protection (failure-policy ignore)")
            }
        }
    }
}

fn record_path(opts: &Options, id: &str) -> PathBuf {
    opts.state_dir.join(id)
}

/// The policy of a container with these `config.json` annotations under the node policy of
/// `config`: its namespace from the runtime's annotations ([`namespace`]), its pod's labels
/// unknown, so that a rule with a selector may apply and the strictest such rule is taken
/// (`driftguard::rules::NodePolicy::base`); the agent, which knows the labels, corrects it at
/// StartContainer.
pub fn resolve(config: &Config, annotations: &BTreeMap<String, String>) -> Result<rules::Resolved, AnnotationError> {
    let no_pod: [(&str, &str); 0] = [];
    let pod = rules::Pod { namespace: namespace(annotations), labels: None };
    config.node_policy().resolve(&pod, no_pod, container_name(annotations), annotations)
}

/// The createRuntime hook for the container described by `st`.
pub fn create_runtime(st: &HookState, opts: &Options) -> Result<CreateOutcome, HookError> {
    let (config_json, annotations, rootfs) = bundle_config(st)?;
    if is_sandbox(&annotations) {
        return Ok(CreateOutcome::Sandbox);
    }
    let config = Config::load(opts.config.as_deref())?;
    let resolved = resolve(&config, &annotations).map_err(|source| HookError::Annotation {
        id: st.id.clone(),
        path: config_json,
        source: Box::new(source),
    })?;
    if resolved.policy.policy.mode == Mode::Off {
        return Ok(CreateOutcome::Off);
    }
    let pid = match st.pid {
        None => return Err(HookError::MissingPid { id: st.id.clone() }),
        Some(p) if p <= 0 => return Err(HookError::InvalidPid { id: st.id.clone(), pid: p }),
        Some(p) => p as u32,
    };
    let pin_dir = opts.pin_dir.clone().unwrap_or_else(|| config.bpf.pin_dir.clone());
    match install(st, opts, &config, pid, &pin_dir, &rootfs, &resolved) {
        Ok(rec) => Ok(CreateOutcome::Installed(rec)),
        Err(e) if e.class() == ErrorClass::Install && resolved.policy.failure_policy == FailurePolicy::Ignore => {
            Ok(CreateOutcome::Unprotected(e))
        }
        Err(e) => Err(e),
    }
}

fn install(
    st: &HookState,
    opts: &Options,
    config: &Config,
    pid: u32,
    pin_dir: &Path,
    rootfs: &Path,
    resolved: &rules::Resolved,
) -> Result<Record, HookError> {
    let (policy, source) = (&resolved.policy.policy, &resolved.source);
    let id = &st.id;
    let root = config.cgroup_root().map_err(|source| HookError::CgroupRoot { id: id.clone(), source })?;
    let cg_err = |source| HookError::Cgroup { id: id.clone(), pid, source };
    let cgroup = root.cgroup_of_pid(pid).map_err(cg_err)?;
    let enf_err = |source| HookError::Enforcer { id: id.clone(), mode: policy.mode, source };
    let store = PolicyStore::open_pinned(pin_dir).map_err(enf_err)?;
    if enforcer::pinned_path(pin_dir).is_none() {
        return Err(HookError::NotAttached { id: id.clone(), dir: pin_dir.to_path_buf() });
    }
    let install_err = |e| match e {
        InstallError::Cgroup { source, .. } => cg_err(source),
        InstallError::Provenance(source) => HookError::Provenance { id: id.clone(), pid, source },
        InstallError::Enforcer(source) => enf_err(source),
    };
    // createRuntime runs after the runtime made the container's mounts and before it pivots
    // into the root: in the init process's mountinfo the root is still at the bundle's path.
    let c = install::Container { cgroup: &cgroup, pid, root: rootfs, known_rootfs_type: None };
    let prepared = install::prepare(&store, &root, &c, policy).map_err(install_err)?;

    let rec = Record {
        container_id: id.clone(),
        cgroup_id: prepared.cgroup_id,
        cgroup: cgroup.clone(),
        level: prepared.level,
        pin_dir: pin_dir.to_path_buf(),
        mode: policy.mode.to_string(),
        policy_source: source.to_string(),
    };
    let path = record_path(opts, id);
    // A record left by a container of the same id whose poststop never ran: its entry is stale
    // (the cgroup is gone or reused by us). In this pin dir commit removes it; in another, here.
    let stale = match read_record(id, &path) {
        Ok(Some(old)) if old.pin_dir == pin_dir => Some(old.cgroup_id),
        Ok(Some(old)) if old.cgroup_id != prepared.cgroup_id => {
            if let Ok(s) = PolicyStore::open_pinned(&old.pin_dir) {
                let _ = s.remove(old.cgroup_id);
            }
            None
        }
        _ => None,
    };
    // Record first, so poststop can always clean up what is installed.
    write_record(&rec, &path)?;
    if let Err(e) = prepared.commit(&store, Owner::OciHook, stale) {
        let _ = std::fs::remove_file(&path);
        return Err(install_err(e));
    }
    Ok(rec)
}

fn write_record(rec: &Record, path: &Path) -> Result<(), HookError> {
    let id = &rec.container_id;
    let rec_err = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| HookError::Record { id: id.clone(), op, path: p, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(rec_err("creating the record directory", dir))?;
    }
    let tmp = path.with_extension("tmp");
    // Record contains only numbers, paths and ids: serialization cannot fail.
    let text = serde_json::to_vec_pretty(rec).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(rec_err("writing record", &tmp))?;
    std::fs::rename(&tmp, path).map_err(rec_err("writing record", path))?;
    Ok(())
}

fn read_record(id: &str, path: &Path) -> Result<Option<Record>, HookError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HookError::Record {
                id: id.to_string(),
                op: "reading record",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| HookError::MalformedRecord {
        id: id.to_string(),
        path: path.to_path_buf(),
        error,
    })
}

/// What [`poststop`] did.
#[derive(Debug)]
pub enum PoststopOutcome {
    /// No record: createRuntime installed nothing for this container.
    NothingRecorded,
    /// The entry was removed (`existed`: it was still in the map).
    Removed {
        /// The record.
        record: Record,
        /// Whether the map still had the entry.
        existed: bool,
    },
    /// The pinned maps are gone (enforcement unloaded): nothing to remove; record deleted.
    MapsGone {
        /// The record.
        record: Record,
        /// Why the maps could not be opened.
        error: enforcer::Error,
    },
}

impl fmt::Display for PoststopOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoststopOutcome::NothingRecorded => f.write_str("no record: nothing to remove"),
            PoststopOutcome::Removed { record, existed } => write!(
                f,
                "container {}: policy of cgroup id {} removed{}",
                record.container_id,
                record.cgroup_id,
                if *existed { "" } else { " (was not in the map)" }
            ),
            PoststopOutcome::MapsGone { record, error } => write!(
                f,
                "container {}: policy of cgroup id {} not removed, the maps are gone: {error}",
                record.container_id, record.cgroup_id
            ),
        }
    }
}

/// The poststop hook: remove the entry recorded by createRuntime, then the record.
/// The record names the pin dir the entry went to; `opts.pin_dir` is not consulted.
pub fn poststop(st: &HookState, opts: &Options) -> Result<PoststopOutcome, HookError> {
    let path = record_path(opts, &st.id);
    let Some(record) = read_record(&st.id, &path)? else {
        return Ok(PoststopOutcome::NothingRecorded);
    };
    let remove_record = || {
        std::fs::remove_file(&path)
            .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|source| HookError::Record {
                id: st.id.clone(),
                op: "removing record",
                path: path.clone(),
                source,
            })
    };
    let store = match PolicyStore::open_pinned(&record.pin_dir) {
        Ok(s) => s,
        Err(error @ enforcer::Error::NotPinned { .. }) => {
            remove_record()?;
            return Ok(PoststopOutcome::MapsGone { record, error });
        }
        Err(source) => {
            return Err(HookError::Enforcer { id: st.id.clone(), mode: Mode::Off, source });
        }
    };
    let existed = store.remove(record.cgroup_id).map_err(|source| HookError::Enforcer {
        id: st.id.clone(),
        mode: Mode::Off,
        source,
    })?;
    remove_record()?;
    Ok(PoststopOutcome::Removed { record, existed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses() {
        let s =
            parse_state(br#"{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":42,"bundle":"/b"}"#).unwrap();
        assert_eq!(s, HookState { id: "abc".into(), pid: Some(42), bundle: "/b".into() });
        let s = parse_state(br#"{"ociVersion":"1.0.2","id":"abc","status":"stopped","bundle":"/b"}"#).unwrap();
        assert_eq!(s.pid, None);
    }

    #[test]
    fn bad_state_is_named() {
        let e = parse_state(b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("malformed container state JSON on stdin: "), "{e}");
        assert_eq!(e.exit_code(), EXIT_INVALID_INPUT);
        let e = parse_state(br#"{"id":"../x","bundle":"/b"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid container id \"../x\""), "{e}");
        let e = parse_state(br#"{"id":"a/b","bundle":"/b"}"#).unwrap_err();
        assert!(matches!(e, HookError::InvalidId { .. }), "{e}");
        let e = parse_state(br#"{"bundle":"/b"}"#).unwrap_err();
        assert!(e.to_string().contains("has no \"id\""), "{e}");
    }

    #[test]
    fn node_policy_rules_by_namespace_and_unknown_labels() {
        use std::str::FromStr;
        let config = Config::from_str(
            "default_mode = \"enforce\"\n\
             [[rules]]\nname = \"canary\"\nnamespaces = [\"shop\"]\nselector = \"track=canary\"\nmode = \"enforce\"\n\
             [[rules]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nmode = \"monitor\"\n\
             [[rules]]\nname = \"batch\"\nnamespaces = [\"batch\"]\nmode = \"off\"\n",
        )
        .unwrap();
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let got = |a: &BTreeMap<String, String>| {
            let r = resolve(&config, a).unwrap();
            (r.policy.policy.mode, r.source.to_string())
        };
        // containerd's and CRI-O's namespace annotations
        assert_eq!(got(&ann(&[("io.kubernetes.cri.sandbox-namespace", "batch")])), (Mode::Off, "rule:batch".into()));
        assert_eq!(got(&ann(&[("io.kubernetes.pod.namespace", "batch")])), (Mode::Off, "rule:batch".into()));
        // the label rule may apply: the strictest candidate, not the namespace rule after it
        assert_eq!(
            got(&ann(&[("io.kubernetes.cri.sandbox-namespace", "shop")])),
            (Mode::Enforce, "rule:canary".into())
        );
        // exclusions hold for the hook too
        assert_eq!(
            got(&ann(&[("io.kubernetes.cri.sandbox-namespace", "kube-system")])),
            (Mode::Off, "exclusion:kube-system".into())
        );
        // no namespace (podman, runc): namespace rules do not apply, the default does
        assert_eq!(got(&ann(&[])), (Mode::Enforce, "default".into()));
        // annotations refine, as in the agent
        let a = ann(&[("io.kubernetes.cri.sandbox-namespace", "batch"), ("driftguard.dev/mode", "monitor")]);
        assert_eq!(got(&a), (Mode::Monitor, "annotation".into()));
    }

    #[test]
    fn forbid_weakening_refuses_in_the_hook_too() {
        use std::str::FromStr;
        let config = Config::from_str(
            "[[rules]]\nname = \"payments\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\nforbid_weakening = true\n",
        )
        .unwrap();
        let a: BTreeMap<String, String> = [
            ("io.kubernetes.cri.sandbox-namespace", "payments"),
            ("io.kubernetes.cri.container-name", "app"),
            ("driftguard.dev/exec-memory.app", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = resolve(&config, &a).unwrap_err();
        assert!(
            matches!(&e, AnnotationError::Forbidden { key, rule, .. } if key == "driftguard.dev/exec-memory.app" && rule == "payments"),
            "{e:?}"
        );
        // create_runtime refuses it as invalid input (exit 2), naming the rule
        let t = tempfile::tempdir().unwrap();
        let (st, opts) = bundle(t.path(), serde_json::to_value(&a).unwrap());
        std::fs::write(opts.config.as_ref().unwrap(), "[[rules]]\nname = \"payments\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\nforbid_weakening = true\n").unwrap();
        let e = create_runtime(&st, &opts).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Input);
        assert!(e.to_string().contains("forbidden by rule \"payments\""), "{e}");
    }

    #[test]
    fn refusals_name_reason_key_rule_and_container() {
        use std::str::FromStr;
        let t = tempfile::tempdir().unwrap();
        let (st, opts) = bundle(
            t.path(),
            serde_json::json!({
                "io.kubernetes.cri.sandbox-namespace": "payments",
                "io.kubernetes.cri.sandbox-name": "api",
                "io.kubernetes.cri.container-name": "app",
                "io.kubernetes.cri.image-name": "registry.example/api:1",
                "driftguard.dev/mode": "off",
            }),
        );
        let rule = "[[rules]]\nname = \"payments\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\nforbid_weakening = true\n";
        std::fs::write(opts.config.as_ref().unwrap(), rule).unwrap();
        let e = create_runtime(&st, &opts).unwrap_err();
        let r = refusal(&st, &e).unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str(), r.image.as_str()),
            ("payments", "api", "app", "registry.example/api:1")
        );
        assert_eq!(
            (r.reason.as_str(), r.key.as_str(), r.rule.as_str()),
            ("forbidden_weakening", "driftguard.dev/mode", "payments")
        );
        assert_eq!(r.message, e.to_string());
        // an install failure (nothing pinned) and a broken config have their own reasons
        std::fs::write(opts.config.as_ref().unwrap(), "").unwrap();
        let (st2, opts2) = bundle(t.path(), serde_json::json!({"driftguard.dev/mode": "enforce"}));
        let e = create_runtime(&st2, &opts2).unwrap_err();
        assert_eq!(refusal(&st2, &e).unwrap().reason, "install", "{e}");
        let e = HookError::Config(Config::from_str("nope = 1").unwrap_err());
        assert_eq!(refusal(&st2, &e).unwrap().reason, "config");
        for r in ["forbidden_weakening", "install", "config", "annotation", "hook_input"] {
            assert!(driftguard::node_state::REFUSAL_REASONS.contains(&r));
        }
        // no usable id: nothing to record
        assert!(refusal(&st, &HookError::StateTooLarge).is_none());
    }

    #[test]
    fn off_touches_nothing() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("config.json"), r#"{"ociVersion":"1.0.2","annotations":{"x":"y"}}"#).unwrap();
        let cfg = t.path().join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let st = HookState { id: "c1".into(), pid: None, bundle: t.path().into() };
        let opts =
            Options { pin_dir: Some(t.path().join("nope")), config: Some(cfg), state_dir: t.path().join("state") };
        assert!(matches!(create_runtime(&st, &opts).unwrap(), CreateOutcome::Off));
        assert!(!opts.state_dir.exists());
        assert!(matches!(poststop(&st, &opts).unwrap(), PoststopOutcome::NothingRecorded));
    }

    fn bundle(t: &Path, annotations: serde_json::Value) -> (HookState, Options) {
        std::fs::write(
            t.join("config.json"),
            serde_json::json!({"ociVersion": "1.0.2", "annotations": annotations}).to_string(),
        )
        .unwrap();
        let cfg = t.join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let st = HookState { id: "c1".into(), pid: Some(1), bundle: t.into() };
        let opts = Options { pin_dir: Some(t.join("nope")), config: Some(cfg), state_dir: t.join("state") };
        (st, opts)
    }

    #[test]
    fn containerd_and_crio_container_names_select_per_container_keys() {
        // The pod says enforce, the per-container key for "debug" says off: "debug" must be off
        // whichever runtime named it (off touches nothing, so no pinned maps are needed).
        for key in CONTAINER_NAME_ANNOTATIONS {
            let t = tempfile::tempdir().unwrap();
            let (st, opts) = bundle(
                t.path(),
                serde_json::json!({"driftguard.dev/mode": "enforce", "driftguard.dev/mode.debug": "off", key: "debug"}),
            );
            let out = create_runtime(&st, &opts).unwrap();
            assert!(matches!(out, CreateOutcome::Off), "{key}: {out}");
        }
        let a: BTreeMap<String, String> = [
            ("io.kubernetes.cri.container-name".to_string(), "app".to_string()),
            ("io.kubernetes.container.name".to_string(), "other".to_string()),
        ]
        .into();
        assert_eq!(container_name(&a), "app");
        assert_eq!(container_name(&BTreeMap::new()), "");
    }

    #[test]
    fn sandbox_containers_are_skipped() {
        for (k, v) in SANDBOX_MARKERS {
            let t = tempfile::tempdir().unwrap();
            // An enforce pod's sandbox, with nothing pinned: skipped, not refused.
            let (st, opts) = bundle(t.path(), serde_json::json!({"driftguard.dev/mode": "enforce", k: v}));
            let out = create_runtime(&st, &opts).unwrap();
            assert!(matches!(out, CreateOutcome::Sandbox), "{k}: {out}");
            assert!(!opts.state_dir.exists());
        }
        // A workload container of the same pod is not a sandbox: it needs the (missing) maps.
        let t = tempfile::tempdir().unwrap();
        let (st, opts) = bundle(
            t.path(),
            serde_json::json!({"driftguard.dev/mode": "enforce", "io.kubernetes.cri.container-type": "container"}),
        );
        assert!(create_runtime(&st, &opts).is_err());
    }

    #[test]
    fn invalid_annotation_uses_library_text() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"driftguard.dev/mode":"enforcing"}}"#,
        )
        .unwrap();
        let cfg = t.path().join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let st = HookState { id: "c1".into(), pid: Some(1), bundle: t.path().into() };
        let opts = Options { pin_dir: None, config: Some(cfg), state_dir: t.path().join("state") };
        let e = create_runtime(&st, &opts).unwrap_err();
        let lib = driftguard::annotations::resolve(
            &Default::default(),
            [("driftguard.dev/mode", "enforcing")],
            "",
            [("", ""); 0],
        )
        .unwrap_err()
        .to_string();
        assert!(e.to_string().ends_with(&lib), "{e}");
        assert_eq!(e.exit_code(), EXIT_INVALID_INPUT);
    }

    #[test]
    fn annotations_fall_back_when_spec_rejects() {
        let t = tempfile::tempdir().unwrap();
        // "process" of the wrong type: oci-spec rejects it, the annotations are still read.
        std::fs::write(
            t.path().join("config.json"),
            r#"{"process":7,"annotations":{"driftguard.dev/mode":"enforce"}}"#,
        )
        .unwrap();
        let st = HookState { id: "c1".into(), pid: Some(1), bundle: t.path().into() };
        let (_, a) = bundle_annotations(&st).unwrap();
        assert_eq!(a.get("driftguard.dev/mode").map(String::as_str), Some("enforce"));
        std::fs::write(t.path().join("config.json"), "[1,2").unwrap();
        let e = bundle_annotations(&st).unwrap_err();
        assert!(e.to_string().contains("malformed") && e.to_string().contains("config.json"), "{e}");
    }
}
