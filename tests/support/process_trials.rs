//! Process-memory trials (docs/threat-model.md, "Writes into process memory"): code injected
//! by writing into a process's memory instead of mapping it. Each route runs in an enforced
//! container and in a container with no policy (the control: the write must work there and the
//! injected code run, or the trial proves nothing). With BPF LSM the open fails with EPERM; the
//! tracepoint fallback does not see it yet, which each trial asserts as a LIMIT.
//!
//! Attaching to another process (ptrace, `process_vm_writev`, its `mem`) is tried on a child of
//! the body, which waits until it is killed.
//!
//! A child body returns 0 when the injected code ran, `10 + errno` when the open for writing was
//! refused, `30 + errno` when a reopen was, 99 for a must-work case that worked, 1xx for set-up
//! failures.

use super::memory::{expect_code, run_with_sharer_report, wait_until_parent_gone};
use super::*;

/// `mov eax, 42; ret` (x86_64)
const CODE: [u8; 6] = [0xb8, 42, 0, 0, 0, 0xc3];

/// The function whose text the trials overwrite through `/proc/self/mem`.
#[inline(never)]
extern "C" fn victim() -> i32 {
    std::hint::black_box(1)
}

/// Writes `prefix`, the decimal `n` and `suffix` into `buf` with a NUL, without allocating (the
/// bodies run in a child forked from a threaded process).
fn path_with_number<'a>(buf: &'a mut [u8; 64], prefix: &[u8], n: u32, suffix: &[u8]) -> &'a [u8] {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut len = 0;
    for part in [prefix, &digits[i..], suffix] {
        buf[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    buf[len] = 0;
    &buf[..=len]
}

/// Overwrites [`victim`]'s text with the code through `fd` (a mem file open for writing; the
/// kernel writes read-only text with FOLL_FORCE) and calls it: 0 when the code ran.
fn poke_victim(fd: libc::c_int) -> i32 {
    let f = std::hint::black_box(victim as extern "C" fn() -> i32);
    // SAFETY: writing our own text through our own mem file, then calling it.
    unsafe {
        if libc::pwrite(fd, CODE.as_ptr().cast(), CODE.len(), f as usize as libc::off_t) != CODE.len() as isize {
            return 112;
        }
        if std::hint::black_box(f)() == 42 {
            0
        } else {
            98
        }
    }
}

/// Opens the NUL-terminated `path` with `flags` and pokes: 10 + errno when the open is refused.
fn open_and_poke(path: &[u8], flags: libc::c_int) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr().cast(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return 10 + errno();
    }
    poke_victim(fd)
}

type Body = Box<dyn Fn() -> i32>;

/// In a forked child: die with the parent (`parent`, its pid before the fork), which the
/// fallback may kill mid-trial, so that no child is left behind (stopped by an attach, or
/// waiting forever).
fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl and getppid on ourselves.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(125);
        }
    }
}

/// fork(), returning in the parent only once the child has set [`die_with_parent`] (a pipe is
/// the barrier: an attach right after the fork could otherwise stop the child before it does,
/// and a parent killed then would leave it stopped forever). -1 when the fork failed; 0 in the
/// child.
fn fork_dying_with_parent() -> libc::pid_t {
    // SAFETY: raw syscalls on our own pipe and child.
    unsafe {
        let mut ready = [0; 2];
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return -1;
        }
        let parent = libc::getpid();
        let pid = libc::fork();
        if pid == 0 {
            die_with_parent(parent);
            libc::close(ready[0]);
            libc::write(ready[1], b"r".as_ptr().cast(), 1);
            libc::close(ready[1]);
            return 0;
        }
        libc::close(ready[1]);
        if pid > 0 {
            let mut b = [0u8; 1];
            while libc::read(ready[0], b.as_mut_ptr().cast(), 1) < 0 && errno() == libc::EINTR {}
        }
        libc::close(ready[0]);
        pid
    }
}

/// Refused: `lsm_code` under BPF LSM; on the fallback (the suite opts into its syscall checks)
/// the caller is killed.
fn expect_refused(h: &Harness, out: &Outcome, lsm_code: i32, what: &str) -> R {
    if lsm(h) {
        return expect_code(out, lsm_code, what);
    }
    match out {
        Outcome::Signaled(libc::SIGKILL) => Ok(()),
        other => Err(format!("{what}: expected SIGKILL (fallback syscall checks), got {other:?}").into()),
    }
}

/// The action and hooks of a refusal: `deny` by `lsm_hook`, or `kill` by `fallback_hook`.
fn refusal(h: &Harness, lsm_hook: Hook, fallback_hook: Hook) -> (Action, Hook) {
    if lsm(h) {
        (Action::Deny, lsm_hook)
    } else {
        (Action::Kill, fallback_hook)
    }
}

/// The event names its target and the target passes `ok`.
fn expect_target(e: &Event, ok: impl Fn(&driftguard::enforcer::Target) -> bool) -> R {
    match &e.target {
        Some(t) if ok(t) => Ok(()),
        _ => Err(format!("the event's target is not the process reached: {e:?}").into()),
    }
}

/// The routes to the caller's own memory: (what, refused step, body).
fn own_mem_bodies() -> Vec<(&'static str, i32, Body)> {
    vec![
        ("/proc/self/mem O_RDWR", 10, Box::new(|| open_and_poke(b"/proc/self/mem\0", libc::O_RDWR))),
        ("/proc/self/mem O_WRONLY", 10, Box::new(|| open_and_poke(b"/proc/self/mem\0", libc::O_WRONLY))),
        (
            "/proc/<own pid>/mem",
            10,
            Box::new(|| {
                let mut buf = [0u8; 64];
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() } as u32;
                open_and_poke(path_with_number(&mut buf, b"/proc/", pid, b"/mem"), libc::O_RDWR)
            }),
        ),
        (
            "/proc/self/task/<tid>/mem",
            10,
            Box::new(|| {
                let mut buf = [0u8; 64];
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as u32;
                open_and_poke(path_with_number(&mut buf, b"/proc/self/task/", tid, b"/mem"), libc::O_RDWR)
            }),
        ),
        (
            "a procfs of its own, in new user, pid and mount namespaces (unshare -Urpf --mount-proc)",
            10,
            Box::new(fresh_procfs_own_mem),
        ),
        (
            "/proc/self/mem opened read-only, reopened for writing through /proc/self/fd/N",
            30,
            Box::new(|| {
                // SAFETY: our own mem file, read-only (allowed), then reopened.
                let ro = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDONLY) };
                if ro < 0 {
                    return 110;
                }
                let mut buf = [0u8; 64];
                let path = path_with_number(&mut buf, b"/proc/self/fd/", ro as u32, b"");
                // SAFETY: a NUL-terminated path.
                let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 {
                    return 30 + errno();
                }
                poke_victim(fd)
            }),
        ),
    ]
}

