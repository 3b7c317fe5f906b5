//! The enforcement core: loads the BPF programs of `bpf/driftguard.bpf.c`,
//! chooses BPF LSM or the tracepoint fallback, pins everything, and exposes
//! per-cgroup policy, verdict events and counters.
//!
//! Pinned layout (default `/sys/fs/bpf/driftguard/`):
//!
//! | name | what |
//! |---|---|
//! | `dg_policies`, `dg_paths`, `dg_level_mask` | policy maps ([`PolicyStore`]) |
//! | `dg_events` | ring buffer of verdicts |
//! | `dg_stats` | per-CPU counters |
//! | `link_dg_bprm_check`, `link_dg_mmap_file`, `link_dg_file_mprotect` | BPF LSM links |
//! | `link_dg_exec_tp` | fallback tracepoint link |
//!
//! Links keep programs attached after the agent exits, so enforcement goes
//! on across restarts and upgrades. A new agent loads its programs reusing the
//! pinned maps, attaches them, then atomically replaces the pinned links:
//! old and new programs overlap for a moment, there is never a gap.
//! [`unload`] removes everything.

pub use crate::abi;
mod caps;
mod error;
mod events;
mod libbpf_log;
mod loader;
pub mod memlock;
mod migrate;
mod ovlproof;
mod parent;
mod pins;
mod probes;
mod store;

#[allow(clippy::all, dead_code, non_camel_case_types, non_upper_case_globals, missing_docs, unused_imports)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/driftguard.skel.rs"));
}

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapHandle, OpenObject};
use serde::Serialize;

pub use caps::{
    kernel_enum_has, kernel_has_bpf_helper, kernel_struct_size, overlay_module_btf, overlay_upper, LayoutProof,
    OverlayUpper, TEST_OVL_LAYOUT_ENV,
};
pub use error::{Error, Result};
pub use events::{Action, Event, EventStream, FileKind, Hook, ReaderHeartbeat, Rule, Target, EVENT_CHANNEL_CAPACITY};
use loader::*;
pub use ovlproof::prove_overlay_layout;
pub use parent::Parent;
pub use pins::*;
pub use probes::*;
pub use store::{InstalledPolicy, Owner, PolicyStore, Stats};

use skel::{DriftguardSkel, DriftguardSkelBuilder, OpenDriftguardSkel};

/// Default pin directory.
pub use crate::node_state::DEFAULT_PIN_DIR;
/// The kernel's BTF, which CO-RE relocates the programs against.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// The active LSMs, comma-separated (securityfs).
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

const LSM_PROGS: [&str; 7] = [
    "dg_bprm_check",
    "dg_mmap_file",
    "dg_file_mprotect",
    "dg_file_open",
    "dg_ptrace_access",
    "dg_ptrace_traceme",
    "dg_file_receive",
];
const TP_PROGS: [&str; 1] = ["dg_exec_tp"];
/// The fallback's mapping checks (bpf/memory_fallback.h): on every kernel ...
const MAPPING_PROGS: [&str; 3] = ["dg_sys_mmap", "dg_sys_exit_mmap", "dg_sys_shmat"];
/// ... with `bpf_find_vma` (5.17+) ...
const MAPPING_VMA_PROGS: [&str; 4] =
    ["dg_sys_mprotect_vma", "dg_sys_pkey_mprotect_vma", "dg_sys_exit_mprotect_vma", "dg_sys_exit_pkey_mprotect_vma"];
/// ... or without it (mprotect to PROT_EXEC under the memory rule fails closed).
const MAPPING_NOVMA_PROGS: [&str; 2] = ["dg_sys_mprotect_novma", "dg_sys_pkey_mprotect_novma"];
/// The fallback's process-memory checks (bpf/process_memory_fallback.h), loaded with the
/// mapping checks: the same opt-in, since any syscall tracepoint slows every syscall.
const PROCESS_FALLBACK_PROGS: [&str; 7] = [
    "dg_sys_ptrace",
    "dg_sys_process_vm_writev",
    "dg_sys_process_vm_readv",
    "dg_sys_pidfd_getfd",
    "dg_sys_exit_open",
    "dg_sys_exit_openat",
    "dg_sys_exit_openat2",
];

