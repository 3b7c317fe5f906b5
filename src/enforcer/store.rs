//! Per-cgroup policy in the kernel maps.
//!
//! [`PolicyStore`] works on map file descriptors only, so the agent (which
//! loaded the programs), the OCI hook and `driftguard status` (which open the
//! pinned maps) share one implementation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::abi::{self, RawPolicy};
use super::error::{Error, Result};
use crate::policy::{ExecPath, ListKind, Mode, Policy};
use crate::provenance::Provenance;

pub(crate) const MAP_POLICIES: &str = "dg_policies";
pub(crate) const MAP_PATHS: &str = "dg_paths";
pub(crate) const MAP_LEVELS: &str = "dg_level_mask";
/// The per-level array of earlier builds (replaced by `dg_level_mask`); a pin of it is
/// removed once the new programs are attached.
pub(crate) const LEGACY_MAP_LEVELS: &str = "dg_levels";
pub(crate) const MAP_EVENTS: &str = "dg_events";
pub(crate) const MAP_STATS: &str = "dg_stats";

/// Who installed a policy. Reconciliation only removes what its own kind installed,
/// so the NRI agent never drops entries an OCI hook made on the same node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// The agent, from NRI.
    Agent,
    /// `driftguard-oci-hook`.
    OciHook,
    /// Something else (tests, tools).
    Other,
}

impl Owner {
    fn as_raw(self) -> u32 {
        match self {
            Owner::Agent => 1,
            Owner::OciHook => 2,
            Owner::Other => 0,
        }
    }

    fn from_raw(v: u32) -> Owner {
        match v {
            1 => Owner::Agent,
            2 => Owner::OciHook,
            _ => Owner::Other,
        }
    }
}

/// A policy as read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPolicy {
    /// Cgroup v2 id the policy is keyed by.
    pub cgroup_id: u64,
    /// Depth of the cgroup (root = 0).
    pub level: u32,
    /// Who installed it.
    pub owner: Owner,
    /// The policy (lists included; `exec_volumes` is not stored in the kernel, only the
    /// mount ids it resolved to).
    pub policy: Policy,
    /// `s_dev` of the container's root filesystem (kernel encoding; 0 = unknown).
    pub rootfs_dev: u64,
    /// Mount ids exempt from the non-image rule.
    pub exec_mount_ids: Vec<u32>,
}

/// Counters kept by the BPF programs (summed over CPUs, cumulative since first load).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Events written to the ring buffer.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub ringbuf_drops: u64,
    /// Execs/mappings denied with EPERM.
    pub denies: u64,
    /// Processes killed (fallback path).
    pub kills: u64,
    /// Rule matches in monitor mode.
    pub alerts: u64,
    /// Paths that could not be resolved fully.
    pub path_errors: u64,
    /// Checks made for processes under policy.
    pub checks: u64,
    /// Overlay upper-layer reads that could not be trusted (file kind `upper_unknown`: the
    /// layout read was implausible, or its start-time proof failed).
    pub overlay_unknown: u64,
}

/// Handles to the policy maps.
#[derive(Debug)]
pub struct PolicyStore {
    policies: MapHandle,
    paths: MapHandle,
    levels: LevelMask,
    stats: MapHandle,
    index: KeyIndex,
}

/// The `dg_paths` keys this process wrote, per cgroup, with the owner it wrote them as.
/// Replacing or removing a policy with lists looks here instead of scanning every bucket of
/// `dg_paths` (65,536 even when empty). Shared by [`PolicyStore::try_clone`]s. A cgroup missing
/// from it, or whose entry another writer (the OCI hook, an earlier agent) owns now, is scanned.
type KeyIndex = std::sync::Arc<std::sync::Mutex<HashMap<u64, (u32, BTreeSet<Vec<u8>>)>>>;

