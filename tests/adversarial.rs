//! Adversarial and fault tests: an attacker inside an enforced container tries every way we know
//! to run code the image did not ship; faults (ring buffer overflow, vanished cgroups, agent
//! SIGKILL, runtime restart) must leave enforcement intact.
//!
//! Same pattern as tests/kernel.rs: a "container" is an overlay mount + a cgroup v2 directory +
//! chroot; the suite runs on the host (here: the tracepoint + SIGKILL fallback) and is re-run by
//! the `vm_adv_*` trials inside qemu with Debian 5.10 / 6.1 / 6.12 kernels (BPF LSM, `DG_EXPECT_PATH=lsm`).
//! Trials that hit a known limit of the fallback path assert that the limit *exists* on the
//! fallback (so a change is noticed) and that it is closed with BPF LSM. See docs/threat-model.md.
//!
//! The `agent_*` trials (runc + the NRI test peer + the real `driftguard run`) run on the host only.
//!
//! Trials named `bug_*` assert the secure outcome of a case the product currently gets wrong:
//! they fail until the product is fixed (see docs/threat-model.md, "Open findings").

#[path = "support/agent_process.rs"]
mod agent_process;
#[path = "support/memory_trials.rs"]
mod memory;
#[path = "support/process_trials.rs"]
mod process;
#[path = "support/rootfs.rs"]
mod rootfs;
#[path = "support/runc_nri.rs"]
mod runc_nri;
#[path = "support/bpf_suite.rs"]
mod suite;
#[path = "support/vm.rs"]
mod vm;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use driftguard::check::find_in_path;
use driftguard::enforcer::{self, Action, Enforcer, EnforcerOptions, Event, FileKind, Hook, Owner, PolicyStore, Rule};
use driftguard::policy::{ExecPath, Mode, Policy};
use driftguard::provenance::Provenance;
use libtest_mimic::{Arguments, Failed};

use suite::*;