/// What `unshare -Urpf --mount-proc` gives any process: new user, pid and mount namespaces, a
/// fresh procfs instance on `/proc`, and in it the new pid namespace's init opens its own
/// `/proc/self/mem`. The result of [`open_and_poke`] there; a kill is passed on as this process's.
fn fresh_procfs_own_mem() -> i32 {
    // SAFETY: raw syscalls in the forked (single-threaded) trial child and its child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
            return 120;
        }
        let pid = libc::fork();
        if pid < 0 {
            return 121;
        }
        if pid == 0 {
            // pid 1 of the new namespace: getppid() is 0 here, so no die_with_parent check.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let none = std::ptr::null();
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, none.cast()) != 0 {
                libc::_exit(122);
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), flags, none.cast()) != 0 {
                libc::_exit(123);
            }
            libc::_exit(open_and_poke(b"/proc/self/mem\0", libc::O_RDWR));
        }
        let mut st = 0;
        if libc::waitpid(pid, &mut st, 0) != pid {
            return 124;
        }
        if libc::WIFSIGNALED(st) {
            libc::kill(libc::getpid(), libc::WTERMSIG(st));
        }
        libc::WEXITSTATUS(st)
    }
}

/// Reading one's own memory through `/proc/self/mem` keeps working: 99.
fn own_mem_read() -> i32 {
    let f = victim as extern "C" fn() -> i32;
    let mut b = [0u8; 1];
    // SAFETY: our own mem file, read-only.
    unsafe {
        let fd = libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 10 + errno();
        }
        if libc::pread(fd, b.as_mut_ptr().cast(), 1, f as usize as libc::off_t) != 1 {
            return 111;
        }
    }
    99
}

/// One trial: name and body.
pub type Trial = (&'static str, fn() -> R);

pub const TRIALS: [Trial; 10] = [
    ("memory_write_fd_kept_by_a_process_sharing_the_fd_table", memory_write_fd_kept_by_a_process_sharing_the_fd_table),
    ("process_access_compat_syscall", process_access_compat_syscall),
    ("memory_write_through_io_uring_denied", memory_write_through_io_uring_denied),
    ("memory_write_received_mem_fd_denied", memory_write_received_mem_fd_denied),
    ("process_access_denied_into_an_enforced_container", process_access_denied_into_an_enforced_container),
    ("memory_write_own_mem_denied", memory_write_own_mem_denied),
    ("process_access_denied_from_an_enforced_container", process_access_denied_from_an_enforced_container),
    ("process_access_debug_opt_out", process_access_debug_opt_out),
    ("memory_write_shell_only_dd_denied", memory_write_shell_only_dd_denied),
    ("memory_write_monitor_reports", memory_write_monitor_reports),
];

fn memory_write_own_mem_denied() -> R {
    let h = harness()?;
    let c = container("ownmem")?;
    c.install(h, &enforce())?;
    let free = container("ownmem-free")?;
    for (what, step, body) in own_mem_bodies() {
        expect_code(&fork_in_cgroup(&free.cgroup, &*body)?, 0, &format!("control: {what}"))?;
        let out = fork_in_cgroup(&c.cgroup, &*body)?;
        // the fallback kills at the open's exit: the process never holds the fd in user space
        expect_refused(h, &out, step + libc::EPERM, what)?;
        let e = wait_event(
            h,
            |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::MemoryWrite && e.path.ends_with("/mem"),
            &format!("memory_write event ({what})"),
        )?;
        let (action, hook) = refusal(h, Hook::FileOpen, Hook::SysOpen);
        if e.hook != hook || e.file != FileKind::OwnMemory || e.action != action {
            return Err(format!("{what}: expected {hook:?}, own_memory, {action:?}: {e:?}").into());
        }
        // the target is the caller itself
        expect_target(&e, |t| t.pid == e.pid && t.comm == e.comm && t.policy_cgroup_id == c.cgid)?;
    }
    expect_code(&fork_in_cgroup(&c.cgroup, &own_mem_read)?, 99, "reading /proc/self/mem")?;
    Ok(())
}

/// DDexec's primitive with nothing but the image's busybox: `dd` copies a byte of its own text
/// from `/proc/self/mem` onto itself (harmless: the same byte; the real tool writes a loader).
/// The static busybox's text starts at 0x401000.
fn memory_write_shell_only_dd_denied() -> R {
    let h = harness()?;
    let c = container("ddexec")?;
    c.install(h, &enforce())?;
    let free = container("ddexec-free")?;
    let dd = |c: &Container| -> Result<Outcome, Failed> {
        let bb = c.host_str("/bin/busybox");
        let args = [
            bb.as_str(),
            "if=/proc/self/mem",
            "of=/proc/self/mem",
            "bs=1",
            "count=1",
            "skip=4198400",
            "seek=4198400",
            "conv=notrunc",
        ];
        c.run_full(&c.cgroup, "/", "dd", &args, false, &[])
    };
    match dd(&free)? {
        Outcome::Exited(0, _) => {}
        other => return Err(format!("control: dd writing its own text should work: {other:?}").into()),
    }
    let out = dd(&c)?;
    match &out {
        Outcome::Exited(1, t) if lsm(h) && t.contains("Operation not permitted") => {}
        Outcome::Signaled(libc::SIGKILL) if !lsm(h) => {}
        other => {
            return Err(
                format!("dd of=/proc/self/mem should fail with EPERM (SIGKILL on the fallback): {other:?}").into()
            )
        }
    }
    let (action, _) = refusal(h, Hook::FileOpen, Hook::SysOpen);
    wait_event(
        h,
        |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::MemoryWrite && e.action == action,
        "memory_write event of dd",
    )?;
    Ok(())
}

fn memory_write_monitor_reports() -> R {
    let h = harness()?;
    let c = container("ownmem-mon")?;
    c.install(h, &Policy::with_mode(Mode::Monitor))?;
    let body = || open_and_poke(b"/proc/self/mem\0", libc::O_RDWR);
    expect_code(&fork_in_cgroup(&c.cgroup, &body)?, 0, "monitor mode: the write works")?;
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::MemoryWrite, "memory_write alert")?;
    if e.action != Action::Alert || e.mode != Mode::Monitor {
        return Err(format!("monitor mode: expected an alert: {e:?}").into());
    }
    Ok(())
}

