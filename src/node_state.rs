//! What driftguard keeps outside bpffs, and which pin dir each piece belongs to: the agent's
//! state directory (its container registry, events socket and `agent.json`) and the OCI hook's
//! records. Two enforcements can share a node (a test's private pin dir next to the node's
//! agent, or two configurations): `driftguard unload` removes exactly what belongs to the pin
//! dir it unloads and says what it kept and why ([`release`]).
//!
//! - The agent's state directory names its pin dir in [`OWNER_FILE`], written when the agent
//!   starts ([`claim`]). A state directory without it was written by an agent from before the
//!   file: it belongs to [`DEFAULT_PIN_DIR`].
//! - Each OCI hook record names the pin dir its policy went to ([`HookRecord::pin_dir`]). A
//!   record without the field was written by a hook from before it, which used the configured
//!   pin dir, by default [`DEFAULT_PIN_DIR`]: it is read as belonging there (its poststop removes
//!   its entry there; an unload of that pin dir removes it).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The pin dir of the default configuration (`[bpf] pin_dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/driftguard";

/// Where the agent keeps runtime state (container registry, events socket, `agent.json`, and
/// the OCI hook's records under [`HOOK_RECORDS`]).
pub const DEFAULT_STATE_DIR: &str = "/run/driftguard";

/// The state directory: `$DRIFTGUARD_STATE_DIR` or [`DEFAULT_STATE_DIR`].
pub fn state_dir() -> PathBuf {
    std::env::var_os("DRIFTGUARD_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// File in the agent's state directory naming the pin dir its state describes.
pub const OWNER_FILE: &str = "pin_dir";

/// Directory of the OCI hook's records under the agent's state directory.
pub const HOOK_RECORDS: &str = "oci";

/// Where the OCI hook keeps its records when neither `--state-dir` nor `[oci_hook] state_dir`
/// says otherwise: [`HOOK_RECORDS`] under [`DEFAULT_STATE_DIR`].
pub const DEFAULT_HOOK_STATE_DIR: &str = "/run/driftguard/oci";

/// Directory, under the hook's state directory, of the refusals the OCI hook records for the
/// agent to report as events and metrics ([`HookRefusal`]).
pub const REFUSALS: &str = "refused";

/// Most refusals kept waiting for an agent; beyond, the hook only reports to the runtime.
pub const MAX_REFUSALS: usize = 1000;

/// Every reason a container is refused for: the `reason` of an `admission` event and the label
/// of `driftguard_containers_refused_total` (docs/events.md). The last two come only from the
/// OCI hook: its config file is invalid, or the runtime gave it an unusable state or bundle.
pub const REFUSAL_REASONS: [&str; 7] =
    ["annotation", "forbidden_weakening", "cgroup", "provenance", "install", "config", "hook_input"];

/// A container the OCI hook refused, recorded for the agent (`<hook state dir>/refused/<id>.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookRefusal {
    /// RFC 3339 time of the refusal.
    pub time: String,
    /// Container id.
    pub container_id: String,
    /// Pod namespace, pod and container name, image: from the runtime's annotations.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Image reference.
    pub image: String,
    /// One of [`REFUSAL_REASONS`].
    pub reason: String,
    /// The offending annotation key, if any.
    pub key: String,
    /// The rule that forbids the weakening, if any.
    pub rule: String,
    /// The hook's error.
    pub message: String,
}

/// Record `r` under `hook_state_dir` for the agent. `Ok(false)`: [`MAX_REFUSALS`] are already
/// waiting, nothing written.
pub fn record_refusal(hook_state_dir: &Path, r: &HookRefusal) -> io::Result<bool> {
    let dir = hook_state_dir.join(REFUSALS);
    std::fs::create_dir_all(&dir)?;
    if std::fs::read_dir(&dir)?.count() >= MAX_REFUSALS {
        return Ok(false);
    }
    let name = format!("{}-{}.json", r.container_id, std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(r).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(true)
}

/// Take the refusals waiting under `hook_state_dir` (each file is removed once read), oldest
/// first; an unreadable one comes back as its path and the problem.
pub fn take_refusals(hook_state_dir: &Path) -> Vec<Result<HookRefusal, (PathBuf, String)>> {
    let Ok(entries) = std::fs::read_dir(hook_state_dir.join(REFUSALS)) else { return Vec::new() };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')))
        .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| {
            let r = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<HookRefusal>(&b).map_err(|e| e.to_string()));
            let _ = std::fs::remove_file(&p);
            r.map_err(|e| (p, e))
        })
        .collect()
}