/// Guest directory of the payloads (a .so and a dlopen helper) built on the host with `cc`.
const VM_PAYLOAD_DIR: &str = "/opt/dg-adv";
const PAYLOAD_MARK: &str = "DG-PAYLOAD-RAN";

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let gate = Gate::from_env();
    let host_reason = host_requirements();
    // Without a C compiler the dlopen/LD_PRELOAD payloads cannot be built: those trials are
    // counted as skipped (a failure under DRIFTGUARD_REQUIRE_ALL), never quietly passed.
    let payload_reason = host_reason
        .clone()
        .or_else(|| payloads().err().map(|e| e.message().unwrap_or("payloads unavailable").to_string()));

    for (name, f) in [
        ("enforcement_path_is_the_expected_one", enforcement_path_is_the_expected_one as fn() -> R),
        // Bypass attempts.
        ("dropped_binary_by_absolute_path_denied", dropped_binary_by_absolute_path_denied),
        ("dropped_binary_by_relative_path_denied", dropped_binary_by_relative_path_denied),
        ("symlink_in_upper_layer_to_dropped_file_denied", symlink_in_upper_layer_to_dropped_file_denied),
        ("symlink_to_image_file_then_target_replaced_denied", symlink_to_image_file_then_target_replaced_denied),
        ("copy_of_image_binary_denied", copy_of_image_binary_denied),
        ("in_place_modification_and_touch_of_image_file_denied", in_place_modification_and_touch_of_image_file_denied),
        ("chmod_of_image_file_denied", chmod_of_image_file_denied),
        ("hard_link_of_dropped_file_denied", hard_link_of_dropped_file_denied),
        ("hard_link_of_image_file_copies_up_and_is_denied", hard_link_of_image_file_copies_up_and_is_denied),
        ("rename_of_dropped_file_to_image_path_denied", rename_of_dropped_file_to_image_path_denied),
        ("rename_over_image_binary_denied", rename_over_image_binary_denied),
        ("script_written_in_container", script_written_in_container),
        ("image_script_with_dropped_interpreter_denied", image_script_with_dropped_interpreter_denied),
        ("ld_so_running_dropped_binaries", ld_so_running_dropped_binaries),
        ("ld_preload_of_dropped_library", ld_preload_of_dropped_library),
        ("dlopen_of_dropped_library", dlopen_of_dropped_library),
        ("memfd_fexecve_and_proc_fd_exec_denied", memfd_fexecve_and_proc_fd_exec_denied),
        ("proc_self_fd_exec_of_dropped_file_denied", proc_self_fd_exec_of_dropped_file_denied),
        ("o_tmpfile_exec_denied", o_tmpfile_exec_denied),
        ("sysv_shm_exec_mapping_denied", sysv_shm_exec_mapping_denied),
        ("volume_exec_denied_unless_the_pod_exempts_it", volume_exec_denied_unless_the_pod_exempts_it),
        // Image provenance: only this container's own image layers are image.
        ("runtime_dev_tmpfs_exec_denied", runtime_dev_tmpfs_exec_denied),
        ("runtime_bind_mounted_host_files_exec_denied", runtime_bind_mounted_host_files_exec_denied),
        ("second_overlay_exec_denied", second_overlay_exec_denied),
        ("second_overlay_in_user_namespace_exec_denied", second_overlay_in_user_namespace_exec_denied),
        ("binfmt_misc_in_user_namespace_cannot_launder_drift", binfmt_misc_in_user_namespace_cannot_launder_drift),
        ("image_layer_reached_outside_the_rootfs_denied", image_layer_reached_outside_the_rootfs_denied),
        ("other_containers_image_denied", other_containers_image_denied),
        (
            "chroot_bind_mounts_and_proc_root_cannot_forge_list_paths",
            chroot_bind_mounts_and_proc_root_cannot_forge_list_paths,
        ),
        ("unresolvable_deep_path_never_matches_allow", unresolvable_deep_path_never_matches_allow),
        (
            "limit_exec_volume_exemption_stays_in_its_mount_namespace",
            limit_exec_volume_exemption_stays_in_its_mount_namespace,
        ),
        ("dropped_binary_at_path_longer_than_255_bytes_denied", dropped_binary_at_path_longer_than_255_bytes_denied),
        ("self_move_to_child_cgroup_still_enforced", self_move_to_child_cgroup_still_enforced),
        ("limit_self_move_to_sibling_cgroup_escapes", limit_self_move_to_sibling_cgroup_escapes),
        ("limit_deny_list_matches_exact_resolved_path_only", limit_deny_list_matches_exact_resolved_path_only),
        ("allowlist_only_overwritten_allowed_path_denied", allowlist_only_overwritten_allowed_path),
        ("exec_during_and_after_enforcement_reload_denied", exec_during_and_after_enforcement_reload_denied),
        // Must keep working.
        ("image_binaries_and_scripts_keep_working", image_binaries_and_scripts_keep_working),
        ("interpreter_reading_dropped_script_runs", interpreter_reading_dropped_script_runs),
        ("monitor_mode_denies_nothing_reports_everything", monitor_mode_denies_nothing_reports_everything),
        // Faults.
        ("fault_ringbuf_overflow_counts_drops_and_recovers", fault_ringbuf_overflow_counts_drops_and_recovers),
        ("fault_vanished_cgroup_policy_collected", fault_vanished_cgroup_policy_collected),
    ]
    .into_iter()
    .chain(memory::TRIALS)
    .chain(process::TRIALS)
    {
        let reason = if NEEDS_PAYLOADS.contains(&name) { &payload_reason } else { &host_reason };
        trials.push(gate.trial(name, reason, f));
    }

    if !in_vm() {
        let agent_reason = host_reason.clone().or_else(agent_requirements);
        for (name, f) in [
            ("agent_kill9_during_container_burst_keeps_enforcing", agent_kill9_during_container_burst as fn() -> R),
            ("agent_runtime_restart_reconnects_and_resyncs", agent_runtime_restart_reconnects_and_resyncs),
        ] {
            trials.push(gate.trial(name, &agent_reason, f));
        }
        trials.extend(gate.vm_trials("vm_adv", adversarial_suite_in_vm));
        // The fallback in one VM kernel too, so that an older verifier sees its programs: 5.10,
        // which also lacks bpf_find_vma (the mprotect variant that fails closed).
        trials.extend(
            gate.vm_trials("vm_adv_fallback", adversarial_fallback_suite_in_vm)
                .into_iter()
                .filter(|t| t.name().ends_with(&format!("_{}", FALLBACK_VM_KERNEL.replace('.', "_")))),
        );
    }

    let conclusion = libtest_mimic::run(&args, trials);
    // Trials return (failed or not) before this; the payloads built on the host go with them.
    if std::env::var_os("DG_ADV_PAYLOAD_DIR").is_none() {
        let _ = fs::remove_dir_all(host_payload_dir());
    }
    conclusion.exit();
}

/// Trials that need the payloads (a .so and a dlopen helper built with `cc`).
const NEEDS_PAYLOADS: [&str; 2] = ["ld_preload_of_dropped_library", "dlopen_of_dropped_library"];