/// `dg_level_mask` mapped into this process: bit `l` set means some policy lives at cgroup
/// depth `l`. Bits are set with an atomic OR in the page shared with the kernel (and with any
/// other writer, such as the OCI hook), and never cleared while the maps live: clearing one
/// would race with a writer installing at that depth.
#[derive(Debug)]
struct LevelMask {
    map: MapHandle,
    word: NonNull<AtomicU32>,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through the AtomicU32; it lives as long
// as the struct (unmapped in Drop).
unsafe impl Send for LevelMask {}
// SAFETY: as above; all access is atomic.
unsafe impl Sync for LevelMask {}

impl LevelMask {
    fn new(map: MapHandle) -> Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
        use std::os::fd::AsRawFd;
        // SAFETY: mapping a BPF_F_MMAPABLE array map's value area (one u32, one page); the
        // kernel refuses maps without the flag and we report that.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Corrupt {
                map: MAP_LEVELS,
                detail: format!(
                    "mmap of the level mask failed: {} (needs a map created with BPF_F_MMAPABLE, kernel 5.5+)",
                    std::io::Error::last_os_error()
                ),
            });
        }
        let word = NonNull::new(ptr.cast::<AtomicU32>())
            .ok_or(Error::Corrupt { map: MAP_LEVELS, detail: "mmap returned NULL".into() })?;
        Ok(LevelMask { map, word, len })
    }

    fn get(&self) -> u32 {
        // SAFETY: word points into our live mapping; page-aligned, so aligned for u32.
        unsafe { self.word.as_ref() }.load(Ordering::Acquire)
    }

    fn set(&self, level: u32) {
        // SAFETY: as in get().
        unsafe { self.word.as_ref() }.fetch_or(1u32 << level, Ordering::AcqRel);
    }
}

impl Drop for LevelMask {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.word.as_ptr().cast(), self.len) };
    }
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> Error {
    move |source| Error::Map { map, op, source }
}

impl PolicyStore {
    pub(crate) fn new(policies: MapHandle, paths: MapHandle, levels: MapHandle, stats: MapHandle) -> Result<Self> {
        Ok(PolicyStore { policies, paths, levels: LevelMask::new(levels)?, stats, index: KeyIndex::default() })
    }

    /// The keys of `cgroup_id` this process wrote, if the entry in the kernel is still the one it
    /// wrote (same owner); `None`: scan.
    fn indexed_keys(&self, cgroup_id: u64, raw: Option<&RawPolicy>) -> Option<BTreeSet<Vec<u8>>> {
        let raw = raw?;
        let idx = self.index.lock().ok()?;
        let (owner, keys) = idx.get(&cgroup_id)?;
        (*owner == raw.owner).then(|| keys.clone())
    }

    fn index_set(&self, cgroup_id: u64, owner: u32, keys: BTreeSet<Vec<u8>>) {
        if let Ok(mut idx) = self.index.lock() {
            idx.insert(cgroup_id, (owner, keys));
        }
    }

    fn index_forget(&self, cgroup_id: u64) {
        if let Ok(mut idx) = self.index.lock() {
            idx.remove(&cgroup_id);
        }
    }

    /// The policies map (for the loader's migration of older pins).
    pub(crate) fn policies_map(&self) -> &MapHandle {
        &self.policies
    }

