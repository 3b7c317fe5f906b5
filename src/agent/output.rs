//! Enriched events: kernel verdicts joined with what the runtime told us, as JSON lines.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::registry::Registry;
use crate::enforcer::Event;

/// One JSON line of the event stream (`"event": "verdict"`): the kernel's [`Event`], every
/// field of it, joined with what the runtime told us about its container. Schema documented in
/// docs/events.md (a test checks the two agree); fields are only ever added.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    /// Always `"verdict"`.
    pub event: &'static str,
    /// RFC 3339 UTC time of the verdict.
    pub time: String,
    /// Node name.
    pub node: String,
    /// The container of the policy that applied (empty names when its cgroup is unknown).
    #[serde(flatten)]
    pub container: ContainerNames,
    /// The kernel's event.
    #[serde(flatten)]
    pub kernel: Event,
    /// Process-memory rules: the container of the process reached (`target`), found by the
    /// cgroup whose policy applies to it; empty names when that is not a known container
    /// (omitted when the event has no target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_container: Option<ContainerNames>,
}

/// Names of a container as the runtime reported them.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ContainerNames {
    /// Pod namespace (empty when the cgroup is not a known container).
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Runtime container id.
    pub container_id: String,
    /// Image reference.
    pub image: String,
    /// The pod's workload (`kind`, `name`), guessed from its name and labels (docs/events.md,
    /// "How `workload` is found"); empty strings when the container is not known.
    pub workload: super::workload::Workload,
    /// What set the container's mode: `rule:<name>`, `annotation`, `default` (empty when the
    /// container is not known, or was registered by an agent from before policy rules).
    pub policy_source: String,
}

/// A status line (`"event": "notice"`): things an operator must know that are not verdicts,
/// e.g. a container whose rootfs is not overlayfs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Notice {
    /// Always `"notice"`.
    pub event: &'static str,
    /// RFC 3339 time.
    pub time: String,
    /// Node.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// The pod's workload.
    pub workload: super::workload::Workload,
    /// What set the container's mode (as in verdicts; for `policy_kept`, of the kept policy).
    pub policy_source: String,
    /// Machine-readable reason, e.g. `rootfs_not_overlay`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// A container the agent refused (`"event": "admission"`, `"action": "refused"`): it never
/// ran. Schema in docs/events.md.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Refusal {
    /// Always `"admission"`.
    pub event: &'static str,
    /// RFC 3339 time.
    pub time: String,
    /// Node.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// Image reference.
    pub image: String,
    /// The pod's workload (from its name only when the OCI hook refused: it does not see labels).
    pub workload: super::workload::Workload,
    /// Always `"refused"`.
    pub action: &'static str,
    /// Who refused it: `agent` (NRI), or `oci-hook` (at `createRuntime`, reported by the agent
    /// afterwards).
    pub source: &'static str,
    /// Why, one of [`REFUSAL_REASONS`].
    pub reason: String,
    /// The offending annotation key (`annotation`, `forbidden_weakening`), else empty.
    pub key: String,
    /// The rule that forbids the weakening (`forbidden_weakening`), else empty.
    pub rule: String,
    /// The whole error, as the runtime reports it.
    pub message: String,
}

pub use crate::node_state::REFUSAL_REASONS;

/// Converts CLOCK_BOOTTIME nanoseconds (BPF timestamps) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_epoch: SystemTime,
}

/// CLOCK_BOOTTIME now, in ns: the clock of the kernel's event timestamps (`boot_ns`).
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec.max(0) as u64 * 1_000_000_000 + ts.tv_nsec.clamp(0, 999_999_999) as u64
}

impl BootClock {
    /// Sample both clocks now.
    pub fn now() -> Self {
        let since_boot = Duration::from_nanos(boot_ns());
        BootClock { boot_epoch: SystemTime::now().checked_sub(since_boot).unwrap_or(SystemTime::UNIX_EPOCH) }
    }

    /// Wall-clock time of a boot-time timestamp.
    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }
}

/// RFC 3339 with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Join a kernel event with the registry.
pub fn enrich(ev: &Event, node: &str, registry: &Registry, clock: &BootClock) -> Verdict {
    let names = |policy_cgroup_id: u64| {
        registry
            .by_cgroup(policy_cgroup_id)
            .map(|c| ContainerNames {
                namespace: c.namespace,
                pod: c.pod,
                container: c.container,
                container_id: c.container_id,
                image: c.image,
                workload: c.workload.unwrap_or_default(),
                policy_source: c.policy_source.map(String::from).unwrap_or_default(),
            })
            .unwrap_or_default()
    };
    Verdict {
        event: "verdict",
        time: rfc3339(clock.wall(ev.boot_ns)),
        node: node.to_string(),
        container: names(ev.policy_cgroup_id),
        kernel: ev.clone(),
        target_container: ev.target.as_ref().map(|t| names(t.policy_cgroup_id)),
    }
}