/// The agent's container registry in its state directory.
pub const REGISTRY_FILE: &str = "containers.json";

/// The agent's events socket in its state directory.
pub const EVENTS_SOCKET: &str = "events.sock";

/// The agent's own state (`driftguard status`) in its state directory.
pub const AGENT_FILE: &str = "agent.json";

/// The agent's files in its state directory (besides [`OWNER_FILE`] and [`HOOK_RECORDS`]).
pub const AGENT_FILES: [&str; 3] = [REGISTRY_FILE, EVENTS_SOCKET, AGENT_FILE];

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

/// What the OCI hook's createRuntime stored for poststop (`<hook state dir>/<id>`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// Container id.
    pub container_id: String,
    /// cgroup v2 id the policy was installed for.
    pub cgroup_id: u64,
    /// The cgroup directory (for humans).
    pub cgroup: PathBuf,
    /// Its level below the cgroup root.
    pub level: u32,
    /// Pin dir the policy was written to ([`DEFAULT_PIN_DIR`] in records from before the field).
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Installed mode.
    pub mode: String,
    /// What set the mode (`rule:<name>`, `annotation`, `default`); empty in records from
    /// before policy rules.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_source: String,
}

/// The pin dir the state in `state_dir` belongs to: what [`OWNER_FILE`] says, else
/// [`DEFAULT_PIN_DIR`] (an agent from before the file). `Err` when the file cannot be read.
pub fn owner(state_dir: &Path) -> io::Result<PathBuf> {
    match std::fs::read_to_string(state_dir.join(OWNER_FILE)) {
        Ok(s) => Ok(PathBuf::from(s.trim_end_matches('\n'))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(default_pin_dir()),
        Err(e) => Err(e),
    }
}

/// The agent's side: record that `state_dir` now describes `pin_dir`. Returns the pin dir it
/// described before when that was another one (the caller says so: the registry in it named
/// that pin dir's containers).
pub fn claim(state_dir: &Path, pin_dir: &Path) -> io::Result<Option<PathBuf>> {
    let file = state_dir.join(OWNER_FILE);
    let before = file.exists().then(|| owner(state_dir)).transpose()?;
    let tmp = state_dir.join(format!("{OWNER_FILE}.tmp"));
    std::fs::write(&tmp, format!("{}\n", pin_dir.display()))?;
    std::fs::rename(&tmp, &file)?;
    Ok(before.filter(|b| b != pin_dir))
}

/// Something [`release`] left in place, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The file or directory.
    pub path: PathBuf,
    /// Why it stays.
    pub reason: String,
}

/// What [`release`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Released {
    /// Removed.
    pub removed: Vec<PathBuf>,
    /// Left in place: another pin dir's, or not removable (the reason says which).
    pub kept: Vec<Kept>,
}

impl Released {
    fn keep(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.kept.push(Kept { path, reason: reason.into() });
    }

    fn remove(&mut self, path: PathBuf) {
        let r = if path.is_dir() { std::fs::remove_dir(&path) } else { std::fs::remove_file(&path) };
        match r {
            Ok(()) => self.removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.keep(path, format!("cannot remove: {e}")),
        }
    }
}

/// Remove what in `state_dir` belongs to `pin_dir`: the agent's files when the state directory
/// is that pin dir's, each OCI hook record under `state_dir/oci` that names it, and the two
/// directories once empty. Everything else stays, listed in [`Released::kept`].
pub fn release(state_dir: &Path, pin_dir: &Path) -> Released {
    let mut out = Released::default();
    release_hook_records(&state_dir.join(HOOK_RECORDS), pin_dir, &mut out);
    match owner(state_dir) {
        Err(e) => out.keep(state_dir.join(OWNER_FILE), format!("cannot read: {e}; the agent's state stays")),
        Ok(o) if o != pin_dir => {
            for f in AGENT_FILES {
                let p = state_dir.join(f);
                if p.exists() {
                    out.keep(p, format!("the agent state of pin dir {}", o.display()));
                }
            }
        }
        Ok(_) => {
            for f in AGENT_FILES.iter().chain(&[OWNER_FILE]) {
                out.remove(state_dir.join(f));
            }
        }
    }
    if std::fs::read_dir(state_dir).is_ok_and(|mut d| d.next().is_none()) {
        out.remove(state_dir.to_path_buf());
    }
    out
}

