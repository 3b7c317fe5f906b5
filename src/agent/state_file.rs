//! `agent.json` in the state directory: which agent runs, and its NRI state, for
//! `driftguard status` (which works without the metrics endpoint, and as long as the pins can be
//! read). Rewritten atomically on every NRI state change; removed when the agent exits cleanly.
//! A file whose pid is gone says the agent died (SIGKILL, crash) and when it last knew anything.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name under the state directory.
pub const FILE: &str = crate::node_state::AGENT_FILE;

/// What the agent last wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The agent's pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, it
    /// tells the agent from a process that got its pid later.
    pub pid_start: u64,
    /// driftguard version.
    pub version: String,
    /// Unix time (s) the agent started.
    pub started: u64,
    /// `lsm` or `tracepoint_kill`.
    pub enforcement_path: String,
    /// The NRI socket it connects to.
    pub nri_socket: String,
    /// `connecting`, `unreachable`, `handshake` or `registered`.
    pub nri: String,
    /// Runtime name and version while registered, else the last connection error (may be empty).
    pub nri_detail: String,
    /// Unix time (s) of the last NRI state change.
    pub nri_since: u64,
    /// Where the programs find overlay's upper layer and whether its layout read was proved
    /// (`layout, proof failed: …` means every root-overlay file of a policied container is
    /// judged as drift). Empty in files of older agents.
    #[serde(default)]
    pub overlay_upper: String,
    /// The node policy (exclusions, rules, defaults) the agent loaded when it started; `None` in
    /// files of older agents.
    #[serde(default)]
    pub node_policy: Option<crate::rules::Written>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The agent's side: keeps the state and rewrites the file when it changes.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Mutex<AgentState>,
}

impl StateFile {
    /// Write the initial state (`connecting`). A write failure is logged, never fatal: the file
    /// is for `driftguard status` only.
    pub fn create(state_dir: &Path, enforcement_path: &str, nri_socket: &Path) -> StateFile {
        let t = now();
        let f = StateFile {
            path: state_dir.join(FILE),
            state: Mutex::new(AgentState {
                pid: std::process::id(),
                pid_start: process_start(std::process::id()).unwrap_or(0),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started: t,
                enforcement_path: enforcement_path.to_string(),
                nri_socket: nri_socket.display().to_string(),
                nri: "connecting".into(),
                nri_detail: String::new(),
                nri_since: t,
                overlay_upper: String::new(),
                node_policy: None,
            }),
        };
        if let Ok(s) = f.state.lock() {
            f.write(&s);
        }
        f
    }

    /// Record an NRI state; the file is rewritten only when the state or its detail changed.
    pub fn set_nri(&self, nri: &str, detail: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.nri == nri && s.nri_detail == detail {
            return;
        }
        if s.nri != nri {
            s.nri_since = now();
        }
        s.nri = nri.to_string();
        s.nri_detail = detail.to_string();
        self.write(&s);
    }

    /// Record where the programs find overlay's upper layer and how its proof went.
    pub fn set_overlay_upper(&self, text: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        s.overlay_upper = text.to_string();
        self.write(&s);
    }

    /// Record the node policy the agent runs with.
    pub fn set_node_policy(&self, policy: crate::rules::Written) {
        let Ok(mut s) = self.state.lock() else { return };
        s.node_policy = Some(policy);
        self.write(&s);
    }

    fn write(&self, s: &AgentState) {
        let tmp = self.path.with_extension("json.new");
        let res = serde_json::to_vec(s)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = res {
            tracing::debug!(file = %self.path.display(), error = %e, "cannot write the agent state file");
        }
    }

    /// Remove the file (clean exit).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What `driftguard status` makes of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    /// Whether the process that wrote the file still runs.
    pub running: bool,
    /// The file's content.
    #[serde(flatten)]
    pub state: AgentState,
}

/// Read the state file of `state_dir`; `None` when there is none (no agent ran since boot, or
/// the last one exited cleanly) or it cannot be parsed.
pub fn read(state_dir: &Path) -> Option<AgentView> {
    let text = std::fs::read(state_dir.join(FILE)).ok()?;
    let state: AgentState = serde_json::from_slice(&text).ok()?;
    let running = process_start(state.pid).is_some_and(|t| t == state.pid_start);
    Some(AgentView { running, state })
}

/// When process `pid` started (clock ticks since boot), if it exists.
fn process_start(pid: u32) -> Option<u64> {
    crate::host::process_start_ticks(pid)
}

/// "42s", "3m 5s", "2h 1m", "4d 3h".
pub fn ago(since: u64) -> String {
    let s = now().saturating_sub(since);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::create(dir.path(), "lsm", Path::new("/run/nri.sock"));
        let v = read(dir.path()).unwrap();
        assert_eq!(v.state.pid, std::process::id());
        assert!(v.running, "this process wrote the file and runs");
        assert_eq!(v.state.nri, "connecting");
        f.set_nri("registered", "containerd 1.7.24");
        let v = read(dir.path()).unwrap();
        assert_eq!((v.state.nri.as_str(), v.state.nri_detail.as_str()), ("registered", "containerd 1.7.24"));
        f.remove();
        assert!(read(dir.path()).is_none());
    }

    #[test]
    fn a_reused_pid_is_not_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::create(dir.path(), "lsm", Path::new("/run/nri.sock"));
        let mut s = f.state.lock().unwrap().clone();
        s.pid_start += 1;
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(!read(dir.path()).unwrap().running);
    }

    #[test]
    fn node_policy_recorded_and_files_of_older_agents_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::create(dir.path(), "lsm", Path::new("/run/nri.sock"));
        assert_eq!(read(dir.path()).unwrap().state.node_policy, None);
        let written = crate::rules::NodePolicy::default().written();
        f.set_node_policy(written.clone());
        assert_eq!(read(dir.path()).unwrap().state.node_policy, Some(written));
        // An agent from before the field wrote no `node_policy`.
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("node_policy");
        std::fs::write(dir.path().join(FILE), v.to_string()).unwrap();
        assert_eq!(read(dir.path()).unwrap().state.node_policy, None);
    }

    #[test]
    fn ages() {
        assert_eq!(ago(now()), "0s");
        assert_eq!(ago(now() - 185), "3m 5s");
    }
}