/// Where JSON lines go: stdout and/or an append-only file, rotated by size when asked.
pub struct Sinks {
    stdout: bool,
    file: Option<FileSink>,
}

/// The events file: appended to; with `max_bytes`, renamed to `.1` (`.1` to `.2`, … up to
/// `keep`, the oldest deleted) before a line would take it beyond `max_bytes`.
struct FileSink {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSink { path: path.to_path_buf(), file, size, max_bytes, keep })
    }

    fn rotated(&self, i: u32) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}.{i}", self.path.display()))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for i in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(i), self.rotated(i + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            if let Err(e) = self.rotate() {
                // Keep writing to the current file: an event lost is worse than a big file.
                tracing::warn!(file = %self.path.display(), error = %e, "rotating the event file failed");
            }
        }
        writeln!(self.file, "{line}")?;
        self.size += len;
        Ok(())
    }
}

impl Sinks {
    /// Open the sinks. The file is created if missing and appended to; `max_bytes` > 0 rotates
    /// it by size, keeping `keep` rotated files.
    pub fn open(stdout: bool, file: Option<&Path>, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let file = file.map(|p| FileSink::open(p, max_bytes, keep.max(1))).transpose()?;
        Ok(Sinks { stdout, file })
    }

    /// Write one line to every sink. Errors are logged, never fatal.
    pub fn write_line(&mut self, line: &str) {
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_line(line) {
                tracing::warn!(error = %e, "writing the event file failed");
            }
        }
    }
}

/// What the agent does with each verdict event: count it, enrich it, emit it as a JSON line.
pub fn publish(
    ev: &Event,
    node: &str,
    registry: &Registry,
    clock: &BootClock,
    metrics: &crate::agent::Metrics,
    output: &Output,
) {
    metrics.events.inc();
    let v = enrich(ev, node, registry, clock);
    // An aggregated monitor-mode memory alert stands for `count` checks.
    metrics
        .verdicts
        .with_label_values(&[ev.action.as_str(), ev.rule.as_str(), &v.container.namespace])
        .inc_by(u64::from(ev.count.unwrap_or(1)));
    match serde_json::to_string(&v) {
        Ok(line) => output.emit(&line),
        Err(e) => tracing::error!(error = %e, "serializing an event failed"),
    }
}

/// Fan-out of JSON lines: the configured sinks plus live subscribers (`driftguard events`).
pub struct Output {
    sinks: std::sync::Mutex<Sinks>,
    tx: tokio::sync::broadcast::Sender<String>,
}

impl Output {
    /// Wrap the sinks.
    pub fn new(sinks: Sinks) -> std::sync::Arc<Self> {
        let (tx, _) = tokio::sync::broadcast::channel(4096);
        std::sync::Arc::new(Output { sinks: std::sync::Mutex::new(sinks), tx })
    }

    /// Write a line everywhere.
    pub fn emit(&self, line: &str) {
        if let Ok(mut s) = self.sinks.lock() {
            s.write_line(line);
        }
        let _ = self.tx.send(line.to_string());
    }

    /// Live copy of every line from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::registry::{ContainerInfo, Rootfs};
    use crate::enforcer::{Action, FileKind, Hook, Rule};
    use crate::policy::Mode;