    /// Duplicate the map handles (for another thread or component).
    pub fn try_clone(&self) -> Result<Self> {
        let dup = |name: &'static str, m: &MapHandle| {
            MapHandle::try_from(m).map_err(|source| Error::Map { map: name, op: "dup", source })
        };
        let mut clone = PolicyStore::new(
            dup(MAP_POLICIES, &self.policies)?,
            dup(MAP_PATHS, &self.paths)?,
            dup(MAP_LEVELS, &self.levels.map)?,
            dup(MAP_STATS, &self.stats)?,
        )?;
        clone.index = self.index.clone();
        Ok(clone)
    }

    /// Open the maps an agent pinned under `pin_dir` (default `/sys/fs/bpf/driftguard`).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self> {
        let open = |name: &'static str| {
            let p = pin_dir.join(name);
            MapHandle::from_pinned_path(&p).map_err(|e| match e.kind() {
                libbpf_rs::ErrorKind::NotFound => {
                    Error::NotPinned { dir: pin_dir.to_path_buf(), detail: format!("{} is missing", p.display()) }
                }
                libbpf_rs::ErrorKind::PermissionDenied => Error::NotPermitted(format!("opening {}: {e}", p.display())),
                _ => Error::Map { map: name, op: "open pinned", source: e },
            })
        };
        PolicyStore::new(open(MAP_POLICIES)?, open(MAP_PATHS)?, open(MAP_LEVELS)?, open(MAP_STATS)?)
    }

    /// Install or replace the policy of a cgroup. `Mode::Off` removes it.
    ///
    /// Order matters for a running workload: path lists first, then the policy
    /// entry, then the level marker, then stale list entries go. A failure
    /// leaves the previous policy in force and removes what this call added.
    ///
    /// `prov` says which filesystem is the container's image (its root) and which volume
    /// mounts are exempt; see [`crate::provenance`].
    pub fn set(&self, cgroup_id: u64, level: u32, policy: &Policy, prov: &Provenance) -> Result<()> {
        self.set_owned(cgroup_id, level, policy, prov, Owner::Other)
    }

    /// [`PolicyStore::set`], recording who installed the policy.
    pub fn set_owned(
        &self,
        cgroup_id: u64,
        level: u32,
        policy: &Policy,
        prov: &Provenance,
        owner: Owner,
    ) -> Result<()> {
        policy.validate()?;
        let ids = prov.mount_ids();
        if ids.len() > abi::DG_MAX_EXEC_MOUNTS {
            return Err(Error::Policy(crate::policy::PolicyError::TooManyExecVolumes {
                count: ids.len(),
                max: abi::DG_MAX_EXEC_MOUNTS,
            }));
        }
        if policy.mode == Mode::Off {
            self.remove(cgroup_id)?;
            return Ok(());
        }
        if level == 0 || level >= abi::DG_MAX_LEVELS {
            return Err(Error::Corrupt {
                map: MAP_LEVELS,
                detail: format!("cgroup level {level} outside 1..{}", abi::DG_MAX_LEVELS),
            });
        }
        // Scanning dg_paths walks every bucket of the hash map (65,536) even when it is empty:
        // only do it when the old or the new policy has path lists.
        let previous = self.raw_policy(cgroup_id)?;
        let had_lists = previous.is_some_and(|r| r.rules & abi::DG_RULE_HAS_LISTS != 0);
        let old: BTreeSet<Vec<u8>> = if had_lists || policy.kernel_rules() & abi::DG_RULE_HAS_LISTS != 0 {
            match self.indexed_keys(cgroup_id, previous.as_ref()) {
                Some(keys) => keys,
                None => self.path_keys_of(cgroup_id)?.into_iter().collect(),
            }
        } else {
            BTreeSet::new()
        };
        let mut added: Vec<Vec<u8>> = Vec::new();
        let mut wanted = BTreeSet::new();
        for (path, kind) in policy.path_entries() {
            let key = key_for(cgroup_id, path)?;
            wanted.insert(key.clone());
            let fresh = !old.contains(&key);
            if let Err(e) = self.paths.update(&key, &kind.as_raw().to_le_bytes(), MapFlags::ANY) {
                for k in &added {
                    let _ = self.paths.delete(k);
                }
                return Err(full_or(e, MAP_PATHS, self.paths_max(), cgroup_id, "update"));
            }
            if fresh {
                added.push(key);
            }
        }
        let mut exec_mnt_ids = [0u32; abi::DG_MAX_EXEC_MOUNTS];
        exec_mnt_ids[..ids.len()].copy_from_slice(&ids);
        let raw = RawPolicy {
            mode: policy.mode.as_raw(),
            rules: policy.kernel_rules() | if ids.is_empty() { 0 } else { abi::DG_RULE_HAS_MOUNTS },
            level,
            owner: owner.as_raw(),
            rootfs_dev: prov.rootfs_dev,
            exec_mnt_count: ids.len() as u32,
            exec_mnt_ids,
        };
        if let Err(e) = self.policies.update(&cgroup_id.to_le_bytes(), &raw.to_bytes(), MapFlags::ANY) {
            for k in &added {
                let _ = self.paths.delete(k);
            }
            return Err(full_or(e, MAP_POLICIES, self.policies_max(), cgroup_id, "update"));
        }
        self.mark_level(level)?;
        for stale in old.difference(&wanted) {
            match self.paths.delete(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(map_err(MAP_PATHS, "delete")(e)),
            }
        }
        self.index_set(cgroup_id, owner.as_raw(), wanted);
        Ok(())
    }

    /// Remove a cgroup's policy and path lists. Returns whether a policy was installed.
    pub fn remove(&self, cgroup_id: u64) -> Result<bool> {
        let previous = self.raw_policy(cgroup_id)?;
        let had_lists = previous.is_some_and(|r| r.rules & abi::DG_RULE_HAS_LISTS != 0);
        let known = self.indexed_keys(cgroup_id, previous.as_ref());
        self.index_forget(cgroup_id);
        let existed = match self.policies.delete(&cgroup_id.to_le_bytes()) {
            Ok(()) => true,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => false,
            Err(e) => return Err(map_err(MAP_POLICIES, "delete")(e)),
        };
        if !had_lists && existed {
            return Ok(existed);
        }
        let keys = match known {
            Some(keys) if existed => keys.into_iter().collect(),
            _ => self.path_keys_of(cgroup_id)?,
        };
        for k in keys {
            match self.paths.delete(&k) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(map_err(MAP_PATHS, "delete")(e)),
            }
        }
        Ok(existed)
    }

    /// The policy installed for one cgroup, if any.
    pub fn get(&self, cgroup_id: u64) -> Result<Option<InstalledPolicy>> {
        let Some(v) =
            self.policies.lookup(&cgroup_id.to_le_bytes(), MapFlags::ANY).map_err(map_err(MAP_POLICIES, "lookup"))?
        else {
            return Ok(None);
        };
        let has_lists = RawPolicy::from_bytes(&v).is_some_and(|r| r.rules & abi::DG_RULE_HAS_LISTS != 0);
        let lists = if has_lists { self.lists()? } else { BTreeMap::new() };
        Ok(Some(decode_policy(cgroup_id, &v, lists.get(&cgroup_id))?))
    }

    /// The provenance installed for one cgroup (root filesystem and exempt mount ids), if a
    /// policy is installed. Re-installing a running container's policy reuses it rather than
    /// reading the container's mountinfo again, which its processes may have changed since.
    pub fn provenance(&self, cgroup_id: u64) -> Result<Option<(u64, Vec<u32>)>> {
        Ok(self.raw_policy(cgroup_id)?.map(|r| {
            let n = (r.exec_mnt_count as usize).min(abi::DG_MAX_EXEC_MOUNTS);
            (r.rootfs_dev, r.exec_mnt_ids[..n].to_vec())
        }))
    }

    /// The raw policy value of one cgroup (one map lookup).
    fn raw_policy(&self, cgroup_id: u64) -> Result<Option<RawPolicy>> {
        Ok(self
            .policies
            .lookup(&cgroup_id.to_le_bytes(), MapFlags::ANY)
            .map_err(map_err(MAP_POLICIES, "lookup"))?
            .and_then(|v| RawPolicy::from_bytes(&v)))
    }

    /// Who installed the policy of a cgroup, if any (one map lookup).
    pub fn owner(&self, cgroup_id: u64) -> Result<Option<Owner>> {
        Ok(self.raw_policy(cgroup_id)?.map(|r| Owner::from_raw(r.owner)))
    }

    /// Every installed policy.
    pub fn list(&self) -> Result<Vec<InstalledPolicy>> {
        let lists = self.lists()?;
        let mut out = Vec::new();
        for key in self.policies.keys() {
            let Some(id) = u64_key(&key) else { continue };
            let Some(v) = self.policies.lookup(&key, MapFlags::ANY).map_err(map_err(MAP_POLICIES, "lookup"))? else {
                continue; // removed meanwhile
            };
            out.push(decode_policy(id, &v, lists.get(&id))?);
        }
        out.sort_by_key(|p| p.cgroup_id);
        Ok(out)
    }

    /// Cgroup ids that have a policy.
    pub fn cgroup_ids(&self) -> Vec<u64> {
        self.policies.keys().filter_map(|k| u64_key(&k)).collect()
    }

    /// Flag `level` in the level mask (atomic, idempotent, never undone).
    fn mark_level(&self, level: u32) -> Result<()> {
        if level >= abi::DG_MAX_LEVELS {
            return Err(Error::Corrupt { map: MAP_LEVELS, detail: format!("cgroup level {level} out of range") });
        }
        self.levels.set(level);
        Ok(())
    }

    /// Flag the depth of every installed policy in the level mask. Run when adopting pinned
    /// maps, before the programs attach: a mask that is new (pins of an earlier build) or was
    /// lost must not leave nested cgroups of already-policied containers unchecked. Returns
    /// how many policies were seen.
    pub fn flag_installed_levels(&self) -> Result<usize> {
        let mut n = 0;
        for key in self.policies.keys() {
            let Some(v) = self.policies.lookup(&key, MapFlags::ANY).map_err(map_err(MAP_POLICIES, "lookup"))? else {
                continue; // removed meanwhile
            };
            if let Some(raw) = RawPolicy::from_bytes(&v) {
                if raw.level > 0 && raw.level < abi::DG_MAX_LEVELS {
                    self.levels.set(raw.level);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The level mask: bit `l` set when some policy was installed at cgroup depth `l`.
    pub fn level_mask(&self) -> u32 {
        self.levels.get()
    }

    /// Kernel counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        let mut sums = [0u64; abi::DG_STAT_MAX];
        for (slot, sum) in sums.iter_mut().enumerate() {
            let key = (slot as u32).to_le_bytes();
            if let Some(per_cpu) =
                self.stats.lookup_percpu(&key, MapFlags::ANY).map_err(map_err(MAP_STATS, "lookup"))?
            {
                for v in per_cpu {
                    if v.len() >= 8 {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&v[..8]);
                        *sum = sum.wrapping_add(u64::from_le_bytes(b));
                    }
                }
            }
        }
        Ok(Stats {
            events: sums[abi::DG_STAT_EVENTS],
            ringbuf_drops: sums[abi::DG_STAT_RINGBUF_DROPS],
            denies: sums[abi::DG_STAT_DENIES],
            kills: sums[abi::DG_STAT_KILLS],
            alerts: sums[abi::DG_STAT_ALERTS],
            path_errors: sums[abi::DG_STAT_PATH_ERRORS],
            checks: sums[abi::DG_STAT_CHECKS],
            overlay_unknown: sums[abi::DG_STAT_OVL_UNKNOWN],
        })
    }

    /// Capacity of the policies map.
    pub fn policies_max(&self) -> u32 {
        map_max_entries(&self.policies)
    }

    fn paths_max(&self) -> u32 {
        map_max_entries(&self.paths)
    }

    fn path_keys_of(&self, cgroup_id: u64) -> Result<Vec<Vec<u8>>> {
        Ok(self.paths.keys().filter(|k| abi::parse_path_key(k).is_some_and(|(id, _)| id == cgroup_id)).collect())
    }

    fn lists(&self) -> Result<BTreeMap<u64, Vec<(String, u32)>>> {
        let mut m: BTreeMap<u64, Vec<(String, u32)>> = BTreeMap::new();
        for k in self.paths.keys() {
            let Some((id, path)) = abi::parse_path_key(&k) else { continue };
            let Some(v) = self.paths.lookup(&k, MapFlags::ANY).map_err(map_err(MAP_PATHS, "lookup"))? else {
                continue;
            };
            let kind = v.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
            m.entry(id).or_default().push((path, kind));
        }
        Ok(m)
    }
}

fn map_max_entries(m: &MapHandle) -> u32 {
    m.max_entries()
}

fn key_for(cgroup_id: u64, path: &ExecPath) -> Result<Vec<u8>> {
    abi::path_key(cgroup_id, path.as_str()).ok_or_else(|| {
        Error::Policy(crate::policy::PolicyError::PathTooLong {
            path: path.to_string(),
            max: crate::policy::MAX_PATH_LEN,
        })
    })
}

fn full_or(e: libbpf_rs::Error, map: &'static str, max: u32, cgroup_id: u64, op: &'static str) -> Error {
    if e.kind() == libbpf_rs::ErrorKind::TooBig {
        Error::MapFull { map, max, cgroup_id }
    } else {
        Error::Map { map, op, source: e }
    }
}

fn u64_key(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn decode_policy(cgroup_id: u64, value: &[u8], lists: Option<&Vec<(String, u32)>>) -> Result<InstalledPolicy> {
    let raw = RawPolicy::from_bytes(value)
        .ok_or_else(|| Error::Corrupt { map: MAP_POLICIES, detail: format!("value of {} bytes", value.len()) })?;
    let mode = Mode::from_raw(raw.mode).ok_or_else(|| Error::Corrupt {
        map: MAP_POLICIES,
        detail: format!("mode {} for cgroup {cgroup_id}", raw.mode),
    })?;
    let mut policy = Policy { mode, rules: Policy::rules_from_kernel(raw.rules), ..Policy::default() };
    for (path, kind) in lists.into_iter().flatten() {
        let Ok(p) = ExecPath::new(path) else { continue };
        match ListKind::from_raw(*kind) {
            Some(ListKind::Allow) => {
                policy.allow.insert(p);
            }
            Some(ListKind::Deny) => {
                policy.deny.insert(p);
            }
            None => {}
        }
    }
    let n = (raw.exec_mnt_count as usize).min(abi::DG_MAX_EXEC_MOUNTS);
    Ok(InstalledPolicy {
        cgroup_id,
        level: raw.level,
        owner: Owner::from_raw(raw.owner),
        policy,
        rootfs_dev: raw.rootfs_dev,
        exec_mount_ids: raw.exec_mnt_ids[..n].to_vec(),
    })
}
