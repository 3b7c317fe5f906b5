//! Policy from pod and container annotations.
//!
//! Pods opt in with `driftguard.dev/mode: monitor|enforce`; the node default
//! ([`Defaults::mode`], from `default_mode` in the config) is normally `off`.
//! Every key lives under [`PREFIX`] and may be given:
//!
//! 1. pod-wide, as `driftguard.dev/<key>` in the pod's annotations;
//! 2. for one container, as `driftguard.dev/<key>.<container-name>` in the pod's
//!    annotations (Kubernetes users cannot annotate containers). Container names are
//!    DNS-1123 labels and contain no '.', so the name part is split at the first '.';
//! 3. in the container's own annotations (the OCI `config.json` annotations an OCI hook
//!    sees), as `driftguard.dev/<key>` and, for runtimes that copy the pod's annotations
//!    into the container's, as `driftguard.dev/<key>.<container-name>`.
//!
//! Resolution order, later wins:
//! node defaults < pod `<key>` < pod `<key>.<container>` < container `<key>`
//! < container `<key>.<container>`.
//!
//! A list key (`allow`, `deny`) at a later level *replaces* the whole list of earlier
//! levels, so a per-container list can also remove entries (an empty value clears it).
//!
//! Validation is strict: an unknown key under the prefix, a malformed per-container key,
//! a bad value (also in overrides for *other* containers, which are otherwise ignored),
//! or a resulting [`Policy`] that fails [`Policy::validate`] is an [`AnnotationError`]
//! that names the annotation key(s), the value(s) and the problem. Keys outside the
//! prefix are ignored. Values have surrounding whitespace trimmed.
//!
//! The functions take any iterable of key/value pairs whose items are `AsRef<str>`:
//! `&HashMap<String, String>` (what NRI gives), `&BTreeMap<String, String>`, or a slice
//! of `(&str, &str)`. Annotations are processed in key order, so the error reported
//! for input with several problems is deterministic. See `docs/annotations.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::policy::{ExecMemory, ExecPath, Mode, Policy, PolicyError, ProcessAccess};

mod keys;
pub use keys::*;

/// Prefix of every driftguard annotation key.
pub const PREFIX: &str = "driftguard.dev/";

/// What to do with a container whose policy cannot be installed (enforcement not loaded,
/// cgroup vanished, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Refuse to start the container.
    #[default]
    Fail,
    /// Start the container unprotected and log a warning.
    Ignore,
}

impl FailurePolicy {
    /// Lower-case name as used in annotations and config.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "fail",
            FailurePolicy::Ignore => "ignore",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a failure policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid failure policy {0:?}: expected one of fail, ignore")]
pub struct BadFailurePolicy(pub String);

impl FromStr for FailurePolicy {
    type Err = BadFailurePolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(FailurePolicy::Fail),
            "ignore" => Ok(FailurePolicy::Ignore),
            other => Err(BadFailurePolicy(other.to_string())),
        }
    }
}

/// Node-level defaults (from the config file) that annotations override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Mode of containers whose pod sets no `mode` (normally [`Mode::Off`]: pods opt in).
    pub mode: Mode,
    /// Failure policy of containers whose pod sets no `failure-policy`.
    pub failure_policy: FailurePolicy,
}

/// The resolved policy of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// What the container may execute; already [`Policy::validate`]d.
    pub policy: Policy,
    /// What to do when the policy cannot be installed.
    pub failure_policy: FailurePolicy,
}