/// A word in the target's memory that `process_vm_writev` overwrites.
static TARGET_WORD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ways to reach another process's memory, tried on `pid` (a child of the caller): 0 when the
/// call worked, 10 + errno when it was refused.
#[derive(Clone, Copy, Debug)]
enum Reach {
    Attach,
    Seize,
    ProcessVmWritev,
    MemOpenForWrite,
    /// `/proc/<pid>/task/<tid>/mem`, the same file by its thread's name.
    TaskMemOpenForWrite,
}

const REACHES: [Reach; 5] =
    [Reach::Attach, Reach::Seize, Reach::ProcessVmWritev, Reach::MemOpenForWrite, Reach::TaskMemOpenForWrite];

/// Forks a child that waits (until killed), runs `f` on its pid, kills and reaps it: `f`'s
/// code, or 110 when the fork failed.
fn with_paused_child(f: impl FnOnce(libc::pid_t) -> i32) -> i32 {
    // SAFETY: raw syscalls on our own child, which only pauses.
    unsafe {
        let pid = fork_dying_with_parent();
        if pid < 0 {
            return 110;
        }
        if pid == 0 {
            loop {
                libc::pause();
            }
        }
        let code = f(pid);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        code
    }
}

/// Reaches `pid` (`proc_pid` under `/proc`, whose pid namespace is the node's) `how`: 0 when
/// the call worked, 10 + errno when it was refused.
fn reach(pid: libc::pid_t, proc_pid: libc::pid_t, how: Reach) -> i32 {
    // SAFETY: calls on a process of the test; the buffers live across them.
    let r = unsafe {
        match how {
            Reach::Attach => libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) as i32,
            Reach::Seize => libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) as i32,
            Reach::ProcessVmWritev => {
                let v: u64 = 42;
                let local = libc::iovec { iov_base: &v as *const u64 as *mut libc::c_void, iov_len: 8 };
                let remote = libc::iovec { iov_base: TARGET_WORD.as_ptr().cast(), iov_len: 8 };
                if libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) == 8 {
                    0
                } else {
                    -1
                }
            }
            Reach::MemOpenForWrite | Reach::TaskMemOpenForWrite => {
                let mut buf = [0u8; 64];
                let mut task = [0u8; 64];
                let path = if matches!(how, Reach::MemOpenForWrite) {
                    path_with_number(&mut buf, b"/proc/", proc_pid as u32, b"/mem")
                } else {
                    // /proc/<pid>/task/<pid>/mem: the main thread's tid is the pid
                    let n = path_with_number(&mut task, b"/task/", proc_pid as u32, b"/mem").len();
                    path_with_number(&mut buf, b"/proc/", proc_pid as u32, &task[..n - 1])
                };
                let fd = libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::close(fd);
                    0
                } else {
                    -1
                }
            }
        }
    };
    if r == 0 {
        0
    } else {
        10 + errno()
    }
}

/// Reaches a paused child `how`: 0 when the call worked, 10 + errno when it was refused.
fn reach_child(how: Reach) -> i32 {
    with_paused_child(|pid| reach(pid, pid, how))
}

/// Rule 3's set-up, run by a task of the attacking container: in a pid namespace of its own
/// when `pid_ns` (as every container is; the target shares it, as a `kubectl debug` container
/// shares the pod's), a child joins the target container (`target_procs`, its `cgroup.procs`)
/// and pauses; once it is there (a pipe is the barrier), the caller reaches it `how`. Codes as
/// [`reach`]; 1xx set-up failures.
fn reach_into(target_procs: &std::ffi::CStr, pid_ns: bool, how: Reach) -> i32 {
    // SAFETY: raw syscalls in forked children on data prepared before the fork.
    unsafe {
        if pid_ns {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return 113;
            }
            // the first child is the namespace's pid 1; this task stays outside it
            let init = libc::fork();
            if init < 0 {
                return 110;
            }
            if init > 0 {
                let mut status = 0;
                libc::waitpid(init, &mut status, 0);
                return if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 114 };
            }
            libc::_exit(reach_into(target_procs, false, how));
        }
        let mut fds = [0; 2];
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return 115;
        }
        let parent = libc::getpid();
        let pid = libc::fork();
        if pid < 0 {
            return 110;
        }
        if pid == 0 {
            die_with_parent(parent);
            // the target: join the container, tell the caller our pid under /proc, wait
            let fd = libc::open(target_procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                libc::_exit(120);
            }
            let mut link = [0u8; 16];
            let n = libc::readlink(c"/proc/self".as_ptr(), link.as_mut_ptr().cast(), link.len());
            let mut proc_pid: u32 = 0;
            for &b in &link[..n.max(0) as usize] {
                proc_pid = proc_pid * 10 + u32::from(b - b'0');
            }
            libc::write(fds[1], (&proc_pid as *const u32).cast(), 4);
            loop {
                libc::pause();
            }
        }
        libc::close(fds[1]);
        let mut proc_pid: u32 = 0;
        let code = if libc::read(fds[0], (&mut proc_pid as *mut u32).cast(), 4) != 4 || proc_pid == 0 {
            116
        } else {
            reach(pid, proc_pid as libc::pid_t, how)
        };
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        code
    }
}

/// `PTRACE_TRACEME`: 0 when it worked, 10 + errno when refused.
fn traceme() -> i32 {
    // SAFETY: the caller offers itself to its parent, then exits.
    if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0 {
        0
    } else {
        10 + errno()
    }
}

