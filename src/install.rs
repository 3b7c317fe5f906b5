//! Putting one container under policy: the one install flow of the agent (NRI StartContainer,
//! Synchronize) and the OCI hook (createRuntime). Both callers resolve the container's cgroup
//! their own way (NRI's cgroups path; the hook's init pid), then [`prepare`] reads what the
//! policy needs — cgroup id and level, the container's provenance with the fail-closed refusal
//! of a root filesystem that is not overlayfs, the memory rules a running container keeps — and
//! [`Prepared::commit`] writes it into the pinned maps with its owner and drops a stale entry of
//! the same container id. A security rule of installation lives here once, so the fail-closed
//! path (the hook) and the normal one (the agent) cannot drift apart.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupError, CgroupRoot};
use crate::enforcer::{self, Owner, PolicyStore};
use crate::policy::{ExecMemory, Mode, Policy, ProcessAccess};
use crate::provenance::{self, ExecMount, Provenance, ProvenanceError};

/// Why a container could not be put under policy.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Its cgroup could not be read (id, level, processes).
    #[error("cgroup {}: {source}", cgroup.display())]
    Cgroup {
        /// The cgroup directory.
        cgroup: PathBuf,
        /// Cause.
        source: CgroupError,
    },
    /// Its provenance could not be read, or its root filesystem is refused.
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    /// The pinned maps refused the entry.
    #[error(transparent)]
    Enforcer(#[from] enforcer::Error),
}

/// The container as its caller found it.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    /// Its cgroup v2 directory.
    pub cgroup: &'a Path,
    /// Its init process; 0 when the runtime sent none (then the one process of its cgroup).
    pub pid: u32,
    /// Where its root is in that process's mount namespace: `/` once pivoted (NRI), the
    /// bundle's rootfs before (the hook at createRuntime; `/` is tried when it is not there).
    pub root: &'a Path,
    /// The root filesystem type known from an earlier install of this container id (the
    /// agent's registry), used with a provenance already pinned; `None` when not known.
    pub known_rootfs_type: Option<&'a str>,
}

/// What [`prepare`] found: ready to [`Prepared::commit`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The cgroup's id (the policy map's key).
    pub cgroup_id: u64,
    /// Its level below the cgroup root.
    pub level: u32,
    /// Its provenance: pinned before (kept), or read now.
    pub provenance: Provenance,
    /// The policy as it will be installed (see [`keep_pinned_memory_rules`]).
    pub policy: Policy,
}

/// Read what installing `policy` for `c` needs, without writing anything.
///
/// A provenance already pinned for the cgroup (resync, agent restart) is kept: it was read
/// before the entrypoint ran, and the container's processes may have changed their own mounts
/// since (a process that pivots into a filesystem of its own must not make that filesystem
/// "image"). Otherwise it is read now from the container's mountinfo. A root filesystem that is
/// not overlayfs is refused when the policy has the non-image rule (fail closed: the drift rule
/// could not tell image files from written ones).
pub fn prepare(
    store: &PolicyStore,
    root: &CgroupRoot,
    c: &Container<'_>,
    policy: &Policy,
) -> Result<Prepared, InstallError> {
    let cg_err = |source| InstallError::Cgroup { cgroup: c.cgroup.to_path_buf(), source };
    let cgroup_id = cgroup::cgroup_id(c.cgroup).map_err(cg_err)?;
    let level = root.level(c.cgroup).map_err(cg_err)?;
    let provenance = match pinned_provenance(store, cgroup_id, policy, c.known_rootfs_type) {
        Some(p) => p,
        None => read_provenance(c, policy)?,
    };
    let policy = keep_pinned_memory_rules(store, cgroup_id, policy);
    Ok(Prepared { cgroup_id, level, provenance, policy })
}

impl Prepared {
    /// Write the entry, owned by `owner`; then remove `stale`, the entry an earlier start of the
    /// same container id left on another cgroup.
    pub fn commit(&self, store: &PolicyStore, owner: Owner, stale: Option<u64>) -> Result<(), InstallError> {
        store.set_owned(self.cgroup_id, self.level, &self.policy, &self.provenance, owner)?;
        if let Some(old) = stale.filter(|old| *old != self.cgroup_id) {
            let _ = store.remove(old);
        }
        Ok(())
    }
}

fn pinned_provenance(
    store: &PolicyStore,
    cgroup_id: u64,
    policy: &Policy,
    known_rootfs_type: Option<&str>,
) -> Option<Provenance> {
    let (dev, ids) = store.provenance(cgroup_id).ok().flatten()?;
    if dev == 0 || ids.len() != policy.exec_volumes.len() {
        return None;
    }
    let exec_mounts = policy
        .exec_volumes
        .iter()
        .zip(ids)
        .map(|(path, mount_id)| ExecMount { path: path.clone(), mount_id })
        .collect();
    Some(Provenance { rootfs_dev: dev, rootfs_type: known_rootfs_type.unwrap_or_default().to_string(), exec_mounts })
}