/// Every program that may be attached, so that pins of programs not in use now are removed.
fn all_programs() -> impl Iterator<Item = &'static str> {
    LSM_PROGS
        .iter()
        .chain(&TP_PROGS)
        .chain(&MAPPING_PROGS)
        .chain(&MAPPING_VMA_PROGS)
        .chain(&MAPPING_NOVMA_PROGS)
        .chain(&PROCESS_FALLBACK_PROGS)
        .copied()
}

/// The programs loaded and attached for `path` and `mappings`, in attach order.
fn programs(path: EnforcementPath, mappings: MappingChecks) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = match path {
        EnforcementPath::Lsm => LSM_PROGS.to_vec(),
        EnforcementPath::TracepointKill => TP_PROGS.to_vec(),
    };
    if let (EnforcementPath::TracepointKill, MappingChecks::Tracepoints { find_vma, .. }) = (path, mappings) {
        v.extend(MAPPING_PROGS);
        v.extend(if find_vma { &MAPPING_VMA_PROGS[..] } else { &MAPPING_NOVMA_PROGS[..] });
        v.extend(PROCESS_FALLBACK_PROGS);
    }
    v
}

/// How mappings (`mmap`, `mprotect`, `shmat` with exec) are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingChecks {
    /// By the BPF LSM hooks `mmap_file` and `file_mprotect` (deny with EPERM).
    Lsm,
    /// Not at all: the fallback without `[bpf] fallback_mappings`.
    Off,
    /// The fallback's syscall tracepoints (SIGKILL), opted into with `[bpf] fallback_mappings`.
    Tracepoints {
        /// The kernel has `bpf_find_vma` (5.17+): mprotect targets are classified by their
        /// mapping; without it an mprotect to PROT_EXEC under the memory rule fails closed.
        find_vma: bool,
        /// The links are pinned (perf-event links, 5.15+): enforcement outlives the agent.
        pinned: bool,
    },
}

impl MappingChecks {
    /// Name for status output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingChecks::Lsm => "lsm",
            MappingChecks::Off => "off",
            MappingChecks::Tracepoints { find_vma: true, .. } => "syscall_tracepoints",
            MappingChecks::Tracepoints { find_vma: false, .. } => "syscall_tracepoints_without_find_vma",
        }
    }
}

/// How exec is being enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementPath {
    /// BPF LSM: exec and PROT_EXEC mappings are denied with EPERM.
    Lsm,
    /// Fallback: `sched_process_exec` tracepoint, the new image is SIGKILLed
    /// before its first instruction. No mmap checks, `#!` scripts are seen as
    /// their interpreter.
    TracepointKill,
}

impl EnforcementPath {
    /// Name for status output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementPath::Lsm => "lsm",
            EnforcementPath::TracepointKill => "tracepoint_kill",
        }
    }
}

/// Options for [`Enforcer::load`].
#[derive(Clone, Debug)]
pub struct EnforcerOptions {
    /// Pin maps and links here (bpffs). `None`: nothing pinned, programs
    /// detach when the [`Enforcer`] is dropped (tests, `demo`).
    pub pin_dir: Option<PathBuf>,
    /// Use the tracepoint fallback even if BPF LSM works.
    pub force_fallback: bool,
    /// On the fallback, also attach the mapping checks (syscall tracepoints,
    /// bpf/memory_fallback.h). Ignored with BPF LSM, whose hooks check mappings anyway.
    pub fallback_mappings: bool,
}

impl Default for EnforcerOptions {
    fn default() -> Self {
        EnforcerOptions {
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            force_fallback: false,
            fallback_mappings: false,
        }
    }
}

/// Loaded and attached enforcement.
pub struct Enforcer {
    skel: DriftguardSkel<'static>,
    links: Vec<(String, Link)>,
    path: EnforcementPath,
    fallback_reason: Option<String>,
    pin_dir: Option<PathBuf>,
    store: PolicyStore,
    lsm_d_path: bool,
    ovl_upper: OverlayUpper,
    ovl_proof: LayoutProof,
    mappings: MappingChecks,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("path", &self.path)
            .field("fallback_reason", &self.fallback_reason)
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

fn leak_storage() -> &'static mut MaybeUninit<OpenObject> {
    // One small allocation per load, kept for the process lifetime: the
    // skeleton borrows it. The BPF object itself is freed when the skeleton drops.
    Box::leak(Box::new(MaybeUninit::uninit()))
}

