//! Node policy rules: policy for whole namespaces and label selectors, from the configuration
//! (`[[rules]]`, `[exclusions]`; docs/configuration.md#policy-rules).
//!
//! A container's base policy comes from, in this order, the first that applies:
//! 1. a built-in **exclusion** (`kube-system`, driftguard's own namespace): mode `off`;
//! 2. the first **rule** whose namespaces and selector match the pod: its mode and defaults;
//! 3. the node **default** (`default_mode`, `failure_policy`).
//!
//! The pod's and container's `driftguard.dev/` annotations then refine the base
//! ([`crate::annotations::resolve_over`]). [`PolicySource`] says which of these set the mode.
//!
//! The OCI hook knows a pod's namespace (from the runtime's annotations) but not its labels: for
//! it a rule with a selector *may* match ([`Pod::labels`] `None`), and [`NodePolicy::base`] takes
//! the strictest rule that could apply (docs/configuration.md#what-the-oci-hook-does-with-label-rules).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::annotations::{self, AnnotationError, ContainerPolicy, Defaults, Key, Resolution, Value};
use crate::policy::{Mode, Policy};

pub mod selector;
pub use selector::{Labels, NamespaceGlob, Requirement, Selector};

use crate::annotations::dns_label_problem;

/// The namespace of Kubernetes' own components.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The namespace driftguard's own kit installs into (the default of `[exclusions] own_namespace`).
pub const DEFAULT_OWN_NAMESPACE: &str = "driftguard-system";

/// One `[[rules]]` entry as written in the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name (`policy_source: "rule:<name>"`).
    pub name: String,
    /// Namespace names or globs; absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Kubernetes label selector (string form); absent: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The mode of matching pods.
    pub mode: String,
    /// Refuse containers whose annotations weaken the rule's policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbid_weakening: bool,
    /// Defaults of other annotation keys (`allow`, `exec-memory`, `failure-policy`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, RawValue>,
}

/// A default's value: a string as in an annotation, a boolean, or a list of paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawValue {
    /// `"…"`, as the annotation's value.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `["/a", "/b"]` for a list key.
    List(Vec<String>),
}

impl RawValue {
    /// The annotation form of the value.
    fn annotation_text(&self) -> String {
        match self {
            RawValue::Str(s) => s.clone(),
            RawValue::Bool(b) => b.to_string(),
            RawValue::List(l) => l.join(","),
        }
    }
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Namespaces it applies to; empty: every namespace.
    pub namespaces: Vec<NamespaceGlob>,
    /// Pods it applies to; `None`: every pod.
    pub selector: Option<Selector>,
    /// The policy it gives (mode and defaults), before annotations.
    pub policy: ContainerPolicy,
    /// Annotations may not weaken [`Rule::policy`] (the container is refused).
    pub forbid_weakening: bool,
    raw: RawRule,
}

/// Whether a rule applies to a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// It does.
    Yes,
    /// It does not.
    No,
    /// It might: it has a selector and the pod's labels are not known (the OCI hook).
    Maybe,
}

impl Rule {
    /// Validate a written rule against the node's failure policy default.
    pub fn new(raw: RawRule) -> Result<Rule, String> {
        let name = raw.name.clone();
        if let Some(p) = dns_label_problem(&name) {
            return Err(format!("invalid rule name {name:?}: {}", p.replace("container name", "name")));
        }
        let bad = |what: String| format!("rule {name:?}: {what}");
        let namespaces = match &raw.namespaces {
            None => Vec::new(),
            Some(list) if list.is_empty() => {
                return Err(bad("`namespaces` is empty (leave it out to mean every namespace)".into()))
            }
            Some(list) => list.iter().map(|n| NamespaceGlob::new(n)).collect::<Result<_, _>>().map_err(bad)?,
        };
        let selector =
            raw.selector.as_deref().map(Selector::parse).transpose().map_err(|e| bad(format!("selector: {e}")))?;
        let mode: Mode = raw.mode.parse().map_err(|e| bad(format!("{e}")))?;
        let mut policy = ContainerPolicy { policy: Policy::with_mode(mode), failure_policy: Default::default() };
        for (k, v) in &raw.defaults {
            let key = Key::from_name(k).ok_or_else(|| {
                bad(format!(
                    "unknown key {k:?} in defaults: expected one of allow, deny, drift, fileless, non-image, \
                     exec-volumes, allowlist-only, exec-memory, process-access, failure-policy"
                ))
            })?;
            if key == Key::Mode {
                return Err(bad("`mode` belongs to the rule itself, not to its defaults".into()));
            }
            let value: Value =
                annotations::parse_value(key, &v.annotation_text()).map_err(|e| bad(format!("defaults.{k}: {e}")))?;
            annotations::apply_value(&mut policy, key, value);
        }
        policy.policy.validate().map_err(|e| bad(format!("defaults: {e}")))?;
        Ok(Rule { name, namespaces, selector, policy, forbid_weakening: raw.forbid_weakening, raw })
    }