/// Where the host builds the payloads; removed when the run ends.
fn host_payload_dir() -> PathBuf {
    std::env::temp_dir().join(format!("dg-adv-payloads-{}", std::process::id()))
}

// ---------------------------------------------------------------------------
// Environment (the rest is shared with tests/kernel.rs: tests/support/bpf_suite.rs)

fn agent_requirements() -> Option<String> {
    if find_in_path("runc").is_none() {
        return Some("runc not installed (apt-get install runc)".into());
    }
    rootfs::busybox_missing()
}

// ---------------------------------------------------------------------------
// Payloads: a shared object with a constructor that prints PAYLOAD_MARK, and a dlopen helper.
// Built on the host with `cc` (the VM gets the built files).

struct Payloads {
    so: PathBuf,
    dlopener: PathBuf,
}

fn payloads() -> Result<&'static Payloads, Failed> {
    static P: OnceLock<Result<Payloads, String>> = OnceLock::new();
    P.get_or_init(|| {
        if let Ok(dir) = std::env::var("DG_ADV_PAYLOAD_DIR") {
            let d = PathBuf::from(dir);
            return Ok(Payloads { so: d.join("libdgpayload.so"), dlopener: d.join("dgdlopen") });
        }
        build_payloads()
    })
    .as_ref()
    .map_err(|e| Failed::from(format!("payloads: {e}")))
}