impl Enforcer {
    /// Load the programs (BPF LSM if possible, else the fallback), attach and pin them.
    pub fn load(opts: &EnforcerOptions) -> Result<Self> {
        // Where the programs find overlay's upper dentry (or what the test knob forces).
        let ovl = caps::overlay_upper().map_err(|reason| Error::Load { reason, log: String::new() })?;
        Self::load_with_overlay(opts, ovl, true)
    }

    /// [`Enforcer::load`] with where the programs read overlay's upper dentry given: the
    /// in-process form of the test knob ([`TEST_OVL_LAYOUT_ENV`]), for tests only. `prove: false`
    /// skips the start-time proof of a layout read, so the per-read check alone can be tried.
    #[doc(hidden)]
    pub fn load_with_overlay(opts: &EnforcerOptions, ovl: OverlayUpper, prove: bool) -> Result<Self> {
        libbpf_log::install();
        if !has_vmlinux_btf() {
            return Err(Error::NoBtf(PathBuf::from(BTF_PATH)));
        }
        let memlock = raise_memlock();
        Self::load_prepared(opts, ovl, prove).map_err(|e| match (e, memlock) {
            // EPERM on a kernel that charges RLIMIT_MEMLOCK, which could not be raised: that is why.
            (Error::NotPermitted(why), Some(advice)) => Error::NotPermitted(format!("{why}; {advice}")),
            (e, _) => e,
        })
    }