/// Reading another process's `/proc/<pid>/maps`, `status` and `environ` (read mode) keeps
/// working: 99.
fn read_child_maps() -> i32 {
    with_paused_child(|pid| {
        let mut code = 99;
        for suffix in [&b"/maps"[..], b"/status", b"/environ"] {
            let mut buf = [0u8; 64];
            let path = path_with_number(&mut buf, b"/proc/", pid as u32, suffix);
            let mut b = [0u8; 16];
            // SAFETY: reading a file of our own child into a local buffer.
            unsafe {
                let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::read(fd, b.as_mut_ptr().cast(), b.len()) < 0 {
                    code = 10 + errno();
                }
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
        code
    })
}

fn process_access_denied_from_an_enforced_container() -> R {
    let h = harness()?;
    let c = container("ptrace")?;
    c.install(h, &enforce())?;
    let free = container("ptrace-free")?;
    for how in REACHES {
        expect_code(&fork_in_cgroup(&free.cgroup, &|| reach_child(how))?, 0, &format!("control: {how:?}"))?;
        let out = fork_in_cgroup(&c.cgroup, &|| reach_child(how))?;
        // mem_open reports any refusal of its ptrace check as EACCES (mm_access)
        let errno =
            if matches!(how, Reach::MemOpenForWrite | Reach::TaskMemOpenForWrite) { libc::EACCES } else { libc::EPERM };
        expect_refused(h, &out, 10 + errno, &format!("{how:?} of another process"))?;
        let fallback_hook = match how {
            Reach::Attach | Reach::Seize => Hook::SysPtrace,
            Reach::ProcessVmWritev => Hook::SysProcessVm,
            Reach::MemOpenForWrite | Reach::TaskMemOpenForWrite => Hook::SysOpen,
        };
        let (action, hook) = refusal(h, Hook::PtraceAccess, fallback_hook);
        wait_event(
            h,
            |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::ProcessAccess && e.hook == hook && e.action == action,
            &format!("process_access event ({how:?})"),
        )?;
    }
    for how in [Debugger::TracerPoke, Debugger::MemWriter] {
        expect_code(&fork_in_cgroup(&free.cgroup, &|| debug_child(how))?, 0, &format!("control: {how:?}"))?;
        let out = fork_in_cgroup(&c.cgroup, &|| debug_child(how))?;
        let errno = if matches!(how, Debugger::MemWriter) { libc::EACCES } else { libc::EPERM };
        expect_refused(h, &out, 10 + errno, &format!("{how:?} of another process"))?;
    }
    expect_code(&fork_in_cgroup(&free.cgroup, &traceme)?, 0, "control: PTRACE_TRACEME")?;
    let out = fork_in_cgroup(&c.cgroup, &traceme)?;
    expect_code(&fork_in_cgroup(&c.cgroup, &read_child_maps)?, 99, "reading another process's maps and status")?;
    expect_refused(h, &out, 10 + libc::EPERM, "PTRACE_TRACEME")?;
    let (action, traceme_hook) = refusal(h, Hook::PtraceTraceme, Hook::SysPtrace);
    let (_, attach_hook) = refusal(h, Hook::PtraceAccess, Hook::SysPtrace);
    for traceme in [false, true] {
        let hook = if traceme { traceme_hook } else { attach_hook };
        let e = wait_event(
            h,
            |e| {
                e.policy_cgroup_id == c.cgid
                    && e.rule == Rule::ProcessAccess
                    && e.hook == hook
                    && (lsm(h) || e.target.is_some() == traceme)
            },
            &format!("process_access event ({hook:?}, traceme {traceme})"),
        )?;
        if e.file != FileKind::OtherProcess || e.action != action {
            return Err(format!("expected other_process, {action:?}: {e:?}").into());
        }
        // TRACEME: the parent, which is not in the container (fork_in_cgroup's caller). An
        // attach: the paused child, in the same container; the fallback cannot name it (the
        // call names a pid of the caller's namespace)
        if traceme {
            expect_target(&e, |t| t.pid == e.ppid && t.policy_cgroup_id == 0)?;
        } else if lsm(h) {
            expect_target(&e, |t| {
                t.pid != e.pid && t.cgroup_id == c.cgid && t.policy_cgroup_id == c.cgid && t.comm == e.comm
            })?;
        }
    }
    Ok(())
}

/// `driftguard.dev/process-access: "false"` (debuggers, tracers, profilers): attaching works,
/// writing one's own memory through `/proc/self/mem` stays refused.
fn process_access_debug_opt_out() -> R {
    let h = harness()?;
    let c = container("ptrace-debug")?;
    let mut p = enforce();
    p.rules.process_access = driftguard::policy::ProcessAccess::Debug;
    c.install(h, &p)?;
    for how in REACHES {
        expect_code(&fork_in_cgroup(&c.cgroup, &|| reach_child(how))?, 0, &format!("process-access=false: {how:?}"))?;
    }
    // what debuggers do: write code into the debuggee, which then runs it
    for how in [Debugger::TracerPoke, Debugger::MemWriter] {
        expect_code(&fork_in_cgroup(&c.cgroup, &|| debug_child(how))?, 0, &format!("process-access=false: {how:?}"))?;
    }
    expect_code(&fork_in_cgroup(&c.cgroup, &traceme)?, 0, "process-access=false: PTRACE_TRACEME")?;
    let own = fork_in_cgroup(&c.cgroup, &|| open_and_poke(b"/proc/self/mem\0", libc::O_RDWR))?;
    expect_refused(h, &own, 10 + libc::EPERM, "process-access=false: /proc/self/mem stays refused")?;
    event_barrier(h)?;
    if let Some(e) = events_for(h, c.cgid).into_iter().find(|e| e.rule == Rule::ProcessAccess) {
        return Err(format!("the opted-out container reported process access: {e:?}").into());
    }
    Ok(())
}

/// Rule 3: a task of another container (an unenforced sidecar or a `kubectl debug` container
/// sharing the pod's pid namespace; a container under a policy of its own, debug opt-out
/// included) may not reach into a process under enforce, unless the target container has the
/// debug opt-out. The node's own processes (its pid namespace, no policy) keep their power.
fn process_access_denied_into_an_enforced_container() -> R {
    let h = harness()?;
    let target = container("into")?;
    target.install(h, &enforce())?;
    let debug_policy = || {
        let mut p = enforce();
        p.rules.process_access = driftguard::policy::ProcessAccess::Debug;
        p
    };
    let opted_out = container("into-debug")?;
    opted_out.install(h, &debug_policy())?;
    let sidecar = container("into-sidecar")?;
    let debugger = container("into-debugger")?;
    debugger.install(h, &debug_policy())?;
    let free = container("into-free")?;
    let procs = |c: &Container| CString::new(c.cgroup.join("cgroup.procs").as_os_str().as_bytes()).map_err(es);
    let (into_target, into_opted_out, into_free) = (procs(&target)?, procs(&opted_out)?, procs(&free)?);
    for how in REACHES {
        let run = |from: &Container, to: &CString, pid_ns: bool| {
            fork_in_cgroup(&from.cgroup, &|| reach_into(to, pid_ns, how))
        };
        expect_code(&run(&sidecar, &into_free, true)?, 0, &format!("control: {how:?} between unenforced containers"))?;
        expect_code(
            &run(&sidecar, &into_opted_out, true)?,
            0,
            &format!("{how:?} into a container with the debug opt-out"),
        )?;
        expect_code(
            &run(&free, &into_target, false)?,
            0,
            &format!("{how:?} from the node (its pid namespace, no policy)"),
        )?;
        let refused =
            [("an unenforced sidecar", &sidecar, true), ("a container with the debug opt-out", &debugger, false)];
        for (who, from, pid_ns) in refused {
            let out = run(from, &into_target, pid_ns)?;
            if !lsm(h) {
                expect_code(&out, 0, &format!("fallback limit changed: {how:?} from {who}"))?;
                println!("LIMIT {how:?} from {who} into an enforced container on the tracepoint fallback: it works (docs/threat-model.md)");
                continue;
            }
            let errno = if matches!(how, Reach::MemOpenForWrite | Reach::TaskMemOpenForWrite) {
                libc::EACCES
            } else {
                libc::EPERM
            };
            expect_code(&out, 10 + errno, &format!("{how:?} from {who} into an enforced container"))?;
            let e = wait_event(
                h,
                |e| {
                    e.policy_cgroup_id == target.cgid
                        && e.cgroup_id == from.cgid
                        && e.file == FileKind::FromOtherContainer
                },
                &format!("process_access event ({how:?} from {who})"),
            )?;
            if e.rule != Rule::ProcessAccess || e.hook != Hook::PtraceAccess || e.action != Action::Deny {
                return Err(format!("{how:?} from {who}: expected process_access, ptrace_access, deny: {e:?}").into());
            }
            expect_target(&e, |t| t.pid != e.pid && t.cgroup_id == target.cgid && t.policy_cgroup_id == target.cgid)?;
        }
    }
    event_barrier(h)?;
    if let Some(e) = events_for(h, opted_out.cgid).into_iter().find(|e| e.rule == Rule::ProcessAccess) {
        return Err(format!("the opted-out target reported process access: {e:?}").into());
    }
    Ok(())
}

/// How a body gets a `mem` file opened for writing by a helper process (its child; with
/// `helper_procs`, moved to that cgroup first, e.g. one without policy in the node's pid
/// namespace, whose tasks may open any process's `mem`; the helper's own `mem` is its own
/// memory, which it may open for writing only there).
#[derive(Clone, Copy, Debug)]
enum Receive {
    /// The body's own `mem`, sent over a unix socket (`SCM_RIGHTS`).
    UnixSocketOwn,
    /// The helper's own `mem` (another process, to the body), sent the same way.
    UnixSocketOther,
    /// The body's own `mem`, taken from the helper with `pidfd_getfd`.
    PidfdGetfdOwn,
}

/// Who receives, the helper's cgroup, the expected code, the rule and hook of the event (None:
/// allowed, no event).
type ReceiveCase<'a> = (&'a Container, Option<&'a CString>, i32, Option<(Rule, Hook)>);

const RECEIVES: [Receive; 3] = [Receive::UnixSocketOwn, Receive::UnixSocketOther, Receive::PidfdGetfdOwn];

/// 0: the fd arrived (and, for the body's own memory, the injected code ran); 20: the unix
/// socket delivered no fd (the kernel drops a refused one and sets MSG_CTRUNC); 10 + errno:
/// `pidfd_getfd` refused; 1xx: set-up failures.
fn receive_mem_fd(how: Receive, helper_procs: Option<&std::ffi::CStr>) -> i32 {
    // SAFETY: raw syscalls in the forked helper and here, on buffers that outlive them.
    unsafe {
        let mut sv = [0; 2];
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) != 0 {
            return 115;
        }
        let body = libc::getpid() as u32;
        let helper = libc::fork();
        if helper < 0 {
            return 110;
        }
        if helper == 0 {
            die_with_parent(body as libc::pid_t);
            libc::close(sv[0]);
            if let Some(procs) = helper_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    libc::_exit(120);
                }
            }
            let whose = if matches!(how, Receive::UnixSocketOther) { libc::getpid() as u32 } else { body };
            let mut buf = [0u8; 64];
            let mem = libc::open(path_with_number(&mut buf, b"/proc/", whose, b"/mem").as_ptr().cast(), libc::O_RDWR);
            if mem < 0 {
                libc::_exit(121); // the body reads EOF
            }
            let mut byte = [mem as u8; 1];
            let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            let mut control = [0u64; 4];
            if !matches!(how, Receive::PidfdGetfdOwn) {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
                std::ptr::copy_nonoverlapping((&mem as *const i32).cast::<u8>(), libc::CMSG_DATA(c), 4);
            }
            if libc::sendmsg(sv[1], &msg, 0) != 1 {
                libc::_exit(122);
            }
            // pidfd_getfd takes it from here: hold it until killed
            loop {
                libc::pause();
            }
        }
        libc::close(sv[1]);
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let mut control = [0u64; 4];
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let code = if libc::recvmsg(sv[0], &mut msg, libc::MSG_CMSG_CLOEXEC) != 1 {
            116
        } else if matches!(how, Receive::PidfdGetfdOwn) {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, helper, 0) as i32;
            if pidfd < 0 {
                117
            } else {
                let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, i32::from(byte[0]), 0) as i32;
                if fd < 0 {
                    10 + errno()
                } else {
                    poke_victim(fd)
                }
            }
        } else {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if msg.msg_flags & libc::MSG_CTRUNC != 0 || c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
                20
            } else {
                let mut fd = -1i32;
                std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), (&mut fd as *mut i32).cast::<u8>(), 4);
                if matches!(how, Receive::UnixSocketOwn) {
                    poke_victim(fd)
                } else {
                    0
                }
            }
        };
        libc::kill(helper, libc::SIGKILL);
        libc::waitpid(helper, std::ptr::null_mut(), 0);
        code
    }
}