    #[test]
    fn enrich_joins_registry_and_serializes_schema() {
        let reg = Registry::new(None);
        reg.insert(ContainerInfo {
            container_id: "abc".into(),
            container: "app".into(),
            pod: "web-1".into(),
            namespace: "shop".into(),
            pod_uid: "u".into(),
            image: "nginx:1.27".into(),
            cgroup_path: "/sys/fs/cgroup/x".into(),
            cgroup_id: 42,
            mode: Mode::Enforce,
            rootfs: Rootfs::Overlay,
            policy_source: Some(crate::rules::PolicySource::Rule("payments".into())),
            workload: Some(super::super::workload::Workload { kind: "Deployment".into(), name: "web".into() }),
        });
        let ev = Event {
            boot_ns: 1_000_000_000,
            cgroup_id: 43,
            policy_cgroup_id: 42,
            pid: 7,
            tid: 7,
            ppid: 1,
            uid: 0,
            comm: "sh".into(),
            path: "/tmp/x".into(),
            rule: Rule::Drift,
            action: Action::Deny,
            hook: Hook::BprmCheck,
            file: FileKind::Upper,
            mode: Mode::Enforce,
            path_truncated: false,
            path_unresolved: false,
            path_image: true,
            mapping_unknown: false,
            prot: None,
            count: None,
            target: None,
            parent: crate::enforcer::Parent { pid: 1, comm: "containerd-shim".into(), ..Default::default() },
            args: Some(vec!["/tmp/x".into()]),
            args_truncated: false,
        };
        let v = enrich(&ev, "node-1", &reg, &BootClock::now());
        let j = serde_json::to_value(&v).unwrap();
        for (k, want) in [
            ("event", "verdict"),
            ("node", "node-1"),
            ("namespace", "shop"),
            ("pod", "web-1"),
            ("container", "app"),
            ("container_id", "abc"),
            ("image", "nginx:1.27"),
            ("path", "/tmp/x"),
            ("rule", "drift"),
            ("action", "deny"),
            ("hook", "bprm_check"),
            ("file", "upper"),
            ("mode", "enforce"),
            ("policy_source", "rule:payments"),
        ] {
            assert_eq!(j[k], want, "field {k}");
        }
        assert_eq!(j["pid"], 7);
        assert_eq!(j["tid"], 7);
        assert_eq!(j["boot_ns"], 1_000_000_000u64);
        assert_eq!(j["path_image"], true);
        assert!(j.get("path_truncated").is_none());
        assert!(j.get("path_unresolved").is_none());
        let partial = enrich(&Event { path_unresolved: true, ..ev.clone() }, "n", &reg, &BootClock::now());
        assert_eq!(serde_json::to_value(&partial).unwrap()["path_unresolved"], true);
        // Lossless: every field of the kernel event is in the line.
        let kernel = serde_json::to_value(&ev).unwrap();
        for (k, v) in kernel.as_object().unwrap() {
            assert_eq!(&j[k], v, "kernel field {k}");
        }
        assert!(j["time"].as_str().unwrap().ends_with('Z'));
        // Unknown cgroup: empty names, event still complete.
        let unknown = enrich(&Event { policy_cgroup_id: 9, ..ev.clone() }, "n", &reg, &BootClock::now());
        assert_eq!(unknown.container, ContainerNames::default());
        assert!(j.get("target_container").is_none() && j.get("target").is_none());
        // A process-memory event from an unknown cgroup into the known container: the target's
        // container is named, the caller's (unknown) is not.
        let target =
            crate::enforcer::Target { pid: 8, tid: 8, comm: "nginx".into(), cgroup_id: 42, policy_cgroup_id: 42 };
        let into = Event {
            policy_cgroup_id: 9,
            rule: Rule::ProcessAccess,
            file: FileKind::FromOtherContainer,
            target: Some(target),
            ..ev
        };
        let j = serde_json::to_value(enrich(&into, "n", &reg, &BootClock::now())).unwrap();
        assert_eq!(j["container"], "");
        assert_eq!(j["target"]["comm"], "nginx");
        assert_eq!(j["target_container"]["pod"], "web-1");
        assert_eq!(j["target_container"]["container"], "app");
    }

