//! Upgrading pinned state from an older layout without a gap in enforcement.
//!
//! driftguard 0.1 pinned `dg_policies` with 16-byte values (no root filesystem). A new agent
//! cannot reuse that map, so before loading it moves the old pin aside and reads the old entries
//! (the old programs, still attached through their pinned links, keep using the old map until
//! the new links replace them), lets the loader create the new map, writes every old policy into
//! it with the container's root filesystem read from a process of its cgroup, and removes the
//! old pin once the new programs are attached.

use std::collections::HashMap;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::abi::{self, RawPolicy};
use super::error::{Error, Result};
use super::store::MAP_POLICIES;
use crate::cgroup::CgroupRoot;
use crate::provenance;

/// Value size of `dg_policies` in driftguard 0.1.
const V1_POLICY_SIZE: u32 = 16;

/// Old policies read before the new map exists: cgroup id → (mode, rules, level, owner).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    entries: HashMap<u64, [u32; 4]>,
}

/// Where the old map is kept until the new programs are attached (bpffs names have no dots).
pub(crate) const V1_PIN: &str = "dg_policies_v1";

/// If `pin_dir` holds a 0.1 `dg_policies`, move its pin aside (to [`V1_PIN`], so a failed load
/// can be retried) and read it. The map itself lives on as long as the old programs' links do.
pub(crate) fn take_v1_policies(pin_dir: &Path) -> Result<Option<Pending>> {
    let current = pin_dir.join(MAP_POLICIES);
    let aside = pin_dir.join(V1_PIN);
    if current.exists() {
        let map = MapHandle::from_pinned_path(&current).map_err(|source| Error::Map {
            map: MAP_POLICIES,
            op: "open pinned",
            source,
        })?;
        if map.value_size() == V1_POLICY_SIZE {
            std::fs::rename(&current, &aside)
                .map_err(|e| Error::io(format!("moving the old {} aside", current.display()), e))?;
        }
    }
    if !aside.exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(&aside).map_err(|source| Error::Map {
        map: MAP_POLICIES,
        op: "open pinned",
        source,
    })?;
    let mut pending = Pending::default();
    for key in map.keys() {
        let Ok(k) = <[u8; 8]>::try_from(key.as_slice()) else { continue };
        let Ok(Some(v)) = map.lookup(&key, MapFlags::ANY) else { continue };
        if v.len() != V1_POLICY_SIZE as usize {
            continue;
        }
        let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        pending.entries.insert(u64::from_le_bytes(k), [w(0), w(4), w(8), w(12)]);
    }
    tracing::info!(policies = pending.entries.len(), "migrating policies pinned by driftguard 0.1");
    Ok(Some(pending))
}

/// Write the old policies into the new map. Each container's root filesystem is read from a
/// process in its cgroup; a cgroup without processes gets an unknown root (nothing in it counts
/// as image: fail closed). Rule bits keep their meaning (bit 2, non-overlay then, is non-image
/// now); the agent's next Synchronize re-applies each container's annotations.
pub(crate) fn restore(pending: Pending, policies: &MapHandle) -> Result<usize> {
    let root = CgroupRoot::detect().ok();
    let mut n = 0;
    for (cgroup_id, [mode, rules, level, owner]) in pending.entries {
        let rootfs_dev = root
            .as_ref()
            .and_then(|r| r.find_by_id(cgroup_id))
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .and_then(|procs| procs.lines().find_map(|l| l.trim().parse::<u32>().ok()))
            .and_then(|pid| provenance::of_pid(pid, Path::new("/"), &Default::default()).ok())
            .map(|p| p.rootfs_dev)
            .unwrap_or(0);
        if rootfs_dev == 0 {
            tracing::warn!(cgroup_id, "no process to read the root filesystem from: nothing in it counts as image");
        }
        let raw = RawPolicy {
            mode,
            rules: rules & !abi::DG_RULE_HAS_MOUNTS,
            level,
            owner,
            rootfs_dev,
            ..RawPolicy::default()
        };
        policies.update(&cgroup_id.to_le_bytes(), &raw.to_bytes(), MapFlags::ANY).map_err(|source| Error::Map {
            map: MAP_POLICIES,
            op: "migrate",
            source,
        })?;
        n += 1;
    }
    Ok(n)
}