/// A `mem` file opened for writing by someone allowed to (a process of the node, or one of
/// the container itself under the debug opt-out) and handed over: over a unix socket or with
/// `pidfd_getfd` (`file_receive`). The body's own memory is refused in every policy (rule 1);
/// another process's like attaching to it (rule 2, off with the debug opt-out).
fn memory_write_received_mem_fd_denied() -> R {
    let h = harness()?;
    let enforced = container("recv")?;
    enforced.install(h, &enforce())?;
    let debug = container("recv-debug")?;
    let mut p = enforce();
    p.rules.process_access = driftguard::policy::ProcessAccess::Debug;
    debug.install(h, &p)?;
    let free = container("recv-free")?;
    let node = CString::new(free.cgroup.join("cgroup.procs").as_os_str().as_bytes()).map_err(es)?;
    for how in RECEIVES {
        let run = |c: &Container, helper: Option<&CString>| {
            fork_in_cgroup(&c.cgroup, &|| receive_mem_fd(how, helper.map(|p| p.as_c_str())))
        };
        expect_code(&run(&free, None)?, 0, &format!("control: {how:?}"))?;
        let (own_rule, own_hook) = (Rule::MemoryWrite, Hook::FileReceive);
        let cases: [ReceiveCase; 2] = match how {
            Receive::UnixSocketOwn => [
                (&enforced, Some(&node), 20, Some((own_rule, own_hook))),
                (&debug, None, 20, Some((own_rule, own_hook))),
            ],
            Receive::UnixSocketOther => [
                (&enforced, Some(&node), 20, Some((Rule::ProcessAccess, Hook::FileReceive))),
                (&debug, Some(&node), 0, None),
            ],
            // taking an fd from another process is attaching to it (ptrace_access_check);
            // under the debug opt-out that passes and file_receive refuses the own memory
            Receive::PidfdGetfdOwn => [
                (&enforced, Some(&node), 10 + libc::EPERM, Some((Rule::ProcessAccess, Hook::PtraceAccess))),
                (&debug, None, 10 + libc::EPERM, Some((own_rule, own_hook))),
            ],
        };
        for (c, helper, code, rule) in cases {
            let what =
                format!("{how:?} into {}", if std::ptr::eq(c, &enforced) { "enforce" } else { "the debug opt-out" });
            let out = run(c, helper)?;
            if !lsm(h) {
                if matches!(how, Receive::PidfdGetfdOwn) && std::ptr::eq(c, &enforced) {
                    // pidfd_getfd from a task under policy: killed at the call's entry
                    expect_refused(h, &out, code, &what)?;
                    wait_event(
                        h,
                        |e| e.policy_cgroup_id == c.cgid && e.hook == Hook::SysPidfdGetfd && e.action == Action::Kill,
                        &format!("process_access event ({what})"),
                    )?;
                    continue;
                }
                // no syscall sees a received fd, nor pidfd_getfd's file under the opt-out
                expect_code(&out, 0, &format!("fallback limit changed: {what}"))?;
                if code != 0 {
                    println!("LIMIT {what} on the tracepoint fallback: it works (docs/threat-model.md)");
                }
                continue;
            }
            expect_code(&out, code, &what)?;
            let Some((rule, hook)) = rule else { continue };
            let e = wait_event(
                h,
                |e| e.policy_cgroup_id == c.cgid && e.rule == rule && e.hook == hook,
                &format!("{} event ({what})", rule.as_str()),
            )?;
            if e.action != Action::Deny
                || e.target.is_none()
                || (hook == Hook::FileReceive && !e.path.ends_with("/mem"))
            {
                return Err(format!("{what}: expected a denial naming the mem file and its process: {e:?}").into());
            }
        }
    }
    Ok(())
}