fn read_provenance(c: &Container<'_>, policy: &Policy) -> Result<Provenance, ProvenanceError> {
    let pid = match c.pid {
        0 => init_process(c.cgroup)?,
        pid => pid,
    };
    let root = c.root.canonicalize().unwrap_or_else(|_| c.root.to_path_buf());
    let prov = match provenance::of_pid(pid, &root, policy) {
        // The runtime pivoted already (some run the hook later than createRuntime).
        Err(ProvenanceError::NoRoot { .. }) if root != Path::new("/") => {
            provenance::of_pid(pid, Path::new("/"), policy)?
        }
        other => other?,
    };
    if !prov.is_overlay() {
        if policy.rules.non_image {
            return Err(ProvenanceError::RootNotOverlay { fstype: prov.rootfs_type });
        }
        tracing::warn!(cgroup = %c.cgroup.display(), fstype = %prov.rootfs_type, "root filesystem is not overlayfs");
    }
    Ok(prov)
}

/// The container's init process when the runtime sent no pid. containerd does that when its own
/// task-state call to the shim fails (seen under load: StartContainer with pid 0). Before the
/// entrypoint runs, the container's cgroup holds exactly one process, runc's init waiting to be
/// started, and its mounts are the container's. Anything else is ambiguous: no guess is made.
pub fn init_process(cgroup_dir: &Path) -> Result<u32, ProvenanceError> {
    let procs = cgroup::procs(cgroup_dir).map_err(|source| ProvenanceError::CgroupProcs { source })?;
    match procs.as_slice() {
        [pid] => {
            tracing::info!(cgroup = %cgroup_dir.display(), pid, "runtime sent no pid; using the one process in the container's cgroup");
            Ok(*pid)
        }
        _ => Err(ProvenanceError::NoInitProcess { cgroup: cgroup_dir.to_path_buf(), count: procs.len() }),
    }
}

/// A container that started under an agent from before the memory rules (its pinned policy has
/// neither memory bit) keeps running without them until its next start: an upgrade of the node
/// agent must not start killing a running JIT (docs/annotations.md, "Upgrades"). A new
/// container has a new cgroup, so nothing is pinned for it and it gets `policy` as is.
pub fn keep_pinned_memory_rules(store: &PolicyStore, cgroup_id: u64, policy: &Policy) -> Policy {
    let mut policy = policy.clone();
    if let Ok(Some(pinned)) = store.get(cgroup_id) {
        if pinned.policy.mode == Mode::Off {
            return policy;
        }
        if pinned.policy.rules.exec_memory == ExecMemory::Off && policy.rules.exec_memory != ExecMemory::Off {
            tracing::info!(
                cgroup_id,
                "container started before this agent's memory rules: they apply from its next start"
            );
            policy.rules.exec_memory = ExecMemory::Off;
        }
        // The same for the process-access rule (a running debugger or profiler keeps working).
        if pinned.policy.rules.process_access == ProcessAccess::Off && policy.rules.process_access != ProcessAccess::Off
        {
            tracing::info!(
                cgroup_id,
                "container started before this agent's process-access rule: it applies from its next start"
            );
            policy.rules.process_access = ProcessAccess::Off;
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    // A plain directory with a cgroup.procs file stands in for a cgroup here (the file's format
    // is all init_process reads); tests/agent.rs sends pid 0 for a real runc container.
    fn cgroup_with(procs: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.procs"), procs).unwrap();
        d
    }

    #[test]
    fn init_process_is_the_one_process_of_the_cgroup() {
        assert_eq!(init_process(cgroup_with("4242\n").path()).unwrap(), 4242);
    }

    #[test]
    fn init_process_is_not_guessed() {
        let two = cgroup_with("4242\n4243\n");
        let e = init_process(two.path()).unwrap_err();
        assert!(matches!(e, ProvenanceError::NoInitProcess { count: 2, .. }), "{e}");
        assert!(e.to_string().contains("holds 2 processes"), "{e}");
        let none = cgroup_with("");
        assert!(matches!(init_process(none.path()), Err(ProvenanceError::NoInitProcess { count: 0, .. })));
        let gone = tempfile::tempdir().unwrap();
        let e = init_process(&gone.path().join("removed")).unwrap_err();
        assert!(matches!(e, ProvenanceError::CgroupProcs { source: CgroupError::NotFound { .. } }), "{e}");
    }
}