    /// Whether the rule applies to `pod`.
    pub fn matches(&self, pod: &Pod<'_>) -> Match {
        if !self.namespaces.is_empty() {
            let Some(ns) = pod.namespace else { return Match::No };
            if !self.namespaces.iter().any(|g| g.matches(ns)) {
                return Match::No;
            }
        }
        match (&self.selector, pod.labels) {
            (None, _) => Match::Yes,
            (Some(s), Some(l)) if s.matches(l) => Match::Yes,
            (Some(_), Some(_)) => Match::No,
            (Some(_), None) => Match::Maybe,
        }
    }

    /// Whether every pod `later` applies to is matched by `self` (so `later`, after `self`,
    /// never applies). Sufficient, not necessary: a `false` can still be a dead rule.
    fn covers(&self, later: &Rule) -> bool {
        let ns = self.namespaces.is_empty()
            || (!later.namespaces.is_empty()
                && later.namespaces.iter().all(|l| self.namespaces.iter().any(|g| g.covers(l))));
        let sel = match (&self.selector, &later.selector) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b.implies(a),
        };
        ns && sel
    }
}

impl TryFrom<RawRule> for Rule {
    type Error = String;
    fn try_from(raw: RawRule) -> Result<Self, Self::Error> {
        Rule::new(raw)
    }
}

impl From<Rule> for RawRule {
    fn from(r: Rule) -> RawRule {
        r.raw
    }
}

/// `[exclusions]`: namespaces no rule and no `default_mode` reaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exclusions {
    /// Exclude `kube-system`.
    pub kube_system: bool,
    /// driftguard's own namespace (its pods run host files, e.g. `node-setup`); `""`: none.
    pub own_namespace: String,
}

impl Default for Exclusions {
    fn default() -> Self {
        Exclusions { kube_system: true, own_namespace: DEFAULT_OWN_NAMESPACE.to_string() }
    }
}

impl Exclusions {
    /// The excluded namespaces, each with the name of its switch.
    pub fn namespaces(&self) -> Vec<(&str, &'static str)> {
        let mut out = Vec::new();
        if self.kube_system {
            out.push((KUBE_SYSTEM, "kube_system"));
        }
        if !self.own_namespace.is_empty() {
            out.push((self.own_namespace.as_str(), "own_namespace"));
        }
        out
    }

    /// Check the values (`own_namespace` is a namespace name or empty).
    pub fn validate(&self) -> Result<(), String> {
        if !self.own_namespace.is_empty() {
            if let Some(p) = dns_label_problem(&self.own_namespace) {
                return Err(format!("own_namespace {:?}: not a namespace name: it {p}", self.own_namespace));
            }
        }
        Ok(())
    }
}

/// What the node policy knows of a pod.
#[derive(Clone, Copy, Default)]
pub struct Pod<'a> {
    /// Its namespace; `None` when the runtime did not say (podman, plain runc).
    pub namespace: Option<&'a str>,
    /// Its labels; `None` when not known (the OCI hook).
    pub labels: Option<&'a dyn Labels>,
}

/// Which part of the node policy set a container's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PolicySource {
    /// The node default (`default_mode`).
    Default,
    /// A built-in exclusion of this namespace.
    Exclusion(String),
    /// The rule of this name.
    Rule(String),
    /// A `driftguard.dev/mode` annotation.
    Annotation,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Default => f.write_str("default"),
            PolicySource::Exclusion(ns) => write!(f, "exclusion:{ns}"),
            PolicySource::Rule(n) => write!(f, "rule:{n}"),
            PolicySource::Annotation => f.write_str("annotation"),
        }
    }
}

