//! Kernel tests: the real BPF programs, the real kernel, real overlayfs and cgroups.
//!
//! * On the host they run against this kernel (here: the tracepoint + SIGKILL
//!   fallback, because trampolines are refused on this machine).
//! * The `vm_lsm_*` trials boot Debian's 5.10, 6.1 and 6.12 kernels in qemu and run
//!   this same binary inside, where BPF LSM works: every exec case must then
//!   fail with EPERM, and the LSM-only cases (ld.so, `#!` scripts) run too.
//!
//! A "container" here is an overlay mount (lower = image, upper = writable
//! layer), a cgroup v2 directory, and a process that joins the cgroup and
//! chroots into the merged directory before exec — what runc does, minus
//! namespaces.
//!
//! Trials that cannot run (not root, no kernels) are reported as ignored with
//! the reason; with DRIFTGUARD_REQUIRE_ALL=1 (CI) they fail instead.

#[path = "support/bpf_suite.rs"]
mod suite;
#[path = "support/vm.rs"]
mod vm;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use driftguard::enforcer::abi::{self, RawInput};
use driftguard::enforcer::{
    self, Action, DecisionTester, EnforcementPath, Enforcer, EnforcerOptions, FileKind, Hook, LayoutProof,
    OverlayUpper, Owner, PolicyStore, Rule,
};
use driftguard::policy::{ExecPath, Mode, Policy};
use driftguard::provenance::Provenance;
use libtest_mimic::{Arguments, Failed};

use suite::*;