/// `IORING_OP_OPENAT` of the NUL-terminated `path` with `flags`, forced to io_uring's async
/// workers when `async_worker` (`IOSQE_ASYNC`; 5.10 sends every open there anyway): the fd, or
/// -errno. Raw io_uring (no liburing): set up a ring of 4, submit one SQE, wait for its CQE.
fn io_uring_open(path: &[u8], flags: libc::c_int, async_worker: bool) -> i32 {
    const IORING_OP_OPENAT: u8 = 18;
    const IOSQE_ASYNC: u8 = 1 << 4;
    const IORING_ENTER_GETEVENTS: u32 = 1;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x8000000;
    const IORING_OFF_SQES: i64 = 0x10000000;
    // struct io_uring_params: 10 u32, then io_sqring_offsets and io_cqring_offsets (40 bytes each)
    let mut params = [0u32; 30];
    // SAFETY: raw io_uring syscalls on our own ring; the mappings are checked before use.
    unsafe {
        let ring = libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) as i32;
        if ring < 0 {
            return -errno() - 1000;
        }
        let (sq_entries, cq_entries) = (params[0], params[1]);
        let sq = |i: usize| params[10 + i] as usize; // head, tail, ring_mask, ring_entries, flags, dropped, array
        let cq = |i: usize| params[20 + i] as usize; // head, tail, ring_mask, ring_entries, overflow, cqes
        let map = |len: usize, off: i64| {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, ring, off)
        };
        let sq_ring = map(sq(6) + sq_entries as usize * 4, IORING_OFF_SQ_RING);
        let cq_ring = map(cq(5) + cq_entries as usize * 16, IORING_OFF_CQ_RING);
        let sqes = map(sq_entries as usize * 64, IORING_OFF_SQES);
        if [sq_ring, cq_ring, sqes].contains(&libc::MAP_FAILED) {
            return -2000;
        }
        let at = |base: *mut libc::c_void, off: usize| base.cast::<u8>().add(off);
        let sqe = at(sqes, 0);
        std::ptr::write_bytes(sqe, 0, 64);
        *sqe = IORING_OP_OPENAT;
        *sqe.add(1) = if async_worker { IOSQE_ASYNC } else { 0 };
        sqe.add(4).cast::<i32>().write(libc::AT_FDCWD);
        sqe.add(16).cast::<u64>().write(path.as_ptr() as u64);
        sqe.add(28).cast::<u32>().write((flags | libc::O_CLOEXEC) as u32);
        sqe.add(32).cast::<u64>().write(7);
        let mask = *at(sq_ring, sq(2)).cast::<u32>();
        let tail = &*at(sq_ring, sq(1)).cast::<std::sync::atomic::AtomicU32>();
        let t = tail.load(std::sync::atomic::Ordering::Acquire);
        *at(sq_ring, sq(6)).cast::<u32>().add((t & mask) as usize) = 0;
        tail.store(t + 1, std::sync::atomic::Ordering::Release);
        if libc::syscall(libc::SYS_io_uring_enter, ring, 1u32, 1u32, IORING_ENTER_GETEVENTS, 0usize, 0usize) < 0 {
            return -errno() - 3000;
        }
        let head = &*at(cq_ring, cq(0)).cast::<std::sync::atomic::AtomicU32>();
        let cq_tail = &*at(cq_ring, cq(1)).cast::<std::sync::atomic::AtomicU32>();
        let h = head.load(std::sync::atomic::Ordering::Acquire);
        if cq_tail.load(std::sync::atomic::Ordering::Acquire) == h {
            return -4000;
        }
        let cqe = at(cq_ring, cq(5) + ((h & *at(cq_ring, cq(2)).cast::<u32>()) as usize) * 16);
        let res = cqe.add(8).cast::<i32>().read();
        head.store(h + 1, std::sync::atomic::Ordering::Release);
        res
    }
}