impl From<PolicySource> for String {
    fn from(s: PolicySource) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for PolicySource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.split_once(':') {
            _ if s == "default" => PolicySource::Default,
            _ if s == "annotation" => PolicySource::Annotation,
            Some(("rule", n)) => PolicySource::Rule(n.to_string()),
            Some(("exclusion", n)) => PolicySource::Exclusion(n.to_string()),
            _ => return Err(format!("unknown policy source {s:?}")),
        })
    }
}

/// A container's policy with where its mode came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The policy.
    pub policy: ContainerPolicy,
    /// What set its mode.
    pub source: PolicySource,
    /// What the annotations did on top of the base.
    pub resolution: Resolution,
}

/// A rule that can never apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule:?} never applies: every pod it matches is matched first by {by}{hint}")]
pub struct ShadowedRule {
    /// The dead rule.
    pub rule: String,
    /// Its index in `[[rules]]`.
    pub index: usize,
    /// `rule "x"` or `the exclusion of namespace "kube-system"`.
    pub by: String,
    /// How to fix it.
    pub hint: String,
}

/// A node policy as its configuration states it: what the agent records of the one it loaded
/// (`agent.json`), and what `driftguard status` shows and compares with the file as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// `[exclusions]`.
    pub exclusions: Exclusions,
    /// `[[rules]]`, in order, as written.
    pub rules: Vec<RawRule>,
    /// `default_mode`.
    pub default_mode: String,
    /// `failure_policy`.
    pub failure_policy: String,
}

/// The node's policy: exclusions, rules and defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePolicy {
    /// Built-in exclusions.
    pub exclusions: Exclusions,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// The node defaults.
    pub defaults: Defaults,
}

impl NodePolicy {
    /// As the configuration states it.
    pub fn written(&self) -> Written {
        Written {
            exclusions: self.exclusions.clone(),
            rules: self.rules.iter().map(|r| r.raw.clone()).collect(),
            default_mode: self.defaults.mode.to_string(),
            failure_policy: self.defaults.failure_policy.to_string(),
        }
    }