fn main() {
    if std::env::var_os(MEMLOCK_CHILD).is_some() {
        memlock_child();
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let host_reason = host_requirements();
    let lsm_reason = host_reason.clone().or_else(|| match harness_expectation() {
        Some(EnforcementPath::Lsm) => None,
        _ => Some("needs BPF LSM (mmap/script checks); runs inside the vm_lsm_* trials".to_string()),
    });

    let gate = Gate::from_env().soft("needs BPF LSM");

    // Both enforcement paths.
    for (name, f) in [
        ("decision_function_matches_spec", decision_function_matches_spec as fn() -> R),
        ("enforcement_path_is_the_expected_one", enforcement_path_is_the_expected_one),
        ("image_binary_runs", image_binary_runs),
        ("dropped_binary_denied", dropped_binary_denied),
        ("modified_image_binary_denied", modified_image_binary_denied),
        ("chmod_image_binary_denied", chmod_image_binary_denied),
        ("memfd_exec_denied", memfd_exec_denied),
        ("unopted_cgroup_unaffected", unopted_cgroup_unaffected),
        ("monitor_mode_reports_without_blocking", monitor_mode_reports_without_blocking),
        ("child_cgroup_inherits_policy", child_cgroup_inherits_policy),
        ("allow_listed_drift_allowed", allow_listed_drift_allowed),
        ("deny_listed_image_binary_denied_via_symlink", deny_listed_image_binary_denied_via_symlink),
        ("deny_listed_image_binary_denied_via_relative_path", deny_listed_image_binary_denied_via_relative_path),
        ("allowlist_only_denies_unlisted_image_binary", allowlist_only_denies_unlisted_image_binary),
        ("non_image_rule_and_exec_volumes", non_image_rule_and_exec_volumes),
        ("policy_replace_and_remove", policy_replace_and_remove),
        ("pinned_enforcement_survives_agent_exit", pinned_enforcement_survives_agent_exit),
        ("adopted_pins_flag_their_levels", adopted_pins_flag_their_levels),
        ("full_policy_map_is_a_clear_error", full_policy_map_is_a_clear_error),
        ("policies_pinned_by_v0_1_are_carried_over", policies_pinned_by_v0_1_are_carried_over),
        ("path_lists_replaced_and_removed_across_writers", path_lists_replaced_and_removed_across_writers),
        ("level_mask_updates_are_atomic_across_writers", level_mask_updates_are_atomic_across_writers),
        ("overlay_layout_read_is_proved_and_judges_like_core", overlay_layout_read_is_proved_and_judges_like_core),
        ("overlay_wrong_layout_fails_closed", overlay_wrong_layout_fails_closed),
        ("overlay_implausible_upper_read_is_drift", overlay_implausible_upper_read_is_drift),
        ("memlock_without_sys_resource", memlock_without_sys_resource),
    ] {
        trials.push(gate.trial(name, &host_reason, f));
    }
    // BPF LSM only.
    for (name, f) in [
        ("lsm_ld_so_dropped_binary_denied", lsm_ld_so_dropped_binary_denied as fn() -> R),
        ("lsm_dropped_script_denied", lsm_dropped_script_denied),
        ("lsm_mprotect_exec_of_dropped_file_denied", lsm_mprotect_exec_of_dropped_file_denied),
    ] {
        trials.push(gate.trial(name, &lsm_reason, f));
    }

    if !in_vm() {
        trials.extend(gate.vm_trials("vm_lsm", kernel_suite_in_vm));
    }

    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------
// Cases

/// Reference model of the decision, written from the spec (docs/bpf.md), not from the C.
fn spec_decide(i: &RawInput) -> (u32, u32) {
    if i.mode != abi::DG_MODE_MONITOR && i.mode != abi::DG_MODE_ENFORCE {
        return (abi::DG_MATCH_NONE, abi::DG_ACT_ALLOW);
    }
    // The JIT opt-out lets shmem memory be mapped executable (not exec'd).
    let jit_shmem_map = i.access == abi::DG_ACCESS_MMAP_EXEC && i.shmem != 0 && i.rules & abi::DG_RULE_JIT != 0;
    let rule = if i.access == abi::DG_ACCESS_MEM_WRITE {
        // A write into the caller's own memory (/proc/self/mem): whatever the rule bits, no list.
        if i.file_kind == abi::DG_FILE_OWN_MEMORY {
            abi::DG_MATCH_MEMORY_WRITE
        } else if (i.file_kind == abi::DG_FILE_OTHER_PROCESS || i.file_kind == abi::DG_FILE_FROM_OTHER_CONTAINER)
            && i.rules & abi::DG_RULE_PROCESS_ACCESS != 0
        {
            // Another process's memory (the caller's policy), or this one's from another
            // container (the target's): the rule bit only (the debug opt-out clears it).
            abi::DG_MATCH_PROCESS_ACCESS
        } else {
            abi::DG_MATCH_NONE
        }
    } else if i.access == abi::DG_ACCESS_MEM_EXEC {
        // Memory with no image file's own pages: no path, no list; only the rule bit counts.
        if i.rules & abi::DG_RULE_EXEC_MEMORY != 0 {
            abi::DG_MATCH_EXEC_MEMORY
        } else {
            abi::DG_MATCH_NONE
        }
    } else if i.list == abi::DG_LIST_DENY {
        abi::DG_MATCH_DENY_LIST
    } else if i.file_kind == abi::DG_FILE_FILELESS && i.rules & abi::DG_RULE_FILELESS != 0 && !jit_shmem_map {
        abi::DG_MATCH_FILELESS
    } else if i.list == abi::DG_LIST_ALLOW && i.rules & abi::DG_RULE_ALLOWLIST_ONLY == 0 {
        // Outside allow-list-only mode an allow entry exempts the path from the file rules.
        abi::DG_MATCH_NONE
    } else if matches!(i.file_kind, abi::DG_FILE_UPPER | abi::DG_FILE_UPPER_UNKNOWN)
        && i.rules & abi::DG_RULE_DRIFT != 0
    {
        // A file whose layer could not be told is drift (fail closed).
        abi::DG_MATCH_DRIFT
    } else if matches!(i.file_kind, abi::DG_FILE_OTHER_FS | abi::DG_FILE_OTHER_OVERLAY)
        && i.rules & abi::DG_RULE_NON_IMAGE != 0
    {
        // Not from this container's image layers; an exempt volume (EXEC_VOLUME) is not matched.
        abi::DG_MATCH_NON_IMAGE
    } else if i.access == abi::DG_ACCESS_EXEC
        && i.rules & abi::DG_RULE_ALLOWLIST_ONLY != 0
        && i.list != abi::DG_LIST_ALLOW
    {
        abi::DG_MATCH_NOT_ALLOWED
    } else {
        abi::DG_MATCH_NONE
    };
    if rule == abi::DG_MATCH_NONE {
        return (rule, abi::DG_ACT_ALLOW);
    }
    (rule, if i.mode == abi::DG_MODE_ENFORCE { i.enforce_action } else { abi::DG_ACT_ALERT })
}

fn decision_function_matches_spec() -> R {
    // The tester is a BPF_PROG_TYPE_SYSCALL program (5.14+). 5.10 cannot run it: say so (this
    // limit is listed in docs/bpf.md). dg_decide is pure code with no kernel-dependent part, and
    // every other kernel of the matrix (6.1, 6.12, the host) checks all inputs below.
    if enforcer::kernel_enum_has("bpf_prog_type", "BPF_PROG_TYPE_SYSCALL") == Some(false) {
        println!(
            "LIMIT decision_function_matches_spec: this kernel has no BPF_PROG_TYPE_SYSCALL (5.14+), \
             so BPF_PROG_TEST_RUN cannot run dg_decide here; it is checked on 6.1, 6.12 and 6.18"
        );
        return Ok(());
    }
    let t = DecisionTester::load().map_err(|e| e.to_string())?;
    let mut n = 0;
    // The rule bits that decide (HAS_LISTS and HAS_MOUNTS only steer lookups: set them on odd
    // rounds so that the C is seen to ignore them), every file kind including the memory kinds,
    // every access, shmem or not; the enforce action alternates.
    let deciding = [
        abi::DG_RULE_DRIFT,
        abi::DG_RULE_FILELESS,
        abi::DG_RULE_NON_IMAGE,
        abi::DG_RULE_ALLOWLIST_ONLY,
        abi::DG_RULE_EXEC_MEMORY,
        abi::DG_RULE_JIT,
        abi::DG_RULE_PROCESS_ACCESS,
        abi::DG_RULE_DEBUG,
    ];
    for mode in 0..4 {
        for combo in 0u32..(1 << deciding.len()) {
            let mut rules: u32 =
                deciding.iter().enumerate().filter(|(b, _)| combo & (1 << b) != 0).map(|(_, r)| r).sum();
            if combo % 2 == 1 {
                rules |= abi::DG_RULE_HAS_LISTS | abi::DG_RULE_HAS_MOUNTS;
            }
            for file_kind in 0..=abi::DG_FILE_FROM_OTHER_CONTAINER {
                for list in 0..3 {
                    for access in 0..=abi::DG_ACCESS_MEM_WRITE {
                        for shmem in 0..2 {
                            let enforce_action =
                                if (combo + file_kind + list) % 2 == 0 { abi::DG_ACT_DENY } else { abi::DG_ACT_KILL };
                            let i = RawInput { mode, rules, file_kind, list, access, enforce_action, shmem };
                            let got = t.decide(i).map_err(|e| e.to_string())?;
                            let want = spec_decide(&i);
                            if got != want {
                                return Err(format!("dg_decide({i:?}) = {got:?}, spec says {want:?}").into());
                            }
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    // Spot checks that pin the spec itself.
    let drift = RawInput {
        mode: abi::DG_MODE_ENFORCE,
        rules: abi::DG_RULE_DRIFT,
        file_kind: abi::DG_FILE_UPPER,
        list: 0,
        access: 0,
        enforce_action: abi::DG_ACT_DENY,
        shmem: 0,
    };
    assert_eq!(t.decide(drift).map_err(|e| e.to_string())?, (abi::DG_MATCH_DRIFT, abi::DG_ACT_DENY));
    let allowed = RawInput { list: abi::DG_LIST_ALLOW, ..drift };
    assert_eq!(t.decide(allowed).map_err(|e| e.to_string())?, (abi::DG_MATCH_NONE, abi::DG_ACT_ALLOW));
    let defaults = Policy::with_mode(Mode::Enforce).kernel_rules();
    for (kind, want) in [
        (abi::DG_FILE_IMAGE, abi::DG_MATCH_NONE),
        (abi::DG_FILE_OTHER_FS, abi::DG_MATCH_NON_IMAGE),
        (abi::DG_FILE_OTHER_OVERLAY, abi::DG_MATCH_NON_IMAGE),
        (abi::DG_FILE_EXEC_VOLUME, abi::DG_MATCH_NONE),
        (abi::DG_FILE_UPPER_UNKNOWN, abi::DG_MATCH_DRIFT),
    ] {
        let i = RawInput { rules: defaults, file_kind: kind, ..drift };
        assert_eq!(t.decide(i).map_err(|e| e.to_string())?.0, want, "file kind {kind} under the default rules");
    }
    // The memory rule: on by default, off with the JIT opt-out, which also lets a memfd be
    // mapped executable but never exec'd; a policy pinned before the memory rules has neither.
    let mem = RawInput { rules: defaults, file_kind: abi::DG_FILE_ANONYMOUS, access: abi::DG_ACCESS_MEM_EXEC, ..drift };
    assert_eq!(t.decide(mem).map_err(|e| e.to_string())?, (abi::DG_MATCH_EXEC_MEMORY, abi::DG_ACT_DENY));
    let mut jit = Policy::with_mode(Mode::Enforce);
    jit.rules.exec_memory = driftguard::policy::ExecMemory::Jit;
    let jit = jit.kernel_rules();
    assert_eq!(t.decide(RawInput { rules: jit, ..mem }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    let memfd = RawInput { file_kind: abi::DG_FILE_FILELESS, access: abi::DG_ACCESS_MMAP_EXEC, shmem: 1, ..mem };
    assert_eq!(t.decide(memfd).map_err(|e| e.to_string())?.0, abi::DG_MATCH_FILELESS);
    assert_eq!(t.decide(RawInput { rules: jit, ..memfd }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    let exec = RawInput { rules: jit, access: abi::DG_ACCESS_EXEC, ..memfd };
    assert_eq!(t.decide(exec).map_err(|e| e.to_string())?.0, abi::DG_MATCH_FILELESS);
    let legacy =
        defaults & !(abi::DG_RULE_EXEC_MEMORY | abi::DG_RULE_JIT | abi::DG_RULE_PROCESS_ACCESS | abi::DG_RULE_DEBUG);
    assert_eq!(t.decide(RawInput { rules: legacy, ..mem }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    assert_eq!(t.decide(RawInput { rules: legacy, ..memfd }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_FILELESS);
    // The memory-write rule: in every policy, a pre-rule one included, monitor reports.
    let own = RawInput { rules: legacy, file_kind: abi::DG_FILE_OWN_MEMORY, access: abi::DG_ACCESS_MEM_WRITE, ..drift };
    assert_eq!(t.decide(own).map_err(|e| e.to_string())?, (abi::DG_MATCH_MEMORY_WRITE, abi::DG_ACT_DENY));
    let monitor = RawInput { mode: abi::DG_MODE_MONITOR, ..own };
    assert_eq!(t.decide(monitor).map_err(|e| e.to_string())?, (abi::DG_MATCH_MEMORY_WRITE, abi::DG_ACT_ALERT));
    // The process-access rule: on by default, off with the debug opt-out (own memory stays
    // refused) and in a policy pinned before the rule.
    let other = RawInput { rules: defaults, file_kind: abi::DG_FILE_OTHER_PROCESS, ..own };
    assert_eq!(t.decide(other).map_err(|e| e.to_string())?, (abi::DG_MATCH_PROCESS_ACCESS, abi::DG_ACT_DENY));
    let mut debug = Policy::with_mode(Mode::Enforce);
    debug.rules.process_access = driftguard::policy::ProcessAccess::Debug;
    let debug = debug.kernel_rules();
    assert_eq!(t.decide(RawInput { rules: debug, ..other }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    assert_eq!(t.decide(RawInput { rules: debug, ..own }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_MEMORY_WRITE);
    assert_eq!(t.decide(RawInput { rules: legacy, ..other }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    // Into this container from another: the same bit, of the target's policy.
    let incoming = RawInput { file_kind: abi::DG_FILE_FROM_OTHER_CONTAINER, ..other };
    assert_eq!(t.decide(incoming).map_err(|e| e.to_string())?, (abi::DG_MATCH_PROCESS_ACCESS, abi::DG_ACT_DENY));
    assert_eq!(t.decide(RawInput { rules: debug, ..incoming }).map_err(|e| e.to_string())?.0, abi::DG_MATCH_NONE);
    println!("{n} inputs checked against the spec");
    Ok(())
}

fn enforcement_path_is_the_expected_one() -> R {
    let h = harness()?;
    println!("enforcement path: {} ({:?})", h.path.as_str(), h.fallback_reason);
    // Verifier cost of each program on this kernel (budget 1,000,000), for docs/bpf.md.
    let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: true })
        .map_err(|e| e.to_string())?;
    for p in enf.program_stats() {
        println!("verified_insns {} {}", p.name, p.verified_insns);
    }
    // The fallback must load on every kernel too (a kernel booted without `bpf` in `lsm=` uses
    // it): Debian 6.1 once refused dg_exec_tp alone (E2BIG) while the LSM programs loaded.
    if enf.path() == EnforcementPath::Lsm {
        // With its mapping checks: the syscall tracepoint programs must load here too.
        let tp = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: true, fallback_mappings: true })
            .map_err(|e| format!("the tracepoint fallback does not load on this kernel: {e}"))?;
        for p in tp.program_stats() {
            println!("verified_insns {} {}", p.name, p.verified_insns);
        }
    }
    if let Some(want) = harness_expectation() {
        if h.path != want {
            return Err(
                format!("expected {} but loaded {} ({:?})", want.as_str(), h.path.as_str(), h.fallback_reason).into()
            );
        }
    }
    if h.path == EnforcementPath::TracepointKill {
        let why = h.fallback_reason.as_deref().unwrap_or("");
        if enforcer::bpf_lsm_active().is_ok() && !why.contains("dg_") {
            return Err(format!("fallback reason should name the refused program: {why:?}").into());
        }
    }
    Ok(())
}

fn image_binary_runs() -> R {
    let h = harness()?;
    let c = Container::new("image")?;
    c.install(h, &enforce())?;
    assert_runs(&c.run("true", &["/bin/busybox"])?, "image busybox")?;
    assert_runs(&c.run("sh", &["/bin/sh", "-c", "/bin/busybox true"])?, "image shell running an image binary")?;
    event_barrier(h)?;
    let ev = events_for(h, c.cgid);
    if !ev.is_empty() {
        return Err(format!("clean execs must not produce events: {ev:?}").into());
    }
    Ok(())
}

fn dropped_binary_denied() -> R {
    let h = harness()?;
    let c = Container::new("dropped")?;
    c.install(h, &enforce())?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "binary written in the container")?;
    let e = expect_event(h, &c, "/tmp/dropped", Rule::Drift, denied_action(h))?;
    if e.mode != Mode::Enforce || e.cgroup_id != c.cgid || e.pid == 0 {
        return Err(format!("event fields wrong: {e:?}").into());
    }
    Ok(())
}

fn modified_image_binary_denied() -> R {
    let h = harness()?;
    let c = Container::new("modified")?;
    c.install(h, &enforce())?;
    assert_runs(&c.run("true", &["/bin/tool"])?, "image tool before modification")?;
    // Append a byte: copy-up of an image file.
    let mut f = fs::OpenOptions::new().append(true).open(c.host_path("/bin/tool")).map_err(|e| e.to_string())?;
    f.write_all(b"\0").map_err(|e| e.to_string())?;
    drop(f);
    assert_denied(h, &c.run("true", &["/bin/tool"])?, "modified image binary")?;
    expect_event(h, &c, "/bin/tool", Rule::Drift, denied_action(h))?;
    Ok(())
}

fn chmod_image_binary_denied() -> R {
    let h = harness()?;
    let c = Container::new("chmod")?;
    c.install(h, &enforce())?;
    fs::set_permissions(c.host_path("/bin/tool2"), fs::Permissions::from_mode(0o750)).map_err(|e| e.to_string())?;
    assert_denied(h, &c.run("true", &["/bin/tool2"])?, "chmod'ed (copied-up) image binary")?;
    expect_event(h, &c, "/bin/tool2", Rule::Drift, denied_action(h))?;
    Ok(())
}

fn memfd_exec_denied() -> R {
    let h = harness()?;
    let c = Container::new("memfd")?;
    c.install(h, &enforce())?;
    let bytes = fs::read(busybox().ok_or("busybox")?).map_err(|e| e.to_string())?;
    let name = CString::new("dg-payload").map_err(|e| e.to_string())?;
    // SAFETY: memfd_create with a valid name; no CLOEXEC so the child can exec it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: fd is ours; File takes ownership and closes it.
    let mut f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&bytes).map_err(|e| e.to_string())?;
    let proc_path = format!("/proc/self/fd/{fd}");
    // Not chrooted: /proc is needed to reach the memfd, as in a real fileless attack.
    let out = c.run_in(&c.cgroup, "/", "true", &[&proc_path], false)?;
    drop(f);
    assert_denied(h, &out, "memfd exec")?;
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless, "memfd event")?;
    if !e.path.contains("memfd:dg-payload") || e.action != denied_action(h) {
        return Err(format!("memfd event wrong: {e:?}").into());
    }
    Ok(())
}

fn unopted_cgroup_unaffected() -> R {
    let h = harness()?;
    let c = Container::new("unopted")?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    assert_runs(&c.run("true", &["/tmp/dropped"])?, "dropped binary in a cgroup without policy")?;
    event_barrier(h)?;
    if !events_for(h, c.cgid).is_empty() {
        return Err("a cgroup without policy produced events".into());
    }
    Ok(())
}

fn monitor_mode_reports_without_blocking() -> R {
    let h = harness()?;
    let c = Container::new("monitor")?;
    c.install(h, &Policy::with_mode(Mode::Monitor))?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    match c.run("echo", &["/tmp/dropped", "still-runs"])? {
        Outcome::Exited(0, out) if out.contains("still-runs") => {}
        other => return Err(format!("monitor mode must not block: {other:?}").into()),
    }
    let e = expect_event(h, &c, "/tmp/dropped", Rule::Drift, Action::Alert)?;
    if e.mode != Mode::Monitor {
        return Err(format!("mode in event: {:?}", e.mode).into());
    }
    // One exec, one event: the kernel's own mapping of the binary during the exec is not
    // decided (and reported) a second time by mmap_file.
    event_barrier(h)?;
    let hooks: Vec<Hook> = events_for(h, c.cgid).iter().filter(|e| e.path == "/tmp/dropped").map(|e| e.hook).collect();
    let want = if h.path == EnforcementPath::Lsm { Hook::BprmCheck } else { Hook::ExecTracepoint };
    if hooks != [want] {
        return Err(format!("one exec of the dropped binary gave events from {hooks:?}, want [{want:?}]").into());
    }
    Ok(())
}

fn child_cgroup_inherits_policy() -> R {
    let h = harness()?;
    let mut c = Container::new("nested")?;
    c.install(h, &enforce())?;
    // Ancestor lookups only visit flagged depths: the install must have flagged ours.
    if h.store.level_mask() & (1 << c.level) == 0 {
        return Err(format!("level {} not flagged in the mask {:#x}", c.level, h.store.level_mask()).into());
    }
    let child = c.child_cgroup("escape")?;
    let grandchild = child.join("deeper");
    fs::create_dir(&grandchild).map_err(|e| e.to_string())?;
    c.children.push(grandchild.clone());
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    for cg in [&child, &grandchild] {
        let out = c.run_in(cg, "/", "true", &["/tmp/dropped"], true)?;
        assert_denied(h, &out, &format!("dropped binary from nested cgroup {}", cg.display()))?;
    }
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.cgroup_id != c.cgid, "nested event")?;
    if e.cgroup_id != cgroup_id(&child)? && e.cgroup_id != cgroup_id(&grandchild)? {
        return Err(format!("event cgroup id {} is neither child", e.cgroup_id).into());
    }
    Ok(())
}

/// The agent and the OCI hook flag cgroup depths in one shared word; a lost update would leave
/// a policy that nested cgroups never find. 30 writers (separate handles and mappings, as
/// separate processes would have) flag distinct depths at once, many times over.
fn level_mask_updates_are_atomic_across_writers() -> R {
    let h = harness()?;
    let stores: Vec<_> = (0..30).map(|_| h.store.try_clone().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let mut c = Container::new("levels")?;
    let deep = c.child_cgroup("a")?;
    let mut ids = Vec::new();
    // Install then remove a real policy at each depth 2..=31 on one cgroup id (depth is only
    // recorded, not checked against the id): set_owned is what flags the level.
    let base = cgroup_id(&deep)?;
    std::thread::scope(|sc| {
        for (i, st) in stores.iter().enumerate() {
            let level = 2 + i as u32;
            ids.push(level);
            sc.spawn(move || {
                for _ in 0..200 {
                    let _ = st.set(base, level, &Policy::with_mode(Mode::Monitor), &Provenance::unknown());
                }
            });
        }
    });
    let _ = h.store.remove(base);
    let mask = h.store.level_mask();
    let missing: Vec<u32> = ids.iter().copied().filter(|l| mask & (1 << l) == 0).collect();
    if !missing.is_empty() {
        return Err(format!("levels {missing:?} lost from the mask {mask:#x}").into());
    }
    Ok(())
}

fn allow_listed_drift_allowed() -> R {
    let h = harness()?;
    let c = Container::new("allow")?;
    let mut p = enforce();
    p.allow.insert(ExecPath::new("/tmp/allowed").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    let bb = busybox().ok_or("busybox")?;
    c.drop_file("/tmp/allowed", bb)?;
    c.drop_file("/tmp/other", bb)?;
    assert_runs(&c.run("true", &["/tmp/allowed"])?, "allow-listed dropped binary")?;
    assert_denied(h, &c.run("true", &["/tmp/other"])?, "dropped binary not on the allow list")?;
    expect_event(h, &c, "/tmp/other", Rule::Drift, denied_action(h))?;
    if events_for(h, c.cgid).iter().any(|e| e.path == "/tmp/allowed") {
        return Err("allow-listed exec produced an event".into());
    }
    Ok(())
}

fn deny_listed_image_binary_denied_via_symlink() -> R {
    let h = harness()?;
    let c = Container::new("denysym")?;
    let mut p = enforce();
    p.deny.insert(ExecPath::new("/bin/denied").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    assert_runs(&c.run("true", &["/bin/busybox"])?, "image binary not on the deny list")?;
    assert_denied(h, &c.run("true", &["/bin/link"])?, "deny-listed binary through a symlink")?;
    expect_event(h, &c, "/bin/denied", Rule::DenyList, denied_action(h))?;
    Ok(())
}

fn deny_listed_image_binary_denied_via_relative_path() -> R {
    let h = harness()?;
    let c = Container::new("denyrel")?;
    let mut p = enforce();
    p.deny.insert(ExecPath::new("/bin/denied").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    let out = c.run_in(&c.cgroup, "/bin", "true", &["./denied"], true)?;
    assert_denied(h, &out, "deny-listed binary by relative path")?;
    let out = c.run_in(&c.cgroup, "/tmp", "true", &["../bin/../bin/denied"], true)?;
    assert_denied(h, &out, "deny-listed binary by a dotted relative path")?;
    expect_event(h, &c, "/bin/denied", Rule::DenyList, denied_action(h))?;
    Ok(())
}

fn allowlist_only_denies_unlisted_image_binary() -> R {
    let h = harness()?;
    let c = Container::new("allowonly")?;
    let mut p = enforce();
    p.rules.allowlist_only = true;
    p.allow.insert(ExecPath::new("/bin/busybox").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    assert_runs(&c.run("true", &["/bin/busybox"])?, "allow-listed image binary")?;
    assert_denied(h, &c.run("true", &["/bin/unlisted"])?, "image binary not on the allow list")?;
    expect_event(h, &c, "/bin/unlisted", Rule::NotAllowed, denied_action(h))?;
    Ok(())
}

fn non_image_rule_and_exec_volumes() -> R {
    let h = harness()?;
    let mut c = Container::new("nonimage")?;
    let mnt = c.host_path("/mnt");
    mount("tmpfs", &mnt, "tmpfs", "size=16m")?;
    c.extra_mounts.push(mnt.clone());
    c.drop_file("/mnt/vol-tool", busybox().ok_or("busybox")?)?;
    // Default enforce: not from the image layers, denied.
    c.install(h, &enforce())?;
    assert_denied(h, &c.run("true", &["/mnt/vol-tool"])?, "tmpfs binary under the default rules")?;
    let e = expect_event(h, &c, "/mnt/vol-tool", Rule::NonImage, denied_action(h))?;
    if e.file != FileKind::OtherFs || e.path_image {
        return Err(format!("event for a tmpfs file: {e:?}").into());
    }
    // The pod exempts the volume by its mount point.
    let mut p = enforce();
    p.exec_volumes.insert(ExecPath::new("/mnt").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    assert_runs(&c.run("true", &["/mnt/vol-tool"])?, "binary on an exempt volume")?;
    // A new mount over the same path is not the exempt volume.
    let over = c.host_path("/mnt");
    mount("tmpfs", &over, "tmpfs", "size=16m")?;
    c.extra_mounts.push(over);
    c.drop_file("/mnt/vol-tool", busybox().ok_or("busybox")?)?;
    assert_denied(h, &c.run("true", &["/mnt/vol-tool"])?, "tmpfs mounted over the exempt volume")?;
    // The rule switched off (documented opt-out): runs.
    let mut p = enforce();
    p.rules.non_image = false;
    c.install(h, &p)?;
    assert_runs(&c.run("true", &["/mnt/vol-tool"])?, "tmpfs binary with the non-image rule off")?;
    Ok(())
}

fn policy_replace_and_remove() -> R {
    let h = harness()?;
    let c = Container::new("replace")?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    let mut p = enforce();
    p.deny.insert(ExecPath::new("/bin/denied").map_err(|e| e.to_string())?);
    c.install(h, &p)?;
    assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "enforce")?;
    let back = h.store.get(c.cgid).map_err(|e| e.to_string())?.ok_or("policy not readable")?;
    if back.policy != p || back.level != c.level {
        return Err(format!("read back {back:?}, installed {p:?}").into());
    }
    // Replace: monitor, different list. Old list entries must be gone.
    let mut q = Policy::with_mode(Mode::Monitor);
    q.allow.insert(ExecPath::new("/tmp/dropped").map_err(|e| e.to_string())?);
    c.install(h, &q)?;
    assert_runs(&c.run("true", &["/tmp/dropped"])?, "after replace")?;
    assert_runs(&c.run("true", &["/bin/denied"])?, "deny entry removed by replace")?;
    let back = h.store.get(c.cgid).map_err(|e| e.to_string())?.ok_or("policy not readable")?;
    if back.policy != q {
        return Err(format!("after replace read back {back:?}").into());
    }
    // Remove.
    if !h.store.remove(c.cgid).map_err(|e| e.to_string())? {
        return Err("remove reported no policy".into());
    }
    if h.store.get(c.cgid).map_err(|e| e.to_string())?.is_some() {
        return Err("policy still present after remove".into());
    }
    Ok(())
}

fn pinned_enforcement_survives_agent_exit() -> R {
    let h = harness()?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-test-{}", std::process::id()));
    let _ = enforcer::unload(&pin_dir);
    let opts = EnforcerOptions { pin_dir: Some(pin_dir.clone()), force_fallback: false, fallback_mappings: false };
    let c = Container::new("pinned")?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    let result = (|| -> R {
        let first = Enforcer::load(&opts).map_err(|e| e.to_string())?;
        first.store().set(c.cgid, c.level, &enforce(), &c.provenance(&enforce())?).map_err(|e| e.to_string())?;
        let path = first.path();
        drop(first); // the agent exits (or is SIGKILLed): nothing of its own remains
        if enforcer::pinned_path(&pin_dir) != Some(path) {
            return Err(format!("pinned links missing under {}", pin_dir.display()).into());
        }
        assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "with the agent gone")?;
        // Another process (the OCI hook, `driftguard status`) sees the policy.
        let store = PolicyStore::open_pinned(&pin_dir).map_err(|e| e.to_string())?;
        if store.get(c.cgid).map_err(|e| e.to_string())?.map(|p| p.policy.mode) != Some(Mode::Enforce) {
            return Err("pinned policy not readable".into());
        }
        // A new agent adopts the pinned maps: the policy is still there.
        let second = Enforcer::load(&opts).map_err(|e| e.to_string())?;
        if second.store().get(c.cgid).map_err(|e| e.to_string())?.is_none() {
            return Err("new agent lost the pinned policy".into());
        }
        assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "after the new agent took over")?;
        drop(second);
        let report = enforcer::unload(&pin_dir).map_err(|e| e.to_string())?;
        if report.removed.is_empty() || pin_dir.exists() {
            return Err("unload left pins behind".into());
        }
        // The kernel frees the last link reference from a work queue: wait for it (bounded
        // generously: the VM suites make this machine slow).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = c.run("true", &["/tmp/dropped"])?;
            if matches!(out, Outcome::Exited(0, _)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("after unload the dropped binary still fails: {out:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })();
    let _ = enforcer::unload(&pin_dir);
    result
}

/// Pins left by a build without `dg_level_mask` (or a lost mask): the new agent adopts the
/// policies and must flag their depths before its programs attach, or tasks in nested
/// cgroups of those containers would go unchecked.
fn adopted_pins_flag_their_levels() -> R {
    let h = harness()?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-test-lvl-{}", std::process::id()));
    let _ = enforcer::unload(&pin_dir);
    let opts = EnforcerOptions { pin_dir: Some(pin_dir.clone()), force_fallback: false, fallback_mappings: false };
    let mut c = Container::new("adopt")?;
    let child = c.child_cgroup("nested")?;
    c.drop_file("/tmp/dropped", bb()?)?;
    let result = (|| -> R {
        let first = Enforcer::load(&opts).map_err(|e| e.to_string())?;
        first.store().set(c.cgid, c.level, &enforce(), &c.provenance(&enforce())?).map_err(|e| e.to_string())?;
        drop(first);
        fs::remove_file(pin_dir.join("dg_level_mask")).map_err(|e| format!("removing the mask pin: {e}"))?;
        let second = Enforcer::load(&opts).map_err(|e| e.to_string())?;
        if second.store().level_mask() & (1 << c.level) == 0 {
            return Err(format!("level {} not flagged after adoption", c.level).into());
        }
        assert_denied(h, &c.run_in(&child, "/", "true", &["/tmp/dropped"], true)?, "nested cgroup after adoption")?;
        Ok(())
    })();
    let _ = enforcer::unload(&pin_dir);
    result
}

/// An agent upgraded from 0.1 (16-byte `dg_policies` values, no root filesystem) keeps every
/// pinned policy: the new map gets each one with the root read from a process of its cgroup.
fn policies_pinned_by_v0_1_are_carried_over() -> R {
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    let h = harness()?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-test-v01-{}", std::process::id()));
    let _ = enforcer::unload(&pin_dir);
    fs::create_dir_all(&pin_dir).map_err(|e| e.to_string())?;
    let c = Container::new("v01")?;
    c.drop_file("/tmp/dropped", busybox().ok_or("busybox")?)?;
    let mut sleeper = c.spawn(&["/bin/busybox", "sleep", "600"])?;
    let result = (|| -> R {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut old = MapHandle::create(MapType::Hash, Some("dg_policies"), 8, 16, 16384, &opts)
            .map_err(|e| format!("creating a 0.1 policy map: {e}"))?;
        old.pin(pin_dir.join("dg_policies")).map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        for w in [abi::DG_MODE_ENFORCE, abi::DG_RULE_DRIFT | abi::DG_RULE_FILELESS, c.level, 1] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        old.update(&c.cgid.to_le_bytes(), &v, MapFlags::ANY).map_err(|e| e.to_string())?;
        let enf = Enforcer::load(&EnforcerOptions {
            pin_dir: Some(pin_dir.clone()),
            force_fallback: false,
            fallback_mappings: false,
        })
        .map_err(|e| format!("loading over 0.1 pins: {e}"))?;
        let got = enf.store().get(c.cgid).map_err(|e| e.to_string())?.ok_or("the 0.1 policy was lost")?;
        let want = c.provenance(&enforce())?.rootfs_dev;
        if got.rootfs_dev != want || got.policy.mode != Mode::Enforce || got.owner != Owner::Agent {
            return Err(format!("carried-over policy {got:?}, want rootfs_dev {want}").into());
        }
        if pin_dir.join("dg_policies_v1").exists() {
            return Err("the 0.1 map is still pinned after the new programs attached".into());
        }
        assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "drift after the upgrade")?;
        assert_runs(&c.run("true", &["/bin/busybox"])?, "image binary after the upgrade")?;
        enf.store().remove(c.cgid).map_err(|e| e.to_string())?;
        Ok(())
    })();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = enforcer::unload(&pin_dir);
    result
}

/// Each store remembers the list keys it wrote (so replacing or removing a policy does not scan
/// all of dg_paths), but another writer (the OCI hook, the agent, an earlier agent) may have
/// replaced the entry since: no list entry may be left behind or lost either way.
fn path_lists_replaced_and_removed_across_writers() -> R {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-test-idx-{}", std::process::id()));
    let _ = enforcer::unload(&pin_dir);
    let result = (|| -> R {
        let enf = Enforcer::load(&EnforcerOptions {
            pin_dir: Some(pin_dir.clone()),
            force_fallback: false,
            fallback_mappings: false,
        })
        .map_err(|e| e.to_string())?;
        let hook = enf.store();
        let agent = PolicyStore::open_pinned(&pin_dir).map_err(|e| e.to_string())?;
        let x = (1u64 << 59) + u64::from(std::process::id());
        let with = |paths: &[&str]| -> Result<Policy, libtest_mimic::Failed> {
            let mut p = enforce();
            for d in paths {
                p.deny.insert(ExecPath::new(d).map_err(|e| e.to_string())?);
            }
            Ok(p)
        };
        let deny_of = |st: &PolicyStore| -> Result<Vec<String>, libtest_mimic::Failed> {
            let got = st.get(x).map_err(|e| e.to_string())?.ok_or("policy missing")?;
            Ok(got.policy.deny.iter().map(|p| p.to_string()).collect())
        };
        let unknown = Provenance::unknown();
        hook.set_owned(x, 3, &with(&["/bin/a", "/bin/b"])?, &unknown, Owner::OciHook).map_err(|e| e.to_string())?;
        // Another writer takes over: it never saw /bin/a and /bin/b, they must still go.
        agent.set_owned(x, 3, &with(&["/bin/c"])?, &unknown, Owner::Agent).map_err(|e| e.to_string())?;
        if deny_of(&agent)? != ["/bin/c"] {
            return Err(format!("after the takeover: {:?}", deny_of(&agent)?).into());
        }
        // The first writer again: what it remembers (/bin/a, /bin/b) is stale, /bin/c must go.
        hook.set_owned(x, 3, &with(&["/bin/d"])?, &unknown, Owner::OciHook).map_err(|e| e.to_string())?;
        if deny_of(hook)? != ["/bin/d"] {
            return Err(format!("after the second takeover: {:?}", deny_of(hook)?).into());
        }
        // Remove by a writer whose memory is stale, then reinstall: nothing of before comes back.
        agent.remove(x).map_err(|e| e.to_string())?;
        agent.set_owned(x, 3, &with(&["/bin/e"])?, &unknown, Owner::Agent).map_err(|e| e.to_string())?;
        if deny_of(&agent)? != ["/bin/e"] {
            return Err(format!("after remove and reinstall: {:?}", deny_of(&agent)?).into());
        }
        // The indexed path: the same writer replaces and removes its own lists.
        agent.set_owned(x, 3, &with(&["/bin/f", "/bin/g"])?, &unknown, Owner::Agent).map_err(|e| e.to_string())?;
        agent.set_owned(x, 3, &with(&["/bin/g"])?, &unknown, Owner::Agent).map_err(|e| e.to_string())?;
        if deny_of(&agent)? != ["/bin/g"] {
            return Err(format!("after an indexed replace: {:?}", deny_of(&agent)?).into());
        }
        agent.remove(x).map_err(|e| e.to_string())?;
        hook.set_owned(x, 3, &with(&["/bin/h"])?, &unknown, Owner::OciHook).map_err(|e| e.to_string())?;
        if deny_of(hook)? != ["/bin/h"] {
            return Err(format!("after an indexed remove: {:?}", deny_of(hook)?).into());
        }
        hook.remove(x).map_err(|e| e.to_string())?;
        Ok(())
    })();
    let _ = enforcer::unload(&pin_dir);
    result
}

fn full_policy_map_is_a_clear_error() -> R {
    let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false })
        .map_err(|e| e.to_string())?;
    let store = enf.store();
    let max = store.policies_max();
    let p = enforce();
    // Fake cgroup ids far from real inode numbers: nothing runs in them.
    let base = 1u64 << 60;
    for i in 0..max as u64 {
        store.set(base + i, 3, &p, &Provenance::unknown()).map_err(|e| format!("entry {i} of {max}: {e}"))?;
    }
    match store.set(base + max as u64, 3, &p, &Provenance::unknown()) {
        Err(enforcer::Error::MapFull { map, max: m, cgroup_id }) => {
            if map != "dg_policies" || m != max || cgroup_id != base + max as u64 {
                return Err(format!("MapFull fields wrong: {map} {m} {cgroup_id}").into());
            }
            let msg = enforcer::Error::MapFull { map, max: m, cgroup_id }.to_string();
            if !msg.contains("full") || !msg.contains(&cgroup_id.to_string()) {
                return Err(format!("message not clear: {msg}").into());
            }
        }
        other => return Err(format!("expected MapFull, got {other:?}").into()),
    }
    // Existing entries intact; replacing one still works; freeing one makes room.
    if store.get(base).map_err(|e| e.to_string())?.is_none() {
        return Err("existing entry lost after a failed insert".into());
    }
    store.set(base, 3, &Policy::with_mode(Mode::Monitor), &Provenance::unknown()).map_err(|e| e.to_string())?;
    store.remove(base + 1).map_err(|e| e.to_string())?;
    store.set(base + max as u64, 3, &p, &Provenance::unknown()).map_err(|e| e.to_string())?;
    Ok(())
}

fn lsm_ld_so_dropped_binary_denied() -> R {
    let h = harness()?;
    let c = Container::new("ldso")?;
    c.install(h, &enforce())?;
    let d = dyn_bin().ok_or("no dynamic binary (coreutils true) available")?;
    c.drop_file("/tmp/dyn-dropped", d)?;
    assert_runs(&c.run("ld.so", &["/lib64/ld-linux-x86-64.so.2", "/usr/bin/dyn"])?, "ld.so running an image binary")?;
    match c.run("ld.so", &["/lib64/ld-linux-x86-64.so.2", "/tmp/dyn-dropped"])? {
        Outcome::Exited(127, _) => {}
        other => return Err(format!("ld.so /tmp/dyn-dropped should fail to map (exit 127), got {other:?}").into()),
    }
    expect_event(h, &c, "/tmp/dyn-dropped", Rule::Drift, Action::Deny)?;
    Ok(())
}

fn lsm_dropped_script_denied() -> R {
    let h = harness()?;
    let c = Container::new("script")?;
    c.install(h, &enforce())?;
    let p = c.host_path("/tmp/run.sh");
    write_script(&p, "#!/bin/sh\necho script-ran\n")?;
    assert_denied(h, &c.run("run.sh", &["/tmp/run.sh"])?, "#! script written in the container")?;
    expect_event(h, &c, "/tmp/run.sh", Rule::Drift, Action::Deny)?;
    Ok(())
}

fn lsm_mprotect_exec_of_dropped_file_denied() -> R {
    // busybox has no mprotect applet; use the dynamic loader path instead: ld.so maps
    // segments with PROT_EXEC directly, so mprotect is exercised by a mapping made
    // PROT_READ first. We test it through the test binary itself in the VM: map the
    // dropped file read-only and mprotect it executable from inside the cgroup.
    let h = harness()?;
    let c = Container::new("mprotect")?;
    c.install(h, &enforce())?;
    c.drop_file("/tmp/blob", busybox().ok_or("busybox")?)?;
    let path = c.host_path("/tmp/blob");
    let procs = c.cgroup.join("cgroup.procs");
    // Run in a forked child so only it joins the cgroup.
    // SAFETY: fork in a test; the child only does syscalls and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = (|| -> i32 {
            if fs::write(&procs, "0").is_err() {
                return 10;
            }
            let Ok(f) = fs::File::open(&path) else { return 11 };
            use std::os::fd::AsRawFd;
            // SAFETY: mapping a file we opened; checked below.
            let addr =
                unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
            if addr == libc::MAP_FAILED {
                return 12;
            }
            // SAFETY: addr is a 4096-byte mapping we own.
            let rc = unsafe { libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC) };
            if rc == 0 {
                return 0;
            }
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                return 1;
            }
            13
        })();
        // SAFETY: terminate the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = libc::WEXITSTATUS(status);
    if code != 1 {
        let _ = event_barrier(h); // the events listed below are complete
        return Err(format!(
            "mprotect(PROT_EXEC) of a dropped file: expected EPERM (1), child exit {code}; events: {:?}",
            events_for(h, c.cgid)
        )
        .into());
    }
    // A file of the container's root filesystem is reported by its image path.
    let e = expect_event(h, &c, "/tmp/blob", Rule::Drift, Action::Deny)?;
    if e.hook != Hook::FileMprotect {
        return Err(format!("expected the file_mprotect hook, got {:?}", e.hook).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// RLIMIT_MEMLOCK without CAP_SYS_RESOURCE (the DaemonSet's default capabilities)

/// Set in the environment of this test binary re-run as [`memlock_child`].
const MEMLOCK_CHILD: &str = "DG_TEST_MEMLOCK_CHILD";

/// The child: RLIMIT_MEMLOCK at 64 KiB (a common default), CAP_SYS_RESOURCE dropped, then the
/// loader with logs on stderr. Prints `LOADED <path>` or `REFUSED <error>`; never returns.
fn memlock_child() -> ! {
    let r = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3; CAP_SYS_RESOURCE is bit 24.
    let mut hdr = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: setrlimit/capget/capset with valid pointers to structs of the kernel's layout.
    let ok = unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) == 0
            && libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) == 0
            && {
                data[0].effective &= !(1 << 24);
                data[0].permitted &= !(1 << 24);
                libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) == 0
            }
    };
    if !ok {
        println!("SETUP {}", std::io::Error::last_os_error());
        std::process::exit(2);
    }
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    match Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false }) {
        Ok(e) => println!("LOADED {}", e.path().as_str()),
        Err(e) => println!("REFUSED {e}"),
    }
    std::process::exit(0);
}

/// Without CAP_SYS_RESOURCE and with a 64 KiB RLIMIT_MEMLOCK: on 5.11+ (BPF memory charged to
/// the memory cgroup) the programs load and nothing is said; before 5.11 the loader says, in
/// one warning naming the kernel, the limit and the fixes, why loading is about to fail.
fn memlock_without_sys_resource() -> R {
    let exe = std::env::current_exe()?;
    let o = std::process::Command::new(exe).env(MEMLOCK_CHILD, "1").env_remove("DRIFTGUARD_LOG").output()?;
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let release = release.trim();
    let old = driftguard::enforcer::memlock::kernel_version(release).is_none_or(|v| v < (5, 11));
    let advised = err.contains("charges BPF maps to RLIMIT_MEMLOCK") && err.contains("64 KiB") && err.contains(release);
    println!("kernel {release}: {}", out.trim());
    match (old, out.starts_with("LOADED"), advised) {
        (false, true, false) => Ok(()),
        (true, false, true) => {
            // The load error says why too (it is what an operator sees when the agent exits).
            if err.contains("securityContext.memlock=true")
                && err.contains("overlays/kernel-before-5.11")
                && out.contains("charges BPF maps to RLIMIT_MEMLOCK")
            {
                Ok(())
            } else {
                Err(format!("the warning does not name the fixes:\n{err}").into())
            }
        }
        _ => Err(format!(
            "kernel {release} (before 5.11: {old}) without CAP_SYS_RESOURCE, 64 KiB memlock:\n{out}\n{err}"
        )
        .into()),
    }
}

// ---------------------------------------------------------------------------
// VM: the same suite on Debian kernels with BPF LSM.

fn kernel_suite_in_vm(k: &vm::Kernel) -> R {
    let must_run = [
        "lsm_ld_so_dropped_binary_denied",
        "lsm_dropped_script_denied",
        "lsm_mprotect_exec_of_dropped_file_denied",
        "dropped_binary_denied",
        "memfd_exec_denied",
        "enforcement_path_is_the_expected_one",
    ];
    run_suite_in_vm(k, Vec::new(), &[], &must_run, Duration::from_secs(600))
}

// ---------------------------------------------------------------------------
// Overlay upper layer read without BTF (the layout read): proved at start, checked per read

/// Programs of their own that read overlay's upper dentry at the layout offset `skew` bytes off
/// (the in-process form of DRIFTGUARD_TEST_OVL_LAYOUT), with their own event collector in a
/// [`Harness`] for the suite's helpers. The suite's shared programs stay attached meanwhile:
/// the policy below is installed only in these programs' maps.
fn layout_programs(skew: i32, prove: bool) -> Result<(Enforcer, Harness), Failed> {
    let enf = Enforcer::load_with_overlay(
        &EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false },
        OverlayUpper::ForcedLayout { skew },
        prove,
    )
    .map_err(es)?;
    let h = Harness::of(&enf)?;
    Ok((enf, h))
}

/// The layout read (forced where BTF has struct ovl_inode) passes its proof on this kernel and
/// then judges like CO-RE: a written binary is drift (kind upper), an image binary runs, no
/// read is distrusted.
fn overlay_layout_read_is_proved_and_judges_like_core() -> R {
    let (enf, h) = layout_programs(0, true)?;
    if *enf.overlay_proof() != LayoutProof::Proven {
        return Err(format!("the real layout must pass its proof on this kernel: {:?}", enf.overlay_proof()).into());
    }
    if enf.overlay_failure().is_some() || !enf.kernel_limits().iter().any(|l| l.contains("proved at start")) {
        return Err(format!("limits must say the layout read was proved: {:?}", enf.kernel_limits()).into());
    }
    let c = Container::new("ovl-layout")?;
    c.install(&h, &enforce())?;
    assert_runs(&c.run("true", &["/bin/busybox"])?, "image binary under the proved layout read")?;
    c.drop_file("/tmp/dropped", bb()?)?;
    assert_denied(&h, &c.run("true", &["/tmp/dropped"])?, "written binary under the proved layout read")?;
    let e = expect_event(&h, &c, "/tmp/dropped", Rule::Drift, denied_action(&h))?;
    if e.file != FileKind::Upper {
        return Err(format!("a written binary must be judged upper: {e:?}").into());
    }
    let unknown = enf.stats().map_err(es)?.overlay_unknown;
    if unknown != 0 {
        return Err(format!("{unknown} layout reads were distrusted on a kernel whose layout was proved").into());
    }
    Ok(())
}

/// A layout read 8 bytes off (the next field of struct ovl_inode, as another kernel's layout
/// would put it) fails its proof, and then nothing on the container's root overlay passes as
/// image: the written binary is denied/killed as drift (never allowed), the image binary too
/// (fail closed), the distrusted reads are counted, and the failure is one error line.
fn overlay_wrong_layout_fails_closed() -> R {
    let (enf, h) = layout_programs(8, true)?;
    let LayoutProof::Failed(why) = enf.overlay_proof() else {
        return Err(format!("a layout read 8 bytes off must fail its proof: {:?}", enf.overlay_proof()).into());
    };
    println!("proof failure: {why}");
    match enf.overlay_failure() {
        Some(l) if l.contains("proof FAILED") && l.contains("counts as drift") => {}
        other => return Err(format!("the failure line must say it fails closed: {other:?}").into()),
    }
    let c = Container::new("ovl-wrong")?;
    c.install(&h, &enforce())?;
    c.drop_file("/tmp/dropped", bb()?)?;
    assert_denied(&h, &c.run("true", &["/tmp/dropped"])?, "written binary under a wrong layout")?;
    let e = expect_event(&h, &c, "/tmp/dropped", Rule::Drift, denied_action(&h))?;
    if e.file != FileKind::UpperUnknown {
        return Err(format!("under a failed proof the file's layer is unknown: {e:?}").into());
    }
    assert_denied(&h, &c.run("true", &["/bin/tool"])?, "image binary under a wrong layout (fail closed)")?;
    expect_event(&h, &c, "/bin/tool", Rule::Drift, denied_action(&h))?;
    let unknown = enf.stats().map_err(es)?.overlay_unknown;
    if unknown < 2 {
        return Err(format!("distrusted reads must be counted: {unknown}").into());
    }
    Ok(())
}

/// Without the start-time proof, the per-read check alone: a layout read aimed at the start of
/// struct inode (i_mode, i_uid: never a dentry pointer) is implausible for every file, so both
/// the written and the image binary are drift of unknown layer, and counted.
fn overlay_implausible_upper_read_is_drift() -> R {
    let size = enforcer::kernel_struct_size("inode").ok_or("no struct inode in the kernel's BTF")?;
    let skew = -i32::try_from(size).map_err(es)?;
    let (enf, h) = layout_programs(skew, false)?;
    let c = Container::new("ovl-implausible")?;
    c.install(&h, &enforce())?;
    c.drop_file("/tmp/dropped", bb()?)?;
    for (path, what) in [("/tmp/dropped", "written binary"), ("/bin/tool", "image binary")] {
        assert_denied(&h, &c.run("true", &[path])?, &format!("{what} with an implausible upper read"))?;
        let e = expect_event(&h, &c, path, Rule::Drift, denied_action(&h))?;
        if e.file != FileKind::UpperUnknown {
            return Err(format!("{what}: an implausible read must give upper_unknown: {e:?}").into());
        }
    }
    let unknown = enf.stats().map_err(es)?.overlay_unknown;
    if unknown < 2 {
        return Err(format!("implausible reads must be counted: {unknown}").into());
    }
    Ok(())
}