/// Opens the caller's own `mem` (`other` false) or its paused child's for writing through
/// io_uring and, for its own, pokes: 0 when the injected code ran (or the child's opened),
/// 10 + errno when the open was refused, 1xx when io_uring itself failed.
fn io_uring_mem(other: bool, async_worker: bool) -> i32 {
    let open = |pid: u32| {
        let mut buf = [0u8; 64];
        io_uring_open(path_with_number(&mut buf, b"/proc/", pid, b"/mem"), libc::O_RDWR, async_worker)
    };
    let result = |fd: i32, then: &dyn Fn(i32) -> i32| match fd {
        fd if fd >= 0 => then(fd),
        e if e > -1000 => 10 - e,
        _ => 130,
    };
    if other {
        with_paused_child(|pid| result(open(pid as u32), &|_| 0))
    } else {
        // SAFETY: getpid has no preconditions.
        result(open(unsafe { libc::getpid() } as u32), &poke_victim)
    }
}

/// The same opens through io_uring, whose opens run in the submitter's task or in its async
/// workers: threads of the process since 5.12, kernel threads borrowing its mm before (5.10),
/// whose cgroup is not the container's.
fn memory_write_through_io_uring_denied() -> R {
    let h = harness()?;
    let c = container("uring")?;
    c.install(h, &enforce())?;
    let free = container("uring-free")?;
    for (other, async_worker) in [(false, false), (false, true), (true, false), (true, true)] {
        let what = format!(
            "io_uring openat of {} mem for writing{}",
            if other { "another process's" } else { "its own" },
            if async_worker { " (IOSQE_ASYNC)" } else { "" }
        );
        let body = || io_uring_mem(other, async_worker);
        expect_code(&fork_in_cgroup(&free.cgroup, &body)?, 0, &format!("control: {what}"))?;
        let out = fork_in_cgroup(&c.cgroup, &body)?;
        if !lsm(h) {
            expect_code(&out, 0, &format!("fallback limit changed: {what}"))?;
            println!("LIMIT {what} on the tracepoint fallback: it runs (docs/threat-model.md)");
            continue;
        }
        let errno = if other { libc::EACCES } else { libc::EPERM };
        expect_code(&out, 10 + errno, &what)?;
        let rule = if other { Rule::ProcessAccess } else { Rule::MemoryWrite };
        let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == rule, &format!("event of {what}"))?;
        if e.action != Action::Deny {
            return Err(format!("{what}: expected a denial: {e:?}").into());
        }
    }
    Ok(())
}

/// What a debugger does to its debuggee, tried by [`debug_child`].
#[derive(Clone, Copy, Debug)]
enum Debugger {
    /// A tracer: `PTRACE_ATTACH`, wait for the stop, `PTRACE_PEEKTEXT`/`POKETEXT` the code
    /// over [`victim`]'s text, `PTRACE_DETACH`.
    TracerPoke,
    /// gdb's way since version 12: `pwrite` into `/proc/<pid>/mem`.
    MemWriter,
}

/// Forks a debuggee that waits on a pipe, then calls [`victim`] and exits with its result;
/// writes the code into it `how`, lets it go: 0 when the debuggee ran the written code (exit
/// 42), 10 + errno when a step was refused, 1xx for set-up failures.
fn debug_child(how: Debugger) -> i32 {
    // SAFETY: raw syscalls on our own child; buffers outlive the calls.
    unsafe {
        let mut go = [0; 2];
        if libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return 115;
        }
        let pid = fork_dying_with_parent();
        if pid < 0 {
            return 110;
        }
        if pid == 0 {
            let mut b = [0u8; 1];
            while libc::read(go[0], b.as_mut_ptr().cast(), 1) < 0 {}
            let f = std::hint::black_box(victim as extern "C" fn() -> i32);
            libc::_exit(f());
        }
        let addr = victim as extern "C" fn() -> i32 as usize;
        let step = match how {
            Debugger::TracerPoke => {
                if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
                    10 + errno()
                } else {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                    *libc::__errno_location() = 0;
                    let word = libc::ptrace(libc::PTRACE_PEEKTEXT, pid, addr, 0) as u64;
                    let mut bytes = word.to_le_bytes();
                    bytes[..CODE.len()].copy_from_slice(&CODE);
                    let poked =
                        errno() == 0 && libc::ptrace(libc::PTRACE_POKETEXT, pid, addr, u64::from_le_bytes(bytes)) == 0;
                    let detached = libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) == 0;
                    if poked && detached {
                        0
                    } else {
                        117
                    }
                }
            }
            Debugger::MemWriter => {
                let mut buf = [0u8; 64];
                let path = path_with_number(&mut buf, b"/proc/", pid as u32, b"/mem");
                let fd = libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd < 0 {
                    10 + errno()
                } else if libc::pwrite(fd, CODE.as_ptr().cast(), CODE.len(), addr as libc::off_t) != CODE.len() as isize
                {
                    118
                } else {
                    0
                }
            }
        };
        libc::write(go[1], b"g".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        match step {
            0 if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42 => 0,
            0 => 119,
            refused => refused,
        }
    }
}