/// Invalid driftguard annotations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// A key under the prefix that driftguard does not know (a typo, most likely).
    #[error(
        "annotation {key:?} = {value:?}: unknown key {name:?}: expected one of mode, allow, deny, drift, fileless, non-image, exec-volumes, allowlist-only, exec-memory, process-access, failure-policy, optionally followed by .<container-name>"
    )]
    UnknownKey {
        /// The full annotation key.
        key: String,
        /// Its value.
        value: String,
        /// The unknown key name (after the prefix, before any '.').
        name: String,
    },
    /// A per-container key `<key>.<container-name>` whose container part is not a valid
    /// container name.
    #[error("annotation {key:?} = {value:?}: malformed per-container key: container name {container:?} {reason}")]
    MalformedKey {
        /// The full annotation key.
        key: String,
        /// Its value.
        value: String,
        /// The container part of the key.
        container: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value that does not parse.
    #[error("annotation {key:?} = {value:?}: {problem}")]
    InvalidValue {
        /// The full annotation key.
        key: String,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: ValueError,
    },
    /// The annotation weakens the policy of a node policy rule that forbids weakening
    /// (`forbid_weakening = true`; docs/configuration.md#forbidding-weaker-policies).
    #[error("annotation {key:?} = {value:?}: forbidden by rule {rule:?}, which forbids weakening its policy: {what}")]
    Forbidden {
        /// The full annotation key.
        key: String,
        /// Its value.
        value: String,
        /// The rule's name.
        rule: String,
        /// How it weakens the rule's policy.
        what: String,
    },
    /// The resolved policy is inconsistent (a path on both the allow and the deny list).
    #[error("{}: {problem}", describe_sources(sources))]
    InvalidPolicy {
        /// The annotations (key, value) that produced the conflicting settings.
        sources: Vec<(String, String)>,
        /// What is wrong.
        problem: PolicyError,
    },
}

impl AnnotationError {
    /// What a refusal for this error reports (`admission` events, the refused metric): the
    /// reason (`forbidden_weakening` or `annotation`, see `node_state::REFUSAL_REASONS`), the
    /// annotation key at fault (the first of a conflict) and the rule that forbids it (or "").
    pub fn offence(&self) -> (&'static str, &str, &str) {
        match self {
            AnnotationError::Forbidden { key, rule, .. } => ("forbidden_weakening", key, rule),
            AnnotationError::UnknownKey { key, .. }
            | AnnotationError::MalformedKey { key, .. }
            | AnnotationError::InvalidValue { key, .. } => ("annotation", key, ""),
            AnnotationError::InvalidPolicy { sources, .. } => {
                ("annotation", sources.first().map_or("", |s| s.0.as_str()), "")
            }
        }
    }
}

fn describe_sources(sources: &[(String, String)]) -> String {
    match sources {
        [] => "resolved policy".to_string(),
        [(k, v)] => format!("annotation {k:?} = {v:?}"),
        _ => {
            let parts: Vec<String> = sources.iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
            format!("annotations {}", parts.join(" and "))
        }
    }
}

/// The settings of one precedence level.
type Layer = BTreeMap<Key, Setting>;

/// Split the annotations of one map into a level for the plain keys and a level for the
/// keys addressed to `container_name`; validates everything under the prefix.
fn parse_map<I, K, V>(annotations: I, container_name: &str) -> Result<(Layer, Layer), AnnotationError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let ours: BTreeMap<String, String> = annotations
        .into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(PREFIX))
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    let mut plain = Layer::new();
    let mut own = Layer::new();
    for (key, raw) in ours {
        let rest = &key[PREFIX.len()..];
        let (name, container) = match rest.split_once('.') {
            Some((n, c)) => (n, Some(c.to_string())),
            None => (rest, None),
        };
        let Some(k) = Key::from_name(name) else {
            return Err(AnnotationError::UnknownKey { name: name.to_string(), key, value: raw });
        };
        if let Some(c) = &container {
            if let Some(reason) = dns_label_problem(c) {
                return Err(AnnotationError::MalformedKey { container: c.clone(), key, value: raw, reason });
            }
        }
        let value = match parse_value(k, &raw) {
            Ok(v) => v,
            Err(problem) => return Err(AnnotationError::InvalidValue { key, value: raw, problem }),
        };
        let setting = Setting { value, key, raw };
        match container {
            None => {
                plain.insert(k, setting);
            }
            Some(c) if c.as_str() == container_name => {
                own.insert(k, setting);
            }
            Some(_) => {} // for another container: validated, otherwise ignored
        }
    }
    Ok((plain, own))
}