fn release_hook_records(dir: &Path, pin_dir: &Path, out: &mut Released) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return out.keep(dir.to_path_buf(), format!("cannot list: {e}")),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.file_name().is_some_and(|n| n == REFUSALS) {
            // Not a pin dir's: refusals waiting for an agent to report them.
            if std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none()) {
                out.remove(p);
            } else {
                out.keep(p, "refusals the OCI hook recorded for an agent to report".to_string());
            }
            continue;
        }
        let record = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<HookRecord>(&b).map_err(|e| e.to_string()));
        match record {
            Ok(r) if r.pin_dir == pin_dir => out.remove(p),
            Ok(r) => out.keep(p, format!("an OCI hook record of pin dir {}", r.pin_dir.display())),
            Err(e) => out.keep(p, format!("not an OCI hook record ({e})")),
        }
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        out.remove(dir.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, pin_dir: Option<&str>) -> String {
        let mut v = serde_json::json!({
            "container_id": id, "cgroup_id": 7, "cgroup": "/sys/fs/cgroup/x", "level": 1, "mode": "enforce"
        });
        if let Some(p) = pin_dir {
            v["pin_dir"] = p.into();
        }
        v.to_string()
    }

    #[test]
    fn refusals_are_recorded_and_taken_once() {
        let t = tempfile::tempdir().unwrap();
        let r = HookRefusal { container_id: "c1".into(), reason: "annotation".into(), ..Default::default() };
        assert!(record_refusal(t.path(), &r).unwrap());
        std::fs::write(t.path().join(REFUSALS).join("junk.json"), "{").unwrap();
        let got = take_refusals(t.path());
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|g| g.as_ref().ok() == Some(&r)));
        assert!(got.iter().any(|g| g.as_ref().is_err_and(|(p, _)| p.ends_with("junk.json"))));
        assert!(take_refusals(t.path()).is_empty(), "taken once");
        assert!(take_refusals(&t.path().join("missing")).is_empty());
    }

    #[test]
    fn a_record_without_pin_dir_belongs_to_the_default() {
        let r: HookRecord = serde_json::from_str(&record("a", None)).unwrap();
        assert_eq!(r.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
    }

    #[test]
    fn release_takes_only_what_names_its_pin_dir() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        std::fs::create_dir_all(state.join(HOOK_RECORDS)).unwrap();
        for f in AGENT_FILES {
            std::fs::write(state.join(f), "x").unwrap();
        }
        assert_eq!(claim(&state, Path::new("/sys/fs/bpf/other")).unwrap(), None);
        std::fs::write(state.join("oci/mine"), record("mine", Some("/sys/fs/bpf/mine"))).unwrap();
        std::fs::write(state.join("oci/theirs"), record("theirs", Some("/sys/fs/bpf/other"))).unwrap();
        std::fs::write(state.join("oci/old"), record("old", None)).unwrap();
        std::fs::write(state.join("oci/junk"), "{").unwrap();

        let r = release(&state, Path::new("/sys/fs/bpf/mine"));
        assert_eq!(r.removed, vec![state.join("oci/mine")]);
        let kept: Vec<&Path> = r.kept.iter().map(|k| k.path.as_path()).collect();
        assert!(kept.contains(&state.join("oci/theirs").as_path()), "{r:?}");
        assert!(kept.contains(&state.join("oci/junk").as_path()), "{r:?}");
        assert!(kept.contains(&state.join("containers.json").as_path()), "{r:?}");
        assert!(state.join("events.sock").exists() && state.join("oci/old").exists());

        // The default pin dir takes the record from before the field; the agent's state is other's.
        let r = release(&state, Path::new(DEFAULT_PIN_DIR));
        assert_eq!(r.removed, vec![state.join("oci/old")]);

        // The owner's unload takes its record, the agent's files, and the directories once empty.
        std::fs::remove_file(state.join("oci/junk")).unwrap();
        let r = release(&state, Path::new("/sys/fs/bpf/other"));
        assert!(r.kept.is_empty(), "{r:?}");
        assert!(!state.exists(), "{r:?}");
        assert!(r.removed.contains(&state.join(OWNER_FILE)) && r.removed.contains(&state));
    }

    #[test]
    fn claim_says_when_the_state_described_another_pin_dir() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(owner(t.path()).unwrap(), PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(claim(t.path(), Path::new("/sys/fs/bpf/a")).unwrap(), None);
        assert_eq!(claim(t.path(), Path::new("/sys/fs/bpf/a")).unwrap(), None);
        assert_eq!(claim(t.path(), Path::new("/sys/fs/bpf/b")).unwrap(), Some(PathBuf::from("/sys/fs/bpf/a")));
        assert_eq!(owner(t.path()).unwrap(), PathBuf::from("/sys/fs/bpf/b"));
    }
}