/// The body's pid, for the process sharing its memory and fd table (it may first run after the
/// body is gone).
static FILES_PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The process sharing the body's memory and fd table (`clone(CLONE_VM | CLONE_FILES)`, not a
/// thread): waits (bounded) until the body is gone, looks for a `mem` file in the shared fd
/// table, writes the code over [`victim`] through it and calls it; writes `y` to `arg` (a pipe
/// fd) when the code ran, `n` when it did not, `0` when it found no `mem` file.
extern "C" fn files_sharer(arg: *mut libc::c_void) -> libc::c_int {
    let out = arg as usize as libc::c_int;
    // SAFETY: raw syscalls on the shared memory and fd table.
    unsafe {
        if !wait_until_parent_gone(FILES_PARENT.load(std::sync::atomic::Ordering::SeqCst)) {
            return 1;
        }
        // the harness holds many fds (BPF maps, programs, links): the new one can be far up
        for fd in 0..4096u32 {
            let mut buf = [0u8; 64];
            let mut link = [0u8; 64];
            let path = path_with_number(&mut buf, b"/proc/self/fd/", fd, b"");
            let n = libc::readlink(path.as_ptr().cast(), link.as_mut_ptr().cast(), link.len());
            // "/proc/<pid>/mem (deleted)" once the opener is gone
            if n > 4 && link[..n as usize].windows(4).any(|w| w == b"/mem") {
                let r = poke_victim(fd as libc::c_int);
                libc::write(out, if r == 0 { b"y" } else { b"n" }.as_ptr().cast(), 1);
                return r;
            }
        }
        libc::write(out, b"0".as_ptr().cast(), 1);
    }
    2
}

/// Starts the process sharing memory and fd table, then opens `/proc/self/mem` for writing:
/// 10 + errno when that is refused, 0 when it worked (the body then exits; the sharer writes).
fn share_files_then_open_mem(out: libc::c_int) -> i32 {
    // SAFETY: our own stack mapping; the clone child runs `files_sharer` on it.
    unsafe {
        let stack = libc::mmap(
            std::ptr::null_mut(),
            1 << 16,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return 110;
        }
        FILES_PARENT.store(libc::getpid(), std::sync::atomic::Ordering::SeqCst);
        let top = (stack as usize + (1 << 16)) as *mut libc::c_void;
        let flags = libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD;
        if libc::clone(files_sharer, top, flags, out as usize as *mut libc::c_void) < 0 {
            return 111;
        }
        // the fd must not be closed on exit paths of the body: no O_CLOEXEC matters here, the
        // table outlives the body through the sharer
        let fd = libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return 10 + errno();
        }
        0
    }
}

/// The fallback kills the opener at the open's exit, but the fd stays in its fd table; a
/// process sharing that table and the memory (`clone(CLONE_VM | CLONE_FILES)` without
/// `CLONE_THREAD`) is another thread group, is not killed, and writes the code through it (an
/// asserted LIMIT). With BPF LSM the open is refused and no fd exists.
fn memory_write_fd_kept_by_a_process_sharing_the_fd_table() -> R {
    let h = harness()?;
    let c = container("sharedfiles")?;
    c.install(h, &enforce())?;
    let free = container("sharedfiles-free")?;
    // whether the sharer ran the code (it gives up after its bounded wait)
    let run = |cgroup: &Path| run_with_sharer_report(cgroup, &share_files_then_open_mem);
    match run(&free.cgroup)? {
        (Outcome::Exited(0, _), true) => {}
        other => return Err(format!("control: the sharer should run the code, got {other:?}").into()),
    }
    let (out, ran) = run(&c.cgroup)?;
    if lsm(h) {
        expect_code(&out, 10 + libc::EPERM, "/proc/self/mem with a process sharing the fd table")?;
        if ran {
            return Err("the sharer ran code although the open was refused".into());
        }
        return Ok(());
    }
    match (&out, ran) {
        (Outcome::Signaled(libc::SIGKILL), true) => {}
        other => {
            return Err(format!(
                "LIMIT changed: the opener should be killed and the sharer run the code, got {other:?}"
            )
            .into())
        }
    }
    println!(
        "LIMIT /proc/self/mem with a process sharing the fd table (CLONE_FILES): the opener is killed, the sharer writes through the fd on the fallback (docs/threat-model.md)"
    );
    Ok(())
}

/// `ptrace(PTRACE_ATTACH, pid)` through the 32-bit (compat) syscall entry, `int $0x80`: 0 when
/// it worked, 10 + errno when refused, 100 + errno when the compat entry is not there.
fn compat_ptrace_attach() -> i32 {
    with_paused_child(|pid| {
        let ret: u32;
        // SAFETY: the i386 ptrace call (eax 26; ebx, ecx = request, pid). rbx is reserved by
        // LLVM, so it is swapped in and out.
        unsafe {
            core::arch::asm!(
                "xchg rbx, {a}",
                "int 0x80",
                "xchg rbx, {a}",
                a = inout(reg) libc::PTRACE_ATTACH as u64 => _,
                inlateout("eax") 26u32 => ret,
                in("ecx") pid as u32,
                in("edx") 0u32,
                in("esi") 0u32,
            );
        }
        match ret {
            0 => 0,
            r if r >= 0xffff_f001 && r.wrapping_neg() as i32 == libc::ENOSYS => 100 + libc::ENOSYS,
            r if r >= 0xffff_f001 => 10 + r.wrapping_neg() as i32,
            _ => 120,
        }
    })
}

/// x86-64 syscall tracepoints do not fire for compat (32-bit) syscalls: on the fallback
/// `int $0x80` ptrace attaches unseen (an asserted LIMIT). BPF LSM's `ptrace_access_check`
/// sees every entry.
fn process_access_compat_syscall() -> R {
    let h = harness()?;
    let c = container("compat-ptrace")?;
    c.install(h, &enforce())?;
    let free = container("compat-ptrace-free")?;
    match fork_in_cgroup(&free.cgroup, &compat_ptrace_attach)? {
        Outcome::Exited(0, _) => {}
        Outcome::Exited(c, _) if c == 100 + libc::ENOSYS => {
            println!("LIMIT process_access_compat_syscall: this kernel has no 32-bit syscall entry, so the route cannot be staged");
            return Ok(());
        }
        Outcome::Signaled(libc::SIGSEGV) => {
            println!("LIMIT process_access_compat_syscall: int $0x80 faults (32-bit emulation off), so the route cannot be staged");
            return Ok(());
        }
        other => return Err(format!("control: compat ptrace(PTRACE_ATTACH) should work, got {other:?}").into()),
    }
    let out = fork_in_cgroup(&c.cgroup, &compat_ptrace_attach)?;
    if lsm(h) {
        return expect_code(&out, 10 + libc::EPERM, "compat ptrace(PTRACE_ATTACH)");
    }
    expect_code(&out, 0, "LIMIT changed: compat ptrace(PTRACE_ATTACH) on the fallback")?;
    println!(
        "LIMIT compat ptrace(PTRACE_ATTACH) via int $0x80: works on the fallback, syscall tracepoints do not see 32-bit syscalls (docs/threat-model.md)"
    );
    Ok(())
}