/// Resolve the policy of container `container_name` from its pod's annotations and its
/// own annotations, on top of the node `defaults`. See the module docs for precedence.
///
/// Either map may be empty: the NRI plugin passes the pod's annotations and the
/// container's; an OCI hook passes an empty pod map and the `config.json` annotations.
pub fn resolve<P, PK, PV, C, CK, CV>(
    defaults: &Defaults,
    pod: P,
    container_name: &str,
    container: C,
) -> Result<ContainerPolicy, AnnotationError>
where
    P: IntoIterator<Item = (PK, PV)>,
    PK: AsRef<str>,
    PV: AsRef<str>,
    C: IntoIterator<Item = (CK, CV)>,
    CK: AsRef<str>,
    CV: AsRef<str>,
{
    let base = ContainerPolicy { policy: Policy::with_mode(defaults.mode), failure_policy: defaults.failure_policy };
    resolve_over(base, pod, container_name, container).map(|r| r.policy)
}

/// One annotation that took effect in [`resolve_over`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedAnnotation {
    /// Which key it set.
    pub key: Key,
    /// The full annotation key (`driftguard.dev/mode.app`).
    pub annotation: String,
    /// Its value as given.
    pub value: String,
}

/// What [`resolve_over`] found: the policy, and the annotations that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The resolved policy.
    pub policy: ContainerPolicy,
    /// Every annotation applied, in precedence order (a later one of the same key won).
    pub applied: Vec<AppliedAnnotation>,
}

impl Resolution {
    /// The annotation that set the mode, if one did.
    pub fn mode_annotation(&self) -> Option<&AppliedAnnotation> {
        self.last_of(&[Key::Mode])
    }

    /// The annotation that took effect last for one of `keys` (the one whose value stands).
    pub fn last_of(&self, keys: &[Key]) -> Option<&AppliedAnnotation> {
        self.applied.iter().rev().find(|a| keys.contains(&a.key))
    }
}

/// Set one key's value on a policy (the one place a key's meaning is applied, for annotations
/// and node policy rules alike). `value` must come from [`parse_value`] for the same `key`.
pub fn apply_value(out: &mut ContainerPolicy, key: Key, value: Value) {
    let p = &mut out.policy;
    match (key, value) {
        (Key::Mode, Value::Mode(m)) => p.mode = m,
        (Key::FailurePolicy, Value::FailurePolicy(f)) => out.failure_policy = f,
        (Key::Drift, Value::Bool(b)) => p.rules.drift = b,
        (Key::Fileless, Value::Bool(b)) => p.rules.fileless = b,
        (Key::NonImage | Key::NonOverlay, Value::Bool(b)) => p.rules.non_image = b,
        (Key::ExecVolumes, Value::Paths(l)) => p.exec_volumes = l,
        (Key::AllowlistOnly, Value::Bool(b)) => p.rules.allowlist_only = b,
        (Key::ExecMemory, Value::Bool(b)) => p.rules.exec_memory = if b { ExecMemory::On } else { ExecMemory::Jit },
        (Key::ProcessAccess, Value::Bool(b)) => {
            p.rules.process_access = if b { ProcessAccess::On } else { ProcessAccess::Debug }
        }
        (Key::Allow, Value::Paths(l)) => p.allow = l,
        (Key::Deny, Value::Paths(l)) => p.deny = l,
        // parse_value returns the variant matching the key.
        _ => {}
    }
}

/// [`resolve`] on top of a `base` policy (the node default, or a node policy rule's), saying
/// which annotations took effect.
pub fn resolve_over<P, PK, PV, C, CK, CV>(
    base: ContainerPolicy,
    pod: P,
    container_name: &str,
    container: C,
) -> Result<Resolution, AnnotationError>
where
    P: IntoIterator<Item = (PK, PV)>,
    PK: AsRef<str>,
    PV: AsRef<str>,
    C: IntoIterator<Item = (CK, CV)>,
    CK: AsRef<str>,
    CV: AsRef<str>,
{
    let (pod_plain, pod_own) = parse_map(pod, container_name)?;
    let (ctr_plain, ctr_own) = parse_map(container, container_name)?;

    let mut out = base;
    let mut applied = Vec::new();
    for layer in [pod_plain, pod_own, ctr_plain, ctr_own] {
        for (k, s) in layer {
            apply_value(&mut out, k, s.value);
            applied.push(AppliedAnnotation { key: k, annotation: s.key, value: s.raw });
        }
    }
    let r = Resolution { policy: out, applied };
    if let Err(problem) = r.policy.policy.validate() {
        let last = |keys: &[Key]| r.last_of(keys).map(|a| (a.annotation.clone(), a.value.clone()));
        let sources = match problem {
            PolicyError::PathInBothLists(_) => last(&[Key::Allow]).into_iter().chain(last(&[Key::Deny])).collect(),
            PolicyError::TooManyExecVolumes { .. } | PolicyError::RuntimeMount(_) => {
                last(&[Key::ExecVolumes]).into_iter().collect()
            }
            _ => Vec::new(),
        };
        return Err(AnnotationError::InvalidPolicy { sources, problem });
    }
    Ok(r)
}

