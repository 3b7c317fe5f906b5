//! Containers the agent has put under policy, by container id and by cgroup id.
//!
//! Persisted to `<state_dir>/containers.json` so that a restarted agent (and
//! `driftguard status`, `driftguard events`) can name the cgroups found in the
//! pinned maps before the runtime resynchronizes. Changes only mark the registry
//! dirty; [`Registry::flush`] (called by the agent every 100 ms and at shutdown)
//! writes it, so an NRI event never pays for rewriting the whole file. What is
//! enforced lives in the kernel maps, not here: losing the last 100 ms of this
//! file costs names on events until the next Synchronize, never protection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::policy::Mode;

/// What the container's root filesystem is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fstype")]
pub enum Rootfs {
    /// overlayfs: drift detection applies.
    Overlay,
    /// Another filesystem (devmapper, zfs, btrfs, native snapshotters): the drift rule cannot
    /// tell image files from written ones; deny/allow lists and the fileless rule still apply.
    Other(String),
    /// Not known (no pid to look at).
    Unknown,
}

/// One container under policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Runtime container id.
    pub container_id: String,
    /// Container name.
    pub container: String,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Image reference, if the runtime said.
    pub image: String,
    /// Cgroup v2 directory.
    pub cgroup_path: PathBuf,
    /// Cgroup v2 id (policy map key).
    pub cgroup_id: u64,
    /// Mode installed.
    pub mode: Mode,
    /// Root filesystem kind.
    pub rootfs: Rootfs,
    /// What set its mode (`rule:<name>`, `annotation`, `default`); `None` in a registry written
    /// by an agent from before policy rules, until the next Synchronize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_source: Option<crate::rules::PolicySource>,
    /// The pod's workload, guessed from its name and labels; `None` in a registry written by an
    /// agent from before the field, until the next Synchronize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<super::workload::Workload>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, ContainerInfo>,
    by_cgroup: HashMap<u64, String>,
}

/// Thread-safe registry.
#[derive(Default)]
pub struct Registry {
    state: RwLock<State>,
    file: Option<PathBuf>,
    dirty: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// An empty registry persisted to `file` (if given).
    pub fn new(file: Option<PathBuf>) -> Self {
        Registry { state: RwLock::new(State::default()), file, dirty: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Load a persisted registry; a missing or unreadable file gives an empty one (logged).
    pub fn load(file: PathBuf) -> Self {
        let reg = Registry::new(Some(file.clone()));
        match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<Vec<ContainerInfo>>(&bytes) {
                Ok(list) => {
                    for c in list {
                        reg.insert_no_save(c);
                    }
                }
                Err(e) => tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable container state"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot read container state"),
        }
        reg
    }

    /// Read a persisted registry without keeping it (for `status`, `events`).
    pub fn read_file(file: &Path) -> Vec<ContainerInfo> {
        std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn insert_no_save(&self, info: ContainerInfo) {
        if let Ok(mut s) = self.state.write() {
            if let Some(old) = s.by_id.get(&info.container_id).map(|o| o.cgroup_id) {
                s.by_cgroup.remove(&old);
            }
            s.by_cgroup.insert(info.cgroup_id, info.container_id.clone());
            s.by_id.insert(info.container_id.clone(), info);
        }
    }

    /// Add or replace a container.
    pub fn insert(&self, info: ContainerInfo) {
        self.insert_no_save(info);
        self.mark_dirty();
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Write the file if anything changed since the last flush.
    pub fn flush(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.save();
        }
    }

    /// Remove by container id.
    pub fn remove(&self, container_id: &str) -> Option<ContainerInfo> {
        let removed = self.state.write().ok().and_then(|mut s| {
            let info = s.by_id.remove(container_id)?;
            s.by_cgroup.remove(&info.cgroup_id);
            Some(info)
        });
        if removed.is_some() {
            self.mark_dirty();
        }
        removed
    }

    /// Look up by container id.
    pub fn get(&self, container_id: &str) -> Option<ContainerInfo> {
        self.state.read().ok()?.by_id.get(container_id).cloned()
    }

    /// Look up by cgroup id.
    pub fn by_cgroup(&self, cgroup_id: u64) -> Option<ContainerInfo> {
        let s = self.state.read().ok()?;
        let id = s.by_cgroup.get(&cgroup_id)?;
        s.by_id.get(id).cloned()
    }

    /// Everything, sorted by namespace/pod/container.
    pub fn snapshot(&self) -> Vec<ContainerInfo> {
        let mut v: Vec<ContainerInfo> =
            self.state.read().map(|s| s.by_id.values().cloned().collect()).unwrap_or_default();
        v.sort_by(|a, b| (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container)));
        v
    }

    /// Number of containers per mode.
    pub fn count_by_mode(&self) -> HashMap<Mode, usize> {
        let mut m = HashMap::new();
        if let Ok(s) = self.state.read() {
            for c in s.by_id.values() {
                *m.entry(c.mode).or_insert(0) += 1;
            }
        }
        m
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let list = self.snapshot();
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&list).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = result {
            tracing::warn!(file = %file.display(), error = %e, "cannot persist container state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, cg: u64) -> ContainerInfo {
        ContainerInfo {
            container_id: id.into(),
            container: format!("c-{id}"),
            pod: "p".into(),
            namespace: "ns".into(),
            pod_uid: "uid".into(),
            image: "img".into(),
            cgroup_path: PathBuf::from(format!("/sys/fs/cgroup/{id}")),
            cgroup_id: cg,
            mode: Mode::Enforce,
            rootfs: Rootfs::Overlay,
            policy_source: None,
            workload: None,
        }
    }

    #[test]
    fn insert_lookup_remove_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("containers.json");
        let r = Registry::new(Some(file.clone()));
        r.insert(info("a", 10));
        r.insert(info("b", 11));
        // Re-insert with a new cgroup id drops the old index entry.
        r.insert(info("a", 12));
        r.flush();
        assert!(r.by_cgroup(10).is_none());
        assert_eq!(r.by_cgroup(12).unwrap().container_id, "a");
        assert_eq!(r.count_by_mode().get(&Mode::Enforce), Some(&2));
        let reloaded = Registry::load(file.clone());
        assert_eq!(reloaded.snapshot(), r.snapshot());
        assert_eq!(r.remove("b").unwrap().cgroup_id, 11);
        assert!(r.remove("b").is_none());
        assert_eq!(Registry::read_file(&file).len(), 2, "not written before flush");
        r.flush();
        assert_eq!(Registry::read_file(&file).len(), 1);
    }

    #[test]
    fn corrupt_state_file_gives_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("containers.json");
        std::fs::write(&file, b"{not json").unwrap();
        assert!(Registry::load(file).snapshot().is_empty());
    }
}