    fn load_prepared(opts: &EnforcerOptions, ovl: OverlayUpper, prove: bool) -> Result<Self> {
        if let Some(dir) = &opts.pin_dir {
            prepare_pin_dir(dir)?;
        }

        // Pins of an older layout: read before the loader replaces them.
        let v1 = match &opts.pin_dir {
            Some(dir) => migrate::take_v1_policies(dir)?,
            None => None,
        };

        let mut fallback_reason = None;
        let lsm = if opts.force_fallback {
            fallback_reason = Some("fallback forced by configuration".to_string());
            false
        } else {
            match bpf_lsm_active() {
                Ok(()) => true,
                Err(why) => {
                    fallback_reason = Some(why);
                    false
                }
            }
        };

        let mut lsm_d_path = true;
        let skel = if lsm {
            let first = open_and_load(opts.pin_dir.as_deref(), &LSM_PROGS, true, ovl);
            // 5.10 has BPF LSM but refuses bpf_d_path() in LSM hooks (allowed from 5.11): the
            // same programs without it make event paths with the dentry walk instead.
            let first = match first {
                Err(Error::ProgramRejected { ref log, .. }) if d_path_refused(log) => {
                    tracing::info!("bpf_d_path is not allowed in BPF LSM hooks on this kernel; event paths of non-image files come from the dentry walk");
                    lsm_d_path = false;
                    open_and_load(opts.pin_dir.as_deref(), &LSM_PROGS, false, ovl)
                }
                r => r,
            };
            match first {
                Ok(s) => Some(s),
                Err(e @ (Error::ProgramRejected { .. } | Error::NotPermitted(_) | Error::Load { .. })) => {
                    // libbpf's own lines (and the verifier log) went to the debug level as they
                    // came; the caller reports the one-line reason once.
                    tracing::debug!(error = %first_line(&e.to_string()), "BPF LSM programs could not be loaded");
                    fallback_reason = Some(lsm_refusal(&e));
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mappings = match (skel.is_some(), opts.fallback_mappings) {
            (true, _) => MappingChecks::Lsm,
            (false, false) => MappingChecks::Off,
            (false, true) => MappingChecks::Tracepoints {
                find_vma: kernel_has_bpf_helper("BPF_FUNC_find_vma") == Some(true),
                pinned: true,
            },
        };
        let (skel, path) = match skel {
            Some(s) => (s, EnforcementPath::Lsm),
            None => {
                let progs = programs(EnforcementPath::TracepointKill, mappings);
                (open_and_load(opts.pin_dir.as_deref(), &progs, false, ovl)?, EnforcementPath::TracepointKill)
            }
        };
        let mut skel = skel;

        // The layout read is proved on this kernel before these programs enforce anything; if
        // the proof fails they treat every root-overlay file of a policied container as drift.
        let ovl_proof = if ovl.is_layout() && !prove {
            LayoutProof::Failed("not proved: skipped by a test".into())
        } else if ovl.is_layout() {
            let started = std::time::Instant::now();
            match ovlproof::prove_overlay_layout(path, ovl) {
                Ok(()) => {
                    tracing::info!(
                        source = ovl.as_str(),
                        ms = started.elapsed().as_millis() as u64,
                        "overlay upper layer: layout read proved on this kernel"
                    );
                    LayoutProof::Proven
                }
                Err(why) => {
                    // Said once, as an error, by the caller (Enforcer::overlay_failure).
                    set_ovl_untrusted(&mut skel)?;
                    LayoutProof::Failed(why)
                }
            }
        } else {
            LayoutProof::NotNeeded
        };

        let store = store_from_skel(&skel)?;
        if let Some(old) = v1 {
            let n = migrate::restore(old, store.policies_map())?;
            tracing::info!(policies = n, "policies of driftguard 0.1 carried over");
        }
        let adopted = store.flag_installed_levels()?;
        if adopted > 0 {
            tracing::info!(policies = adopted, "adopted pinned policies");
        }
        let lsm_d_path = lsm_d_path && path == EnforcementPath::Lsm;
        let mut enforcer = Enforcer {
            skel,
            links: Vec::new(),
            path,
            fallback_reason,
            pin_dir: opts.pin_dir.clone(),
            store,
            lsm_d_path,
            ovl_upper: ovl,
            ovl_proof,
            mappings,
        };
        enforcer.attach()?;
        tracing::debug!(path = path.as_str(), "enforcement attached");
        Ok(enforcer)
    }

    fn attach(&mut self) -> Result<()> {
        let names = programs(self.path, self.mappings);
        if matches!(self.mappings, MappingChecks::Tracepoints { .. }) {
            ensure_tracefs()?;
        }
        let mut links = Vec::new();
        for name in &names {
            let prog = self.skel.object().progs_mut().find(|p| p.name() == *name).ok_or_else(|| Error::Load {
                reason: format!("the BPF object has no program {name}"),
                log: String::new(),
            })?;
            let link = prog.attach().map_err(|source| Error::Attach { program: (*name).into(), source })?;
            links.push((name.to_string(), link));
        }
        if let Some(dir) = &self.pin_dir {
            let mut unpinned = false;
            for (name, link) in links.iter_mut() {
                let final_path = dir.join(format!("link_{name}"));
                // bpffs refuses names containing a dot.
                let tmp = dir.join(format!("link_{name}_new"));
                let _ = std::fs::remove_file(&tmp);
                if let Err(source) = link.pin(&tmp) {
                    if !name.starts_with("dg_sys_") {
                        return Err(Error::Attach { program: name.clone(), source });
                    }
                    // Before 5.15 a tracepoint's link is a perf event, which bpffs cannot pin:
                    // the check holds while this process runs (a kernel limit line says so).
                    tracing::debug!(program = %name, error = %source, "syscall tracepoint link not pinned");
                    unpinned = true;
                    let _ = std::fs::remove_file(&final_path);
                    continue;
                }
                // rename(2) on bpffs replaces the old pin atomically; the old link
                // (and its programs) go away only now that ours is attached.
                std::fs::rename(&tmp, &final_path)
                    .map_err(|e| Error::io(format!("replacing pinned link {}", final_path.display()), e))?;
            }
            if let MappingChecks::Tracepoints { ref mut pinned, .. } = self.mappings {
                *pinned = !unpinned;
            }
            // Links of programs not in use now: the other enforcement path (e.g. LSM became
            // available after a reboot into a new kernel), mapping checks turned off, or the
            // other mprotect variant.
            for name in all_programs().filter(|n| !names.contains(n)) {
                let p = dir.join(format!("link_{name}"));
                if p.exists() {
                    std::fs::remove_file(&p)
                        .map_err(|e| Error::io(format!("removing stale link {}", p.display()), e))?;
                }
            }
            // An older version's maps: only its (now replaced) programs used them.
            for name in [store::LEGACY_MAP_LEVELS, migrate::V1_PIN] {
                let legacy = dir.join(name);
                if legacy.exists() {
                    std::fs::remove_file(&legacy)
                        .map_err(|e| Error::io(format!("removing stale map {}", legacy.display()), e))?;
                }
            }
        }
        self.links = links;
        Ok(())
    }

    /// The enforcement path in use.
    pub fn path(&self) -> EnforcementPath {
        self.path
    }

    /// Why the fallback is used, when it is: one line that names the cause and what to change.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// How mappings are checked: by the LSM hooks, not at all (the fallback without
    /// `fallback_mappings`), or by the fallback's syscall tracepoints.
    pub fn mapping_checks(&self) -> MappingChecks {
        self.mappings
    }

    /// Whether the LSM programs make task paths with `bpf_d_path()` (false on 5.10, which
    /// refuses it in LSM hooks, and on the fallback: the dentry walk is used instead).
    pub fn uses_d_path(&self) -> bool {
        self.lsm_d_path
    }

    /// What this kernel cannot guarantee with the loaded programs, one sentence each (the agent
    /// logs them at start; `driftguard check` tabulates the same facts).
    pub fn kernel_limits(&self) -> Vec<String> {
        caps::limits(self.path, self.mappings, self.lsm_d_path, self.ovl_upper, &self.ovl_proof)
    }

    /// The error line when the layout proof failed (and the programs treat every root-overlay
    /// file of a policied container as drift); `None` otherwise.
    pub fn overlay_failure(&self) -> Option<String> {
        caps::proof_failure(self.ovl_upper, &self.ovl_proof)
    }

    /// Whether the layout read of overlay's upper dentry was proved at start (only when
    /// [`Enforcer::overlay_upper`] is a layout read).
    pub fn overlay_proof(&self) -> &LayoutProof {
        &self.ovl_proof
    }

    /// Where the loaded programs find an overlay inode's upper dentry.
    pub fn overlay_upper(&self) -> OverlayUpper {
        self.ovl_upper
    }

    /// Pin directory, if pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// The policy maps.
    pub fn store(&self) -> &PolicyStore {
        &self.store
    }

    /// Stream of verdict events. Only one stream per ring buffer should exist.
    pub fn events(&self) -> Result<EventStream> {
        let h = MapHandle::try_from(&self.skel.maps.dg_events).map_err(|source| Error::Map {
            map: store::MAP_EVENTS,
            op: "dup",
            source,
        })?;
        EventStream::spawn(h)
    }

    /// Kernel counters.
    pub fn stats(&self) -> Result<Stats> {
        self.store.stats()
    }

    /// Run-time statistics of the attached programs, as the kernel keeps them. `run_time_ns`
    /// and `run_count` only advance while `kernel.bpf_stats_enabled` is 1 (it costs two clock
    /// reads per run, so it is off by default); the benchmarks turn it on to measure the exact
    /// cost per exec.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        use libbpf_rs::{query::ProgInfoIter, Program};
        use std::os::fd::AsFd;
        let ours: Vec<(&str, u32)> = self
            .skel
            .object()
            .progs()
            .filter_map(|p| {
                let (name, _) = self.links.iter().find(|(n, _)| p.name() == n.as_str())?;
                Some((name.as_str(), Program::id_from_fd(p.as_fd()).ok()?))
            })
            .collect();
        ProgInfoIter::default()
            .filter_map(|info| {
                let (name, id) = ours.iter().find(|(_, id)| *id == info.id)?;
                Some(ProgramStats {
                    name: (*name).to_string(),
                    id: *id,
                    run_time_ns: info.run_time_ns,
                    run_count: info.run_cnt,
                    verified_insns: info.verified_insns,
                })
            })
            .collect()
    }
}

/// Kernel run-time statistics of one attached program ([`Enforcer::program_stats`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    /// Program name (`dg_bprm_check`, `dg_exec_tp`, ...).
    pub name: String,
    /// Kernel program id.
    pub id: u32,
    /// Total run time (ns) while `kernel.bpf_stats_enabled` was 1.
    pub run_time_ns: u64,
    /// Runs while `kernel.bpf_stats_enabled` was 1.
    pub run_count: u64,
    /// Instructions the verifier processed to accept it (its budget is 1,000,000): how close
    /// the program is to being refused on this kernel.
    pub verified_insns: u32,
}

/// Runs the compiled decision function (`dg_decide` in bpf/decision.h) in the
/// kernel through `BPF_PROG_TEST_RUN`, for tests of the exact BPF code.
pub struct DecisionTester {
    skel: DriftguardSkel<'static>,
}

impl DecisionTester {
    /// Load only the test program (needs root / CAP_BPF).
    pub fn load() -> Result<Self> {
        libbpf_log::install();
        let builder = DriftguardSkelBuilder::default();
        let mut open = builder
            .open(leak_storage())
            .map_err(|e| Error::Load { reason: e.to_string(), log: libbpf_log::tail(20) })?;
        set_autoload(&mut open, &[]);
        open.progs.dg_test_decide.set_autoload(true);
        let skel = open.load().map_err(|e| classify_load_error(e, None))?;
        Ok(DecisionTester { skel })
    }

