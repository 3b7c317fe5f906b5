//! Which workload a pod belongs to, guessed from what NRI gives: the pod's name and labels
//! (owner references do not reach the node's runtime). The rules, in order, are in
//! docs/events.md ("How `workload` is found").

use serde::{Deserialize, Serialize};

use crate::rules::Labels;

/// A pod's workload: `kind` is `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`,
/// `ReplicaSet`, `Pod` (a pod of its own), or `unknown` (made by something else: `name` is the
/// best guess); both empty when the container is not known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The kind.
    pub kind: String,
    /// The name.
    pub name: String,
}

impl Workload {
    fn of(kind: &str, name: &str) -> Workload {
        Workload { kind: kind.to_string(), name: name.to_string() }
    }
}

/// The characters of the random suffixes Kubernetes generates (`rand.String`): no vowels, no
/// look-alikes.
const SUFFIX_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// `name` without a generated `-xxxxx` suffix, if it has one.
fn strip_generated(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == 5 && suffix.chars().all(|c| SUFFIX_ALPHABET.contains(c)) && !base.is_empty()).then_some(base)
}

/// `name` without a `-<digits>` suffix of at least `min` digits.
fn strip_number(name: &str, min: usize) -> Option<&str> {
    let (base, n) = name.rsplit_once('-')?;
    (n.len() >= min && n.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty()).then_some(base)
}

/// The workload of a pod named `pod` with `labels`.
pub fn of_pod(pod: &str, labels: &dyn Labels) -> Workload {
    let label = |k: &str| labels.label(k).filter(|v| !v.is_empty());
    if let Some(hash) = label("pod-template-hash") {
        // Deployment → ReplicaSet `<deployment>-<hash>` → pod `<replicaset>-<suffix>`.
        if let Some(rs) = strip_generated(pod) {
            return match rs.strip_suffix(hash).and_then(|d| d.strip_suffix('-')) {
                Some(d) if !d.is_empty() => Workload::of("Deployment", d),
                _ => Workload::of("ReplicaSet", rs),
            };
        }
    }
    if label("controller-revision-hash").is_some() {
        // StatefulSet pods are `<statefulset>-<ordinal>`; DaemonSet pods `<daemonset>-<suffix>`.
        if label("statefulset.kubernetes.io/pod-name").is_some() || label("apps.kubernetes.io/pod-index").is_some() {
            if let Some(s) = strip_number(pod, 1) {
                return Workload::of("StatefulSet", s);
            }
        }
        if label("pod-template-generation").is_some() {
            if let Some(d) = strip_generated(pod) {
                return Workload::of("DaemonSet", d);
            }
        }
    }
    if let Some(job) = label("batch.kubernetes.io/job-name").or_else(|| label("job-name")) {
        // A CronJob names its Jobs `<cronjob>-<scheduled time in minutes>`.
        return match strip_number(job, 8) {
            Some(c) => Workload::of("CronJob", c),
            None => Workload::of("Job", job),
        };
    }
    if let Some(app) = label("app.kubernetes.io/name") {
        return Workload::of("unknown", app);
    }
    match strip_generated(pod) {
        Some(base) => Workload::of("unknown", base),
        None => Workload::of("Pod", pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pod: &str, labels: &[(&str, &str)]) -> (String, String) {
        let l: std::collections::BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let w = of_pod(pod, &l);
        (w.kind, w.name)
    }

    fn is(kind: &str, name: &str) -> (String, String) {
        (kind.into(), name.into())
    }

    #[test]
    fn the_kinds_kubernetes_makes() {
        // kubectl create deployment web: ReplicaSet web-7d9f8c6b5d, pod web-7d9f8c6b5d-x2x4z
        assert_eq!(
            w("web-7d9f8c6b5d-x2x4z", &[("pod-template-hash", "7d9f8c6b5d"), ("app", "web")]),
            is("Deployment", "web")
        );
        assert_eq!(w("my-api-v2-5c8d7-bq9zt", &[("pod-template-hash", "5c8d7")]), is("Deployment", "my-api-v2"));
        // a bare ReplicaSet with a hash label that is not in its name
        assert_eq!(w("rs-abcde-bq9zt", &[("pod-template-hash", "zzz")]), is("ReplicaSet", "rs-abcde"));
        assert_eq!(
            w("db-2", &[("controller-revision-hash", "db-6b4f9"), ("statefulset.kubernetes.io/pod-name", "db-2")]),
            is("StatefulSet", "db")
        );
        assert_eq!(
            w("driftguard-x7k2p", &[("controller-revision-hash", "5d8c"), ("pod-template-generation", "1")]),
            is("DaemonSet", "driftguard")
        );
        assert_eq!(
            w("migrate-4fz8q", &[("batch.kubernetes.io/job-name", "migrate"), ("job-name", "migrate")]),
            is("Job", "migrate")
        );
        assert_eq!(w("backup-29412345-kz8wd", &[("job-name", "backup-29412345")]), is("CronJob", "backup"));
        // a pod of its own
        assert_eq!(w("drift-demo", &[]), is("Pod", "drift-demo"));
    }

    #[test]
    fn guesses_say_unknown() {
        assert_eq!(w("x-operator-made-0", &[("app.kubernetes.io/name", "kafka")]), is("unknown", "kafka"));
        assert_eq!(w("runner-bq9zt", &[]), is("unknown", "runner"), "a generated suffix");
        // not a generated suffix (vowels), not a hash match
        assert_eq!(w("web-abcde", &[]), is("Pod", "web-abcde"));
        assert_eq!(
            w("web-7d9f-x2x4z", &[("pod-template-hash", "")]),
            is("unknown", "web-7d9f"),
            "an empty label is no label"
        );
        // controller-revision-hash without the other labels: not enough to tell
        assert_eq!(w("db-0", &[("controller-revision-hash", "h")]), is("Pod", "db-0"));
    }
}