    /// Field names of the table under `## {section}` of docs/events.md, and the keys of the
    /// section's JSON example.
    fn documented(doc: &str, section: &str) -> (Vec<String>, Vec<String>, serde_json::Value, String) {
        let body = doc.split(&format!("## `{section}`")).nth(1).expect("section in docs/events.md");
        let body = body.split("\n## ").next().unwrap_or(body);
        let fields = body
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let example = body.split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).expect("JSON example");
        let v: serde_json::Value = serde_json::from_str(example).expect("the example is one JSON object");
        assert_eq!(v["event"], section);
        let keys = v.as_object().unwrap().keys().cloned().collect();
        (fields, keys, v, body.to_string())
    }

    fn keys(v: &impl Serialize) -> Vec<String> {
        serde_json::to_value(v).unwrap().as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn docs_events_md_matches_the_serialized_structs() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
        // Every optional field present: all bools true.
        let ev = Event {
            boot_ns: 1,
            cgroup_id: 2,
            policy_cgroup_id: 2,
            pid: 3,
            tid: 3,
            ppid: 1,
            uid: 0,
            comm: "sh".into(),
            path: "/x".into(),
            rule: Rule::Drift,
            action: Action::Deny,
            hook: Hook::BprmCheck,
            file: FileKind::Upper,
            mode: Mode::Enforce,
            path_truncated: true,
            path_unresolved: true,
            path_image: true,
            mapping_unknown: true,
            // Only exec_memory events carry these; set here so that every field is listed.
            prot: Some("rwx".into()),
            count: Some(1),
            // Only process-memory events carry these.
            target: Some(crate::enforcer::Target {
                pid: 4,
                tid: 4,
                comm: "app".into(),
                cgroup_id: 2,
                policy_cgroup_id: 2,
            }),
            parent: crate::enforcer::Parent {
                pid: 1,
                comm: "bash".into(),
                exe: "/bin/bash".into(),
                exe_truncated: true,
            },
            args: Some(vec!["/x".into(), "-v".into()]),
            args_truncated: true,
        };
        let verdict = enrich(&ev, "n", &Registry::new(None), &BootClock::now());
        let notice = Notice {
            event: "notice",
            time: String::new(),
            node: String::new(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            container_id: String::new(),
            workload: Default::default(),
            policy_source: String::new(),
            reason: String::new(),
            message: String::new(),
        };
        // The objects' fields: in the example, and named in the object's table row.
        let (_, _, example, body) = documented(&doc, "verdict");
        let code = serde_json::to_value(&verdict).unwrap();
        for object in ["target", "target_container", "parent"] {
            let sub_keys = |v: &serde_json::Value| {
                let mut k: Vec<String> = v[object].as_object().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(sub_keys(&example), sub_keys(&code), "docs/events.md example `{object}` fields");
            let row = body.lines().find(|l| l.starts_with(&format!("| `{object}` |"))).expect("table row");
            for k in sub_keys(&code) {
                assert!(row.contains(&format!("`{k}`")), "docs/events.md `{object}` row names `{k}`");
            }
        }
        let refusal = Refusal {
            event: "admission",
            time: String::new(),
            node: String::new(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            container_id: String::new(),
            image: String::new(),
            workload: Default::default(),
            action: "refused",
            source: "agent",
            reason: "annotation".into(),
            key: String::new(),
            rule: String::new(),
            message: String::new(),
        };
        // Every reason the code sends is in the `reason` row, and nothing else.
        let (_, _, _, body) = documented(&doc, "admission");
        let row = body.lines().find(|l| l.starts_with("| `reason` |")).expect("reason row");
        // The values: code spans followed by their explanation in parentheses.
        let parts: Vec<&str> = row.split('`').collect();
        let named: Vec<&str> = (3..parts.len())
            .step_by(2)
            .filter(|&i| parts.get(i + 1).is_some_and(|t| t.starts_with(" (")))
            .map(|i| parts[i])
            .collect();
        assert_eq!(named, REFUSAL_REASONS, "docs/events.md `admission` reason row");
        for (section, mut code) in
            [("verdict", keys(&verdict)), ("notice", keys(&notice)), ("admission", keys(&refusal))]
        {
            let (mut table, mut example, _, _) = documented(&doc, section);
            code.sort();
            table.sort();
            example.sort();
            assert_eq!(table, code, "docs/events.md `{section}` table vs the serialized struct");
            assert_eq!(example, code, "docs/events.md `{section}` example vs the serialized struct");
        }
    }

    #[test]
    fn the_event_file_rotates_by_size_and_keeps_n() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ev").join("events.jsonl");
        // 10 bytes per line ("123456789" + newline); at most 25 bytes: two lines per file.
        let mut s = Sinks::open(false, Some(&p), 25, 2).unwrap();
        for i in 0..7 {
            s.write_line(&format!("{i}00000000"));
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&p), "600000000\n");
        assert_eq!(read(&t.path().join("ev/events.jsonl.1")), "400000000\n500000000\n");
        assert_eq!(read(&t.path().join("ev/events.jsonl.2")), "200000000\n300000000\n");
        assert!(!t.path().join("ev/events.jsonl.3").exists(), "only `keep` rotated files");
        // a line longer than the limit still goes out, alone in its file
        let mut s = Sinks::open(false, Some(&p), 5, 2).unwrap();
        s.write_line("long-line");
        s.write_line("x");
        assert_eq!(read(&t.path().join("ev/events.jsonl.1")), "long-line\n");
        // 0: never rotated (logrotate's job); a reopened file counts its existing size
        let q = t.path().join("plain.jsonl");
        let mut s = Sinks::open(false, Some(&q), 0, 5).unwrap();
        for _ in 0..100 {
            s.write_line("0123456789");
        }
        assert!(!t.path().join("plain.jsonl.1").exists());
        let mut s = Sinks::open(false, Some(&q), 1105, 5).unwrap();
        s.write_line("0123456789");
        assert!(t.path().join("plain.jsonl.1").exists(), "the existing 1100 bytes count");
    }

    #[test]
    fn boot_clock_is_close_to_now() {
        let c = BootClock::now();
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let d = c.wall(ns).duration_since(SystemTime::now()).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_secs(1), "drift {d:?}");
    }
}