/// Whether any container of a pod with these annotations may end up under policy: the
/// node default mode is not off, or some `mode` key (pod-wide or per-container) is not
/// `off`. An invalid mode value counts as opted in, so that [`resolve`] reports it.
///
/// A cheap pre-check for the NRI plugin; it does not look at container annotations,
/// which can still opt a container in.
pub fn is_opted_in<P, K, V>(defaults: &Defaults, pod: P) -> bool
where
    P: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    if defaults.mode != Mode::Off {
        return true;
    }
    let mode_key = format!("{PREFIX}{}", Key::Mode.as_str());
    pod.into_iter().any(|(k, v)| {
        let k = k.as_ref();
        let is_mode = k == mode_key || k.strip_prefix(mode_key.as_str()).is_some_and(|r| r.starts_with('.'));
        is_mode && v.as_ref().trim() != Mode::Off.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rules;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn paths(ps: &[&str]) -> BTreeSet<ExecPath> {
        ps.iter().map(|p| ExecPath::new(p).unwrap()).collect()
    }

    fn res(pod: &[(&str, &str)], name: &str, ctr: &[(&str, &str)]) -> Result<ContainerPolicy, AnnotationError> {
        resolve(&Defaults::default(), &map(pod), name, &map(ctr))
    }

    fn err(pod: &[(&str, &str)], name: &str, ctr: &[(&str, &str)]) -> String {
        res(pod, name, ctr).unwrap_err().to_string()
    }

    #[test]
    fn no_annotations_gives_defaults() {
        let r = res(&[], "app", &[]).unwrap();
        assert_eq!(r, ContainerPolicy { policy: Policy::default(), failure_policy: FailurePolicy::Fail });
        let d = Defaults { mode: Mode::Monitor, failure_policy: FailurePolicy::Ignore };
        let r = resolve(&d, &map(&[("other.io/x", "y")]), "app", &map(&[])).unwrap();
        assert_eq!(r.policy, Policy::with_mode(Mode::Monitor));
        assert_eq!(r.failure_policy, FailurePolicy::Ignore);
    }

    #[test]
    fn pod_level_keys() {
        let r = res(
            &[
                ("driftguard.dev/mode", "enforce"),
                ("driftguard.dev/allow", " /usr/bin/curl , /bin/sh,/bin/sh"),
                ("driftguard.dev/deny", "/usr/bin/nc"),
                ("driftguard.dev/drift", "false"),
                ("driftguard.dev/fileless", "false"),
                ("driftguard.dev/non-image", "false"),
                ("driftguard.dev/allowlist-only", "true"),
                ("driftguard.dev/exec-memory", "false"),
                ("driftguard.dev/process-access", "false"),
                ("driftguard.dev/failure-policy", "ignore"),
                ("unrelated", "x"),
                ("driftguard.io/mdoe", "ignored: other prefix"),
            ],
            "app",
            &[],
        )
        .unwrap();
        assert_eq!(r.policy.mode, Mode::Enforce);
        assert_eq!(
            r.policy.rules,
            Rules {
                drift: false,
                fileless: false,
                non_image: false,
                allowlist_only: true,
                exec_memory: ExecMemory::Jit,
                process_access: ProcessAccess::Debug,
            }
        );
        assert_eq!(r.policy.allow, paths(&["/bin/sh", "/usr/bin/curl"]));
        assert_eq!(r.policy.deny, paths(&["/usr/bin/nc"]));
        assert_eq!(r.failure_policy, FailurePolicy::Ignore);
    }

    #[test]
    fn precedence() {
        let pod = [
            ("driftguard.dev/mode", "monitor"),
            ("driftguard.dev/mode.app", "enforce"),
            ("driftguard.dev/mode.sidecar", "off"),
            ("driftguard.dev/drift", "false"),
        ];
        assert_eq!(res(&pod, "app", &[]).unwrap().policy.mode, Mode::Enforce);
        assert_eq!(res(&pod, "sidecar", &[]).unwrap().policy.mode, Mode::Off);
        assert_eq!(res(&pod, "other", &[]).unwrap().policy.mode, Mode::Monitor);
        assert!(!res(&pod, "other", &[]).unwrap().policy.rules.drift);
        // container's own annotation beats the pod per-container key
        let r = res(&pod, "app", &[("driftguard.dev/mode", "monitor")]).unwrap();
        assert_eq!(r.policy.mode, Mode::Monitor);
        // a per-container key inside the container's annotations beats its plain key
        let r = res(&[], "app", &[("driftguard.dev/mode", "monitor"), ("driftguard.dev/mode.app", "enforce")]).unwrap();
        assert_eq!(r.policy.mode, Mode::Enforce);
        // failure policy: defaults < pod < per-container
        let d = Defaults { mode: Mode::Off, failure_policy: FailurePolicy::Ignore };
        let pod = map(&[("driftguard.dev/failure-policy.app", "fail")]);
        assert_eq!(resolve(&d, &pod, "app", &map(&[])).unwrap().failure_policy, FailurePolicy::Fail);
        assert_eq!(resolve(&d, &pod, "db", &map(&[])).unwrap().failure_policy, FailurePolicy::Ignore);
    }

    #[test]
    fn exec_memory_opt_out_per_container() {
        let pod = [("driftguard.dev/mode", "enforce"), ("driftguard.dev/exec-memory.jvm", "false")];
        assert_eq!(res(&pod, "jvm", &[]).unwrap().policy.rules.exec_memory, ExecMemory::Jit);
        assert_eq!(res(&pod, "sidecar", &[]).unwrap().policy.rules.exec_memory, ExecMemory::On);
        let on = [("driftguard.dev/exec-memory", "true")];
        assert_eq!(res(&on, "app", &[]).unwrap().policy.rules.exec_memory, ExecMemory::On);
        let bad = res(&[("driftguard.dev/exec-memory", "jit")], "app", &[]).unwrap_err().to_string();
        assert!(bad.contains("driftguard.dev/exec-memory") && bad.contains("jit"), "{bad}");
    }

    #[test]
    fn per_container_list_replaces() {
        let pod = [
            ("driftguard.dev/mode", "enforce"),
            ("driftguard.dev/allow", "/bin/sh,/usr/bin/curl"),
            ("driftguard.dev/allow.app", "/bin/sh"),
            ("driftguard.dev/deny.db", ""),
            ("driftguard.dev/deny", "/usr/bin/nc"),
        ];
        let r = res(&pod, "app", &[]).unwrap();
        assert_eq!(r.policy.allow, paths(&["/bin/sh"]));
        assert_eq!(r.policy.deny, paths(&["/usr/bin/nc"]));
        let r = res(&pod, "db", &[]).unwrap();
        assert_eq!(r.policy.allow, paths(&["/bin/sh", "/usr/bin/curl"]));
        assert!(r.policy.deny.is_empty(), "empty value clears the list");
        // replacing can resolve a pod-level conflict
        let pod = [
            ("driftguard.dev/allow", "/bin/sh"),
            ("driftguard.dev/deny", "/bin/sh"),
            ("driftguard.dev/deny.app", "/bin/nc"),
        ];
        assert!(res(&pod, "app", &[]).is_ok());
    }

    #[test]
    fn works_with_btreemap_and_slices() {
        let pod: BTreeMap<String, String> = [("driftguard.dev/mode".to_string(), "monitor".to_string())].into();
        let ctr: [(&str, &str); 1] = [("driftguard.dev/drift", "false")];
        let r = resolve(&Defaults::default(), &pod, "x", ctr).unwrap();
        assert_eq!(r.policy.mode, Mode::Monitor);
        assert!(!r.policy.rules.drift);
    }

    #[test]
    fn values_are_trimmed() {
        let r = res(&[("driftguard.dev/mode", " enforce\n"), ("driftguard.dev/drift", "false ")], "a", &[]).unwrap();
        assert_eq!(r.policy.mode, Mode::Enforce);
        assert!(!r.policy.rules.drift);
    }

    #[test]
    fn error_unknown_key() {
        assert_eq!(
            err(&[("driftguard.dev/mdoe", "enforce")], "app", &[]),
            "annotation \"driftguard.dev/mdoe\" = \"enforce\": unknown key \"mdoe\": expected one of mode, allow, deny, drift, fileless, non-image, exec-volumes, allowlist-only, exec-memory, process-access, failure-policy, optionally followed by .<container-name>"
        );
        assert!(matches!(
            res(&[], "app", &[("driftguard.dev/mdoe.app", "x")]),
            Err(AnnotationError::UnknownKey { name, .. }) if name == "mdoe"
        ));
        assert!(matches!(res(&[("driftguard.dev/", "x")], "app", &[]), Err(AnnotationError::UnknownKey { .. })));
    }

    #[test]
    fn error_malformed_key() {
        assert_eq!(
            err(&[("driftguard.dev/mode.", "enforce")], "app", &[]),
            "annotation \"driftguard.dev/mode.\" = \"enforce\": malformed per-container key: container name \"\" is empty"
        );
        assert_eq!(
            err(&[("driftguard.dev/mode.App", "enforce")], "App", &[]),
            "annotation \"driftguard.dev/mode.App\" = \"enforce\": malformed per-container key: container name \"App\" may contain only lower-case letters, digits and '-' (a DNS-1123 label)"
        );
        assert!(err(&[("driftguard.dev/mode.a.b", "enforce")], "a", &[])
            .contains("container name \"a.b\" may contain only"));
        assert_eq!(
            err(&[("driftguard.dev/mode.-a", "enforce")], "a", &[]),
            "annotation \"driftguard.dev/mode.-a\" = \"enforce\": malformed per-container key: container name \"-a\" must start and end with a letter or digit (a DNS-1123 label)"
        );
        let long = format!("driftguard.dev/mode.{}", "a".repeat(64));
        assert!(err(&[(&long, "off")], "a", &[]).ends_with("is longer than 63 characters"));
    }

    #[test]
    fn error_bad_values() {
        assert_eq!(
            err(&[("driftguard.dev/mode", "enforcing")], "app", &[]),
            "annotation \"driftguard.dev/mode\" = \"enforcing\": invalid mode \"enforcing\": expected one of off, monitor, enforce"
        );
        assert_eq!(
            err(&[("driftguard.dev/drift", "yes")], "app", &[]),
            "annotation \"driftguard.dev/drift\" = \"yes\": invalid boolean \"yes\": expected true or false"
        );
        assert_eq!(
            err(&[], "app", &[("driftguard.dev/failure-policy", "Fail")]),
            "annotation \"driftguard.dev/failure-policy\" = \"Fail\": invalid failure policy \"Fail\": expected one of fail, ignore"
        );
        assert_eq!(
            err(&[("driftguard.dev/allow", "/bin/sh,,/bin/ls")], "app", &[]),
            "annotation \"driftguard.dev/allow\" = \"/bin/sh,,/bin/ls\": entry 2 of the list is empty (entries are separated by ',')"
        );
        assert!(matches!(
            res(&[("driftguard.dev/deny", "/bin/sh,")], "app", &[]),
            Err(AnnotationError::InvalidValue { problem: ValueError::EmptyListEntry { index: 2 }, .. })
        ));
        assert_eq!(
            err(&[("driftguard.dev/deny", "/bin/sh, bin/nc")], "app", &[]),
            "annotation \"driftguard.dev/deny\" = \"/bin/sh, bin/nc\": entry 2 of the list: path \"bin/nc\" is not absolute: list entries are paths as seen inside the container, starting with '/'"
        );
        assert!(err(&[("driftguard.dev/deny", "/usr/../bin/nc")], "app", &[]).contains("is not normalized"));
    }

    #[test]
    fn other_containers_overrides_are_validated() {
        assert!(matches!(
            res(&[("driftguard.dev/mode.other", "enforcing")], "app", &[]),
            Err(AnnotationError::InvalidValue { key, .. }) if key == "driftguard.dev/mode.other"
        ));
        // valid ones are ignored
        assert_eq!(res(&[("driftguard.dev/mode.other", "enforce")], "app", &[]).unwrap().policy.mode, Mode::Off);
    }

    #[test]
    fn error_conflicting_lists() {
        assert_eq!(
            err(&[("driftguard.dev/allow", "/bin/sh"), ("driftguard.dev/deny.app", "/bin/nc,/bin/sh")], "app", &[]),
            "annotations \"driftguard.dev/allow\" = \"/bin/sh\" and \"driftguard.dev/deny.app\" = \"/bin/nc,/bin/sh\": path \"/bin/sh\" is on both the allow and the deny list"
        );
        assert!(matches!(
            res(&[("driftguard.dev/allow", "/a"), ("driftguard.dev/deny", "/a")], "x", &[]),
            Err(AnnotationError::InvalidPolicy { problem: PolicyError::PathInBothLists(p), .. }) if p == "/a"
        ));
    }

    #[test]
    fn describe_sources_forms() {
        assert_eq!(describe_sources(&[]), "resolved policy");
        assert_eq!(describe_sources(&[("k".into(), "v".into())]), "annotation \"k\" = \"v\"");
        let e = AnnotationError::InvalidPolicy { sources: vec![], problem: PolicyError::PathInBothLists("/x".into()) };
        assert_eq!(e.to_string(), "resolved policy: path \"/x\" is on both the allow and the deny list");
    }

    #[test]
    fn failure_policy_strings() {
        for f in [FailurePolicy::Fail, FailurePolicy::Ignore] {
            assert_eq!(f.as_str().parse::<FailurePolicy>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!(
            "x".parse::<FailurePolicy>().unwrap_err().to_string(),
            "invalid failure policy \"x\": expected one of fail, ignore"
        );
        assert_eq!(serde_json::to_string(&FailurePolicy::Ignore).unwrap(), "\"ignore\"");
    }

    #[test]
    fn exec_volumes_and_the_non_overlay_alias() {
        let r = res(
            &[("driftguard.dev/mode", "enforce"), ("driftguard.dev/exec-volumes", "/data, /opt/tools")],
            "app",
            &[],
        )
        .unwrap();
        assert!(r.policy.rules.non_image, "non-image is on by default");
        assert_eq!(r.policy.exec_volumes, paths(&["/data", "/opt/tools"]));
        // per-container list replaces the pod's
        let r = res(&[("driftguard.dev/exec-volumes", "/data"), ("driftguard.dev/exec-volumes.app", "")], "app", &[])
            .unwrap();
        assert!(r.policy.exec_volumes.is_empty());
        // the deprecated name still works; at one level non-image wins
        assert!(!res(&[("driftguard.dev/non-overlay", "false")], "app", &[]).unwrap().policy.rules.non_image);
        let both = [("driftguard.dev/non-overlay", "false"), ("driftguard.dev/non-image", "true")];
        assert!(res(&both, "app", &[]).unwrap().policy.rules.non_image);
        // runtime-made mounts are refused, naming the annotation
        let e = err(&[("driftguard.dev/exec-volumes", "/data,/dev/shm")], "app", &[]);
        assert!(e.contains("driftguard.dev/exec-volumes") && e.contains("/dev/shm"), "{e}");
        let e = err(&[("driftguard.dev/exec-volumes.app", "/etc/hosts")], "app", &[]);
        assert!(e.contains("driftguard.dev/exec-volumes.app") && e.contains("runtime"), "{e}");
        let e = err(&[("driftguard.dev/exec-volumes", "data")], "app", &[]);
        assert!(e.contains("not absolute"), "{e}");
    }

    #[test]
    fn opted_in() {
        let d = Defaults::default();
        assert!(!is_opted_in(&d, &map(&[])));
        assert!(!is_opted_in(&d, &map(&[("driftguard.dev/mode", "off"), ("driftguard.dev/drift", "true")])));
        assert!(is_opted_in(&d, &map(&[("driftguard.dev/mode", "monitor")])));
        assert!(is_opted_in(&d, &map(&[("driftguard.dev/mode.app", "enforce")])));
        assert!(is_opted_in(&d, &map(&[("driftguard.dev/mode", "bogus")])));
        assert!(!is_opted_in(&d, &map(&[("driftguard.dev/modex", "enforce")])));
        assert!(is_opted_in(&Defaults { mode: Mode::Monitor, ..d }, &map(&[])));
    }
}
