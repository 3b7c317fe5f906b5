//! The loader's parts: opening and loading the skeleton with the programs of one path, telling
//! why the kernel refused them, the memlock limit, the policy store of a loaded skeleton.
use super::*;

/// One line for the operator: why the BPF LSM programs were refused and what to change. The
/// libbpf/verifier lines behind it are logged at debug level (`DRIFTGUARD_LOG=debug`).
pub(super) fn lsm_refusal(e: &Error) -> String {
    match e {
        Error::ProgramRejected { program, reason, .. } if reason.contains("refused before verification") => format!(
            "the kernel refused BPF LSM program {program} before verifying it ({}): bpf is in the active LSM \
             list, but this kernel cannot attach BPF programs to LSM hooks (BPF trampolines unavailable, \
             e.g. no BPF JIT, a kernel build without trampoline support, or kernel lockdown). For EPERM enforcement run a \
             kernel with CONFIG_BPF_LSM=y, bpf in lsm= and BPF trampolines (e.g. Debian 12's 6.1 kernel)",
            reason.trim_end_matches(" (refused before verification)")
        ),
        Error::ProgramRejected { program, reason, .. } => format!(
            "the verifier rejected BPF LSM program {program} ({reason}); its log is at debug level \
             (DRIFTGUARD_LOG=debug); please report it with `uname -r`"
        ),
        Error::NotPermitted(why) => format!(
            "loading BPF LSM programs was not permitted ({why}); give the agent CAP_BPF, CAP_PERFMON \
             and CAP_SYS_ADMIN, and check kernel lockdown"
        ),
        Error::Load { reason, .. } => {
            format!("the BPF LSM programs failed to load ({reason}); details at debug level (DRIFTGUARD_LOG=debug)")
        }
        other => first_line(&other.to_string()).to_string(),
    }
}

/// Lift `RLIMIT_MEMLOCK` ([`memlock`]); on a kernel that needs it and when it cannot, say so
/// once, clearly, before loading fails, and return what was said (for the load error).
pub(super) fn raise_memlock() -> Option<String> {
    let Err(e) = memlock::raise() else { return None };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let advice = memlock::advice(release.trim(), Some(&e), memlock::current());
    match &advice {
        Some(advice) => tracing::warn!("{advice}"),
        None => tracing::debug!(error = %e, "could not raise RLIMIT_MEMLOCK (not needed on this kernel)"),
    }
    advice
}

pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Loads exactly the programs named (none: for [`DecisionTester`], which turns its own on).
pub(super) fn set_autoload(open: &mut OpenDriftguardSkel<'static>, names: &[&str]) {
    for mut p in open.open_object_mut().progs_mut() {
        let load = names.iter().any(|n| p.name() == *n);
        p.set_autoload(load);
    }
}

/// The verifier refused a `bpf_d_path()` call (5.10: not in the LSM hooks' allowlist).
pub(super) fn d_path_refused(log: &str) -> bool {
    log.contains("helper call is not allowed in probe") && log.contains("bpf_d_path")
}

/// Makes the loaded programs distrust the layout read of overlay's upper dentry (`.bss`, written
/// through the mmap of the data section before the programs are attached).
pub(super) fn set_ovl_untrusted(skel: &mut DriftguardSkel<'static>) -> Result<()> {
    match skel.maps.bss_data.as_deref_mut() {
        Some(bss) => {
            bss.dg_ovl_untrusted = 1;
            Ok(())
        }
        None => {
            Err(Error::Load { reason: "the BPF object has no writable data section (.bss)".into(), log: String::new() })
        }
    }
}

pub(super) fn open_and_load(
    pin_dir: Option<&Path>,
    progs: &[&str],
    d_path: bool,
    ovl: OverlayUpper,
) -> Result<DriftguardSkel<'static>> {
    let builder = DriftguardSkelBuilder::default();
    let mut open = builder
        .open(leak_storage())
        .map_err(|e| Error::Load { reason: format!("opening the BPF object: {e}"), log: libbpf_log::tail(20) })?;
    set_autoload(&mut open, progs);
    match open.maps.rodata_data.as_deref_mut() {
        Some(ro) => {
            ro.dg_use_d_path = u32::from(d_path);
            // Where the loader found no BTF for struct ovl_inode, the programs must not find one
            // either (overlay loaded in between): the read that was proved is the one used.
            ro.dg_ovl_layout = u32::from(ovl.is_layout());
            ro.dg_ovl_layout_skew = ovl.skew();
        }
        None => {
            return Err(Error::Load {
                reason: "the BPF object has no read-only data section".into(),
                log: String::new(),
            })
        }
    }
    if let Some(dir) = pin_dir {
        let m = &mut open.maps;
        for (name, map) in [
            (store::MAP_POLICIES, &mut m.dg_policies),
            (store::MAP_PATHS, &mut m.dg_paths),
            (store::MAP_LEVELS, &mut m.dg_level_mask),
            (store::MAP_EVENTS, &mut m.dg_events),
            (store::MAP_STATS, &mut m.dg_stats),
        ] {
            map.set_pin_path(dir.join(name))
                .map_err(|e| Error::Load { reason: format!("setting pin path of {name}: {e}"), log: String::new() })?;
        }
    }
    libbpf_log::clear();
    open.load().map_err(|e| classify_load_error(e, pin_dir))
}

pub(super) fn classify_load_error(e: libbpf_rs::Error, pin_dir: Option<&Path>) -> Error {
    let log = libbpf_log::tail(30);
    let reason = e.to_string();
    if let Some(dir) = pin_dir {
        if log.contains("couldn't reuse pinned map") || log.contains("failed to reuse") {
            return Error::IncompatiblePin { dir: dir.to_path_buf(), detail: last_matching(&log, "reuse") };
        }
    }
    if let Some(program) = libbpf_log::failed_program(&log) {
        if e.kind() == libbpf_rs::ErrorKind::PermissionDenied && !log.contains("BEGIN PROG LOAD LOG") {
            // Refused before verification (no trampolines here, lockdown, missing CAP_BPF...).
            return Error::ProgramRejected { program, reason: format!("{reason} (refused before verification)"), log };
        }
        return Error::ProgramRejected { program, reason, log };
    }
    if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
        return Error::NotPermitted(format!("{reason}; {}", first_line(&last_matching(&log, "libbpf"))));
    }
    Error::Load { reason, log }
}

pub(super) fn last_matching(log: &str, needle: &str) -> String {
    log.lines().rev().find(|l| l.contains(needle)).unwrap_or("").to_string()
}

pub(super) fn store_from_skel(skel: &DriftguardSkel<'static>) -> Result<PolicyStore> {
    let m = &skel.maps;
    let dup = |name: &'static str, map: &libbpf_rs::Map<'static>| {
        MapHandle::try_from(map).map_err(|source| Error::Map { map: name, op: "dup", source })
    };
    PolicyStore::new(
        dup(store::MAP_POLICIES, &m.dg_policies)?,
        dup(store::MAP_PATHS, &m.dg_paths)?,
        dup(store::MAP_LEVELS, &m.dg_level_mask)?,
        dup(store::MAP_STATS, &m.dg_stats)?,
    )
}