fn build_payloads() -> Result<Payloads, String> {
    let cc =
        find_in_path("cc").or_else(|| find_in_path("gcc")).ok_or("no C compiler (cc) to build the test payloads")?;
    let dir = host_payload_dir();
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let so_c = dir.join("payload.c");
    fs::write(
        &so_c,
        format!(
            "#include <unistd.h>\n__attribute__((constructor)) static void dg_init(void) {{ write(2, \"{PAYLOAD_MARK}\\n\", {}); }}\nint dg_payload(void) {{ return 42; }}\n",
            PAYLOAD_MARK.len() + 1
        ),
    )
    .map_err(|e| e.to_string())?;
    let dl_c = dir.join("dlopen.c");
    fs::write(
        &dl_c,
        "#include <dlfcn.h>\n#include <stdio.h>\nint main(int c, char **v) {\n  void *h = dlopen(v[1], RTLD_NOW);\n  if (!h) { fprintf(stderr, \"dlopen failed: %s\\n\", dlerror()); return 3; }\n  int (*f)(void) = (int (*)(void))dlsym(h, \"dg_payload\");\n  return f && f() == 42 ? 0 : 4;\n}\n",
    )
    .map_err(|e| e.to_string())?;
    let so = dir.join("libdgpayload.so");
    let dlopener = dir.join("dgdlopen");
    for (args, what) in [
        (
            vec![
                "-shared".to_string(),
                "-fPIC".into(),
                "-o".into(),
                so.display().to_string(),
                so_c.display().to_string(),
            ],
            "payload .so",
        ),
        (
            vec!["-o".to_string(), dlopener.display().to_string(), dl_c.display().to_string(), "-ldl".into()],
            "dlopen helper",
        ),
    ] {
        let out = Command::new(&cc).args(&args).output().map_err(|e| format!("{}: {e}", cc.display()))?;
        if !out.status.success() {
            return Err(format!("building the {what}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(Payloads { so, dlopener })
}

// ---------------------------------------------------------------------------
// Containers: the shared image plus the payloads, and raw exec helpers.

/// A test container ([`Container`]) whose image also ships the payloads: `/usr/bin/dgdlopen`
/// and `/usr/lib/libimage.so` (the payload .so as an image library).
fn container(tag: &str) -> Result<Container, Failed> {
    Container::with_image(tag, |lower| {
        if let Ok(p) = payloads() {
            if p.dlopener.exists() {
                copy_exec(&p.dlopener, &lower.join("usr/bin/dgdlopen"))?;
            }
            if p.so.exists() {
                copy_exec(&p.so, &lower.join("usr/lib/libimage.so"))?;
            }
        }
        Ok(())
    })
}

/// Fork; the child joins `cgroup` and runs `body`, which may only make raw syscalls on data
/// prepared before the fork, and returns an exit code (200 + errno for a failed exec).
fn fork_in_cgroup(cgroup: &Path, body: &dyn Fn() -> i32) -> Result<Outcome, Failed> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).map_err(es)?;
    for _ in 0..50 {
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
        }
        if pid == 0 {
            // SAFETY: raw syscalls in the child on prepared data.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    libc::_exit(120);
                }
                libc::close(fd);
                let code = body();
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let out = if libc::WIFSIGNALED(status) {
            Outcome::Signaled(libc::WTERMSIG(status))
        } else {
            let code = libc::WEXITSTATUS(status);
            if code >= 200 {
                Outcome::ExecFailed(code - 200)
            } else {
                Outcome::Exited(code, String::new())
            }
        };
        if matches!(out, Outcome::ExecFailed(libc::ETXTBSY)) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return Ok(out);
    }
    Err("exec kept failing with ETXTBSY".into())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Argument vector for raw exec calls (pointers stay valid while the struct lives).
struct Argv {
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

fn argv(args: &[&str]) -> Argv {
    let strings: Vec<CString> = args.iter().map(|a| CString::new(*a).expect("no NUL")).collect();
    let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    Argv { _strings: strings, ptrs, envp: vec![std::ptr::null()] }
}

/// Child body: execveat(fd, "", AT_EMPTY_PATH) (= fexecve).
fn exec_fd(fd: i32, a: &Argv) -> i32 {
    // SAFETY: raw syscall with prepared, NUL-terminated arrays.
    unsafe {
        libc::syscall(libc::SYS_execveat, fd, c"".as_ptr(), a.ptrs.as_ptr(), a.envp.as_ptr(), libc::AT_EMPTY_PATH);
    }
    200 + errno()
}

/// The running kernel's release when it is older than `version` (`None` when it is not, or
/// cannot be read).
fn kernel_older_than(version: (u32, u32)) -> Option<String> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim().to_string();
    (driftguard::check::parse_kernel_version(&release)? < version).then_some(release)
}

/// Child body: execve(path).
fn exec_path(path: &CString, a: &Argv) -> i32 {
    // SAFETY: raw syscall with prepared, NUL-terminated arrays.
    unsafe {
        libc::execve(path.as_ptr(), a.ptrs.as_ptr(), a.envp.as_ptr());
    }
    200 + errno()
}

// ---------------------------------------------------------------------------
// Trials, one module per family (modules of this test binary, in tests/adversarial/).

#[path = "adversarial/agent.rs"]
mod agent;
#[path = "adversarial/cgroups.rs"]
mod cgroups;
#[path = "adversarial/faults.rs"]
mod faults;
#[path = "adversarial/files.rs"]
mod files;
#[path = "adversarial/loaders.rs"]
mod loaders;
#[path = "adversarial/mounts.rs"]
mod mounts;
#[path = "adversarial/working.rs"]
mod working;
use agent::*;
use cgroups::*;
use faults::*;
use files::*;
use loaders::*;
use mounts::*;
use working::*;

// ---------------------------------------------------------------------------
// VM: the same suite on Debian kernels with BPF LSM.

fn adversarial_suite_in_vm(k: &vm::Kernel) -> R {
    let pl = payloads()?;
    let files = vm_files(pl)?;
    run_suite_in_vm(k, files, &[("DG_ADV_PAYLOAD_DIR", VM_PAYLOAD_DIR)], &[], Duration::from_secs(900))
}

/// What the guest needs besides the test binary: the payloads, and the JIT runtimes at their
/// host paths (the memory trials put them into a test image).
fn vm_files(pl: &Payloads) -> Result<Vec<(PathBuf, PathBuf)>, Failed> {
    let mut files = vec![
        (pl.so.clone(), Path::new(VM_PAYLOAD_DIR).join("libdgpayload.so")),
        (pl.dlopener.clone(), Path::new(VM_PAYLOAD_DIR).join("dgdlopen")),
    ];
    for f in memory::jit_host_files()? {
        let real = fs::canonicalize(&f).map_err(es)?;
        files.push((real, f));
    }
    Ok(files)
}

/// The VM kernel that runs the suite on the fallback.
const FALLBACK_VM_KERNEL: &str = "5.10";
/// Its `lsm=` list without `bpf`: the kernel has BPF LSM built in, but not active.
const FALLBACK_VM_LSM: &str = "lsm=lockdown,yama,integrity,apparmor";

/// The suite on the fallback path (with its mapping checks) inside a VM booted without BPF LSM.
fn adversarial_fallback_suite_in_vm(k: &vm::Kernel) -> R {
    let pl = payloads()?;
    let files = vm_files(pl)?;
    let mut k = k.clone();
    // The kernel takes the last lsm= of its command line.
    k.cmdline = format!("{} {FALLBACK_VM_LSM}", k.cmdline).trim().to_string();
    run_suite_in_vm(
        &k,
        files,
        &[("DG_ADV_PAYLOAD_DIR", VM_PAYLOAD_DIR), ("DG_EXPECT_PATH", "tracepoint_kill")],
        &[],
        Duration::from_secs(900),
    )
}