    /// Refuse a rule that can never apply (shadowed by an exclusion or an earlier rule), and
    /// duplicate names.
    pub fn check(&self) -> Result<(), ShadowedRule> {
        let mut names = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                return Err(ShadowedRule {
                    rule: r.name.clone(),
                    index: i,
                    by: format!("the earlier rule of the same name {:?}", r.name),
                    hint: " (rule names are unique)".into(),
                });
            }
            for (ns, switch) in self.exclusions.namespaces() {
                let excl = NamespaceGlob::new(ns).ok();
                if !r.namespaces.is_empty() && r.namespaces.iter().all(|g| excl.as_ref().is_some_and(|e| e.covers(g))) {
                    return Err(ShadowedRule {
                        rule: r.name.clone(),
                        index: i,
                        by: format!("the exclusion of namespace {ns:?}"),
                        hint: format!(
                            " (to put it under a rule, turn the exclusion off: [exclusions] {switch} = {})",
                            if switch == "kube_system" { "false" } else { "\"\"" }
                        ),
                    });
                }
            }
            if let Some(earlier) = self.rules[..i].iter().find(|e| e.covers(r)) {
                return Err(ShadowedRule {
                    rule: r.name.clone(),
                    index: i,
                    by: format!("rule {:?}", earlier.name),
                    hint: " (first match wins: move it before that rule, or narrow that rule)".into(),
                });
            }
        }
        Ok(())
    }

    /// The base policy of a pod's containers and where it comes from.
    ///
    /// With the labels unknown ([`Pod::labels`] `None`), the rules that may match up to the
    /// first that surely does (or the default) are the candidates, and the one with the
    /// strictest mode wins (the earliest of equals).
    pub fn base(&self, pod: &Pod<'_>) -> (ContainerPolicy, PolicySource) {
        let b = self.base_of(pod);
        (b.policy, b.source)
    }

    fn base_of(&self, pod: &Pod<'_>) -> Base {
        let (policy, source) = self.pick(pod);
        let guard = match &source {
            PolicySource::Rule(name) => self
                .rules
                .iter()
                .find(|r| &r.name == name && r.forbid_weakening)
                .map(|r| Guard { rule: r.name.clone(), sure: r.matches(pod) == Match::Yes }),
            _ => None,
        };
        Base { policy, source, guard }
    }

    fn pick(&self, pod: &Pod<'_>) -> (ContainerPolicy, PolicySource) {
        if let Some(ns) = pod.namespace {
            if let Some((excl, _)) = self.exclusions.namespaces().into_iter().find(|(e, _)| *e == ns) {
                let off = ContainerPolicy {
                    policy: Policy::with_mode(Mode::Off),
                    failure_policy: self.defaults.failure_policy,
                };
                return (off, PolicySource::Exclusion(excl.to_string()));
            }
        }
        let default = (
            ContainerPolicy {
                policy: Policy::with_mode(self.defaults.mode),
                failure_policy: self.defaults.failure_policy,
            },
            PolicySource::Default,
        );
        let mut best: Option<&Rule> = None;
        let mut surely: Option<&Rule> = None;
        for r in &self.rules {
            match r.matches(pod) {
                Match::No => continue,
                Match::Maybe => {
                    if best.is_none_or(|b| r.policy.policy.mode > b.policy.policy.mode) {
                        best = Some(r);
                    }
                }
                Match::Yes => {
                    surely = Some(r);
                    break;
                }
            }
        }
        let fallback_mode = surely.map_or(self.defaults.mode, |r| r.policy.policy.mode);
        match (best, surely) {
            (Some(b), _) if b.policy.policy.mode > fallback_mode => {
                (self.policy_of(b), PolicySource::Rule(b.name.clone()))
            }
            (_, Some(s)) => (self.policy_of(s), PolicySource::Rule(s.name.clone())),
            _ => default,
        }
    }

    /// A rule's policy; its failure policy is the node's unless the rule sets one.
    fn policy_of(&self, r: &Rule) -> ContainerPolicy {
        let mut p = r.policy.clone();
        if !r.raw.defaults.contains_key(Key::FailurePolicy.as_str()) {
            p.failure_policy = self.defaults.failure_policy;
        }
        p
    }

    /// The policy of container `container_name`: [`NodePolicy::base`], refined by the pod's and
    /// the container's annotations.
    pub fn resolve<P, PK, PV, C, CK, CV>(
        &self,
        pod: &Pod<'_>,
        pod_annotations: P,
        container_name: &str,
        container_annotations: C,
    ) -> Result<Resolved, AnnotationError>
    where
        P: IntoIterator<Item = (PK, PV)>,
        PK: AsRef<str>,
        PV: AsRef<str>,
        C: IntoIterator<Item = (CK, CV)>,
        CK: AsRef<str>,
        CV: AsRef<str>,
    {
        let Base { policy: base, source, guard } = self.base_of(pod);
        let mut resolution =
            annotations::resolve_over(base.clone(), pod_annotations, container_name, container_annotations)?;
        let mut clamped = false;
        if let Some(guard) = guard {
            if let Some((keys, what)) = weakening(&base, &resolution.policy) {
                if guard.sure {
                    let (key, value) =
                        resolution.last_of(&keys).map(|a| (a.annotation.clone(), a.value.clone())).unwrap_or_default();
                    return Err(AnnotationError::Forbidden { key, value, rule: guard.rule, what });
                }
                // A rule that only may apply (the OCI hook, labels unknown): keep the rule's
                // stricter value of everything the annotations weakened.
                clamp(&base, &mut resolution.policy);
                clamped = true;
                resolution
                    .policy
                    .policy
                    .validate()
                    .map_err(|problem| AnnotationError::InvalidPolicy { sources: Vec::new(), problem })?;
            }
        }
        // A mode annotation the hook's clamp undid did not set the mode.
        let clamped_mode = clamped && resolution.policy.policy.mode == base.policy.mode;
        let source =
            if resolution.mode_annotation().is_some() && !clamped_mode { PolicySource::Annotation } else { source };
        Ok(Resolved { policy: resolution.policy.clone(), source, resolution })
    }

    /// Whether any container of a pod may be put under policy: its base mode is not off, or an
    /// annotation could turn it on ([`annotations::is_opted_in`]).
    pub fn may_apply<P, K, V>(&self, pod: &Pod<'_>, pod_annotations: P) -> bool
    where
        P: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (base, _) = self.base(pod);
        let d = Defaults { mode: base.policy.mode, failure_policy: base.failure_policy };
        annotations::is_opted_in(&d, pod_annotations)
    }
}