    /// Run the decision function on `input`; returns (match, action).
    pub fn decide(&self, input: abi::RawInput) -> Result<(u32, u32)> {
        // Syscall programs get no ctx_out: the kernel copies the context back into ctx_in.
        let mut ctx = abi::decide_args(input);
        let run = libbpf_rs::ProgramInput { context_in: Some(&mut ctx[..]), ..Default::default() };
        self.skel.progs.dg_test_decide.test_run(run).map_err(|source| Error::Map {
            map: "dg_test_decide",
            op: "BPF_PROG_TEST_RUN",
            source,
        })?;
        abi::decide_verdict(&ctx)
            .ok_or_else(|| Error::Corrupt { map: "dg_test_decide", detail: "short context".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_refusal_is_one_line_with_the_cause_and_the_remedy() {
        let e = Error::ProgramRejected {
            program: "dg_bprm_check".into(),
            reason: "Operation not permitted (os error 1) (refused before verification)".into(),
            log: "libbpf: prog 'dg_bprm_check': failed to load: -1\nlibbpf: try raising 'ulimit -l'".into(),
        };
        let r = lsm_refusal(&e);
        assert!(!r.contains('\n') && !r.contains("ulimit") && !r.contains("libbpf"), "{r}");
        assert!(r.contains("dg_bprm_check") && r.contains("trampolines") && r.contains("CONFIG_BPF_LSM"), "{r}");
        let v = Error::ProgramRejected {
            program: "dg_mmap_file".into(),
            reason: "Invalid argument".into(),
            log: "R0 x".into(),
        };
        let r = lsm_refusal(&v);
        assert!(!r.contains('\n') && r.contains("verifier") && r.contains("DRIFTGUARD_LOG=debug"), "{r}");
    }
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn problem(dir: &Path) -> String {
        match check_pin_dir(dir) {
            Err(Error::UnsafePinDir { path, problem, .. }) => format!("{}: {problem}", path.display()),
            other => format!("{other:?}"),
        }
    }

    /// Ownership and mode rules of the pin directory and its parents (on any filesystem: the
    /// check is the same on bpffs).
    #[test]
    fn pin_dir_must_be_root_owned_and_not_writable_by_others() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP pin_dir_must_be_root_owned_and_not_writable_by_others: needs root (chown)");
            return;
        }
        // /tmp is root-owned and sticky: an accepted parent, like bpffs's drwxrwxrwt root.
        let base = tempfile::tempdir().unwrap();
        let parent = base.path().join("parent");
        let pins = parent.join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        chmod(base.path(), 0o755);
        chmod(&parent, 0o755);
        chmod(&pins, 0o700);
        check_pin_dir(&pins).unwrap();

        chmod(&pins, 0o1777);
        assert_eq!(problem(&pins), format!("{}: is writable by group or others", pins.display()));
        chmod(&pins, 0o770);
        assert!(problem(&pins).ends_with("is writable by group or others"));
        chmod(&pins, 0o700);

        // A world-writable parent without the sticky bit lets anyone rename the pin directory.
        chmod(&parent, 0o777);
        assert_eq!(problem(&pins), format!("{}: is writable by group or others", parent.display()));
        chmod(&parent, 0o1777);
        check_pin_dir(&pins).unwrap();
        chmod(&parent, 0o755);

        // Owned by nobody: its owner could unpin everything.
        std::os::unix::fs::chown(&pins, Some(65534), Some(65534)).unwrap();
        let e = check_pin_dir(&pins).unwrap_err();
        assert!(e.to_string().contains(&format!("{}", pins.display())) && e.to_string().contains("uid 65534"), "{e}");
        assert_eq!(problem(&pins), format!("{}: is not owned by root", pins.display()));
        std::os::unix::fs::chown(&pins, Some(0), Some(0)).unwrap();
        std::os::unix::fs::chown(&parent, Some(65534), None).unwrap();
        assert_eq!(problem(&pins), format!("{}: is not owned by root", parent.display()));
        std::os::unix::fs::chown(&parent, Some(0), None).unwrap();

        // A symlink on the way could point anywhere its owner likes.
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&parent, &link).unwrap();
        assert_eq!(problem(&link.join("pins")), format!("{}: is a symbolic link", link.display()));
    }
}