/// The base of a pod, with the rule that forbids weakening it.
struct Base {
    policy: ContainerPolicy,
    source: PolicySource,
    guard: Option<Guard>,
}

struct Guard {
    rule: String,
    /// The rule surely applies (labels known, or no selector).
    sure: bool,
}

/// The first way `got` is weaker than `base`, with the annotation keys that can cause it.
pub fn weakening(base: &ContainerPolicy, got: &ContainerPolicy) -> Option<(Vec<Key>, String)> {
    use crate::policy::{ExecMemory, ProcessAccess};
    let (b, g) = (&base.policy, &got.policy);
    if g.mode < b.mode {
        return Some((vec![Key::Mode], format!("lowers the mode from {} to {}", b.mode, g.mode)));
    }
    let flags = [
        (b.rules.drift, g.rules.drift, vec![Key::Drift], "drift"),
        (b.rules.fileless, g.rules.fileless, vec![Key::Fileless], "fileless"),
        (b.rules.non_image, g.rules.non_image, vec![Key::NonImage, Key::NonOverlay], "non-image"),
        (b.rules.allowlist_only, g.rules.allowlist_only, vec![Key::AllowlistOnly], "allowlist-only"),
    ];
    for (was, is, keys, name) in flags {
        if was && !is {
            return Some((keys, format!("turns the {name} rule off")));
        }
    }
    if b.rules.exec_memory == ExecMemory::On && g.rules.exec_memory != ExecMemory::On {
        return Some((vec![Key::ExecMemory], "opts out of the exec-memory rule (the JIT opt-out)".into()));
    }
    if b.rules.process_access == ProcessAccess::On && g.rules.process_access != ProcessAccess::On {
        return Some((vec![Key::ProcessAccess], "opts out of the process-access rule (the debug opt-out)".into()));
    }
    if let Some(p) = g.allow.difference(&b.allow).next() {
        return Some((vec![Key::Allow], format!("adds {p} to the allow list")));
    }
    if let Some(p) = b.deny.difference(&g.deny).next() {
        return Some((vec![Key::Deny], format!("removes {p} from the deny list")));
    }
    if let Some(p) = g.exec_volumes.difference(&b.exec_volumes).next() {
        return Some((vec![Key::ExecVolumes], format!("exempts the volume {p} from the non-image rule")));
    }
    if base.failure_policy == annotations::FailurePolicy::Fail && got.failure_policy != base.failure_policy {
        return Some((vec![Key::FailurePolicy], "lets the container start unprotected (failure-policy ignore)".into()));
    }
    None
}

/// Undo every weakening of `base` in `got`, keeping what the annotations made stricter.
fn clamp(base: &ContainerPolicy, got: &mut ContainerPolicy) {
    use crate::policy::{ExecMemory, ProcessAccess};
    let (b, g) = (&base.policy, &mut got.policy);
    g.mode = g.mode.max(b.mode);
    g.rules.drift |= b.rules.drift;
    g.rules.fileless |= b.rules.fileless;
    g.rules.non_image |= b.rules.non_image;
    g.rules.allowlist_only |= b.rules.allowlist_only;
    if b.rules.exec_memory == ExecMemory::On {
        g.rules.exec_memory = ExecMemory::On;
    }
    if b.rules.process_access == ProcessAccess::On {
        g.rules.process_access = ProcessAccess::On;
    }
    g.allow = g.allow.intersection(&b.allow).cloned().collect();
    g.deny = g.deny.union(&b.deny).cloned().collect();
    g.exec_volumes = g.exec_volumes.intersection(&b.exec_volumes).cloned().collect();
    if base.failure_policy == annotations::FailurePolicy::Fail {
        got.failure_policy = base.failure_policy;
    }
}

#[cfg(test)]
mod tests;
