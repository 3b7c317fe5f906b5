//! Memory trials (W^X; docs/threat-model.md, "Memory"): machine code the image did not ship, run
//! from memory without writing a file. Each route is tried in an enforced container and in a
//! container with no policy (the control: the injected code must really run there, or the trial
//! proves nothing). With BPF LSM the refused step fails with EPERM; on the tracepoint fallback
//! with its mapping checks (`fallback_mappings`, which the suite's harness turns on) the process is
//! SIGKILLed at that step; without them each trial asserts the LIMIT (the code runs).
//!
//! The injected code is `mov eax, 42; ret` (x86_64). A child body returns 0 when the injected code
//! ran, `10 + errno` when the first step (the mapping) was refused, `30 + errno` for a middle step,
//! `50 + errno` when making it executable was refused, 99 when every step worked but there was no
//! code to call (the must-work cases), 1xx for set-up failures.

use super::*;
use driftguard::policy::ExecMemory;

/// `mov eax, 42; ret`
const CODE: [u8; 6] = [0xb8, 42, 0, 0, 0, 0xc3];
const PAGE: usize = 4096;
const HUGE_PAGE: usize = 2 << 20;
const READ_IMPLIES_EXEC: libc::c_ulong = 0x0400000;
/// bpf/memory.h, DG_MEM_ALERT_INTERVAL_NS.
const ALERT_INTERVAL: Duration = Duration::from_secs(10);

/// The function whose own text page the trials try to make writable.
#[inline(never)]
extern "C" fn victim() -> i32 {
    std::hint::black_box(1)
}

/// Run the code at `addr`: 0 when it is the injected code.
///
/// # Safety
/// `addr` must hold [`CODE`] in an executable mapping.
unsafe fn call_code(addr: *mut libc::c_void) -> i32 {
    let f: extern "C" fn() -> i32 = std::mem::transmute(addr);
    if f() == 42 {
        0
    } else {
        98
    }
}

fn rw() -> i32 {
    libc::PROT_READ | libc::PROT_WRITE
}

fn rx() -> i32 {
    libc::PROT_READ | libc::PROT_EXEC
}

fn rwx() -> i32 {
    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC
}

// ---------------------------------------------------------------------------
// Child bodies (raw syscalls only: they run in a child forked from a threaded test process)

/// Anonymous memory mapped with `prot` (`extra` flags: private, shared, hugetlb), the code
/// copied in, called (after an mprotect to RX when `prot` is not writable and executable).
fn anon_map(prot: i32, extra: i32, len: usize) -> i32 {
    // SAFETY: a fresh mapping of our own.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, prot, extra | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return 10 + errno();
        }
        if prot & libc::PROT_WRITE == 0 {
            // PROT_READ|PROT_EXEC with nothing in it: the mapping itself is what is refused.
            return 99;
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        call_code(p)
    }
}

/// Anonymous memory mapped read-write, written, then made executable by `protect`.
fn anon_rw_then(protect: fn(*mut libc::c_void, usize, i32) -> i32) -> i32 {
    // SAFETY: a fresh mapping of our own.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), PAGE, rw(), libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return 110;
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        if protect(p, PAGE, rx()) != 0 {
            return 50 + errno();
        }
        call_code(p)
    }
}

fn mprotect(p: *mut libc::c_void, len: usize, prot: i32) -> i32 {
    // SAFETY: the caller's own mapping.
    unsafe { libc::mprotect(p, len, prot) }
}

fn pkey_mprotect(p: *mut libc::c_void, len: usize, prot: i32) -> i32 {
    // SAFETY: the caller's own mapping; pkey -1 is "no key" (plain mprotect semantics).
    unsafe { libc::syscall(libc::SYS_pkey_mprotect, p, len, prot, -1) as i32 }
}

/// The heap (`brk`) grown, written and made executable.
fn heap_rx() -> i32 {
    // SAFETY: the area sbrk returns is ours; the page is within it.
    unsafe {
        let start = libc::sbrk(3 * PAGE as libc::intptr_t);
        if start as isize == -1 {
            return 110;
        }
        let page = ((start as usize + PAGE - 1) & !(PAGE - 1)) as *mut libc::c_void;
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), page.cast(), CODE.len());
        if libc::mprotect(page, PAGE, rx()) != 0 {
            return 50 + errno();
        }
        call_code(page)
    }
}

/// A page of the stack made executable.
fn stack_rx() -> i32 {
    let mut area = [0u8; 3 * PAGE];
    let page = ((area.as_mut_ptr() as usize + PAGE - 1) & !(PAGE - 1)) as *mut libc::c_void;
    // SAFETY: the page lies inside `area`, which nothing else uses; it is made writable again
    // before `area` goes out of scope.
    unsafe {
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), page.cast(), CODE.len());
        if libc::mprotect(page, PAGE, rx()) != 0 {
            return 50 + errno();
        }
        let r = call_code(page);
        libc::mprotect(page, PAGE, rw());
        std::hint::black_box(&area);
        r
    }
}

/// `personality(READ_IMPLIES_EXEC)`, then a read-write anonymous mapping (which the kernel then
/// makes executable too).
fn personality_mmap() -> i32 {
    // SAFETY: personality and a fresh mapping of our own process.
    unsafe {
        if libc::personality(READ_IMPLIES_EXEC) == -1 {
            return 110;
        }
        let p = libc::mmap(std::ptr::null_mut(), PAGE, rw(), libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return 10 + errno();
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        call_code(p)
    }
}

/// `personality(READ_IMPLIES_EXEC)`, then code written into new heap memory (which the kernel
/// maps executable in `brk`, which no LSM hook sees).
fn personality_heap() -> i32 {
    // SAFETY: personality and sbrk on our own process.
    unsafe {
        if libc::personality(READ_IMPLIES_EXEC) == -1 {
            return 110;
        }
        let start = libc::sbrk(3 * PAGE as libc::intptr_t);
        if start as isize == -1 {
            return 111;
        }
        let page = ((start as usize + PAGE - 1) & !(PAGE - 1)) as *mut libc::c_void;
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), page.cast(), CODE.len());
        call_code(page)
    }
}

/// The page of this program's own text holding [`victim`], made writable and executable, the
/// code written over `victim` and called.
fn own_text_rwx() -> i32 {
    let f = std::hint::black_box(victim as extern "C" fn() -> i32);
    let addr = f as usize;
    let page = (addr & !(PAGE - 1)) as *mut libc::c_void;
    // The code written over `victim` may cross into the next page.
    let len = if addr % PAGE + CODE.len() > PAGE { 2 * PAGE } else { PAGE };
    // SAFETY: our own text; the page stays executable throughout (RWX), so the code running
    // elsewhere in it keeps running.
    unsafe {
        if libc::mprotect(page, len, rwx()) != 0 {
            return 50 + errno();
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), addr as *mut u8, CODE.len());
        if std::hint::black_box(f)() == 42 {
            0
        } else {
            98
        }
    }
}

/// How a file's private mapping is turned into executable, written memory.
#[derive(Clone, Copy, Debug)]
enum FileWay {
    /// mmap(PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE) of the file.
    Rwx,
    /// mmap read-write, write, mprotect read-exec.
    WrittenThenRx,
    /// mmap read-exec (the image's code, allowed), mremap it elsewhere, mprotect read-write,
    /// write, mprotect read-exec.
    RemappedWrittenThenRx,
    /// mmap(MAP_SHARED, PROT_READ) of the file (opened read-only), mprotect read-exec: allowed,
    /// the file is the image's and unchanged (a must-work case: 99).
    SharedThenRx,
    /// mmap(PROT_READ|PROT_EXEC, MAP_PRIVATE): what ld.so does with every library (must work: 99).
    PrivateRx,
}

fn file_mapping(path: &CString, way: FileWay) -> i32 {
    // SAFETY: our own mappings of a file we opened.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 110;
        }
        let map = |prot, flags| libc::mmap(std::ptr::null_mut(), PAGE, prot, flags, fd, 0);
        let p = match way {
            FileWay::Rwx => {
                let p = map(rwx(), libc::MAP_PRIVATE);
                if p == libc::MAP_FAILED {
                    return 10 + errno();
                }
                std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
                p
            }
            FileWay::WrittenThenRx => {
                let p = map(rw(), libc::MAP_PRIVATE);
                if p == libc::MAP_FAILED {
                    return 111;
                }
                std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
                if libc::mprotect(p, PAGE, rx()) != 0 {
                    return 50 + errno();
                }
                p
            }
            FileWay::RemappedWrittenThenRx => {
                let p = map(rx(), libc::MAP_PRIVATE);
                if p == libc::MAP_FAILED {
                    return 10 + errno();
                }
                let spot = libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                let q = libc::mremap(p, PAGE, PAGE, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, spot);
                if q == libc::MAP_FAILED {
                    return 30 + errno();
                }
                if libc::mprotect(q, PAGE, rw()) != 0 {
                    return 112;
                }
                std::ptr::copy_nonoverlapping(CODE.as_ptr(), q.cast(), CODE.len());
                if libc::mprotect(q, PAGE, rx()) != 0 {
                    return 50 + errno();
                }
                q
            }
            FileWay::SharedThenRx => {
                let p = map(libc::PROT_READ, libc::MAP_SHARED);
                if p == libc::MAP_FAILED {
                    return 113;
                }
                if libc::mprotect(p, PAGE, rx()) != 0 {
                    return 50 + errno();
                }
                return 99;
            }
            FileWay::PrivateRx => {
                if map(rx(), libc::MAP_PRIVATE) == libc::MAP_FAILED {
                    return 10 + errno();
                }
                return 99;
            }
        };
        call_code(p)
    }
}

/// `/dev/zero` mapped private read-write, written, made executable (the kernel turns a private
/// `/dev/zero` mapping into anonymous memory).
fn dev_zero_rw_then_rx() -> i32 {
    // SAFETY: our own mapping of /dev/zero.
    unsafe {
        let fd = libc::open(c"/dev/zero".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return 110;
        }
        let p = libc::mmap(std::ptr::null_mut(), PAGE, rw(), libc::MAP_PRIVATE, fd, 0);
        if p == libc::MAP_FAILED {
            return 111;
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        if libc::mprotect(p, PAGE, rx()) != 0 {
            return 50 + errno();
        }
        call_code(p)
    }
}

/// .NET's W^X double mapping: a memfd mapped twice, read-write and read-exec; the code written
/// through the first, called through the second.
fn memfd_double_map() -> i32 {
    // SAFETY: our own memfd and mappings.
    unsafe {
        let fd = libc::memfd_create(c"dg-jit".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 || libc::ftruncate(fd, PAGE as libc::off_t) != 0 {
            return 110;
        }
        let w = libc::mmap(std::ptr::null_mut(), PAGE, rw(), libc::MAP_SHARED, fd, 0);
        if w == libc::MAP_FAILED {
            return 111;
        }
        let x = libc::mmap(std::ptr::null_mut(), PAGE, rx(), libc::MAP_SHARED, fd, 0);
        if x == libc::MAP_FAILED {
            return 30 + errno();
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), w.cast(), CODE.len());
        call_code(x)
    }
}

/// A JIT's working pattern: `n` times, a page mapped read-write, code written, flipped to
/// read-exec and called. 0 when every round ran the code, else the first failure.
fn jit_flips(n: usize) -> i32 {
    for _ in 0..n {
        let r = anon_rw_then(mprotect);
        if r != 0 {
            return r;
        }
    }
    0
}

// ---------------------------------------------------------------------------
// Expectations

/// Refused at `step`: EPERM there with BPF LSM; SIGKILL on the fallback's mapping checks.
fn expect_refused(h: &Harness, out: &Outcome, step: i32, what: &str) -> R {
    match out {
        Outcome::Exited(c, _) if lsm(h) && *c == step + libc::EPERM => Ok(()),
        Outcome::Signaled(libc::SIGKILL) if !lsm(h) => Ok(()),
        other if lsm(h) => {
            Err(format!("{what}: expected EPERM at that step (exit {}), got {other:?}", step + libc::EPERM).into())
        }
        other => Err(format!("{what}: expected SIGKILL (fallback mapping checks), got {other:?}").into()),
    }
}

fn expect_injected(out: &Outcome, what: &str) -> R {
    match out {
        Outcome::Exited(0, _) => Ok(()),
        other => Err(format!("{what}: expected the injected code to run (exit 0), got {other:?}").into()),
    }
}

pub fn expect_code(out: &Outcome, code: i32, what: &str) -> R {
    match out {
        Outcome::Exited(c, _) if *c == code => Ok(()),
        other => Err(format!("{what}: expected exit {code}, got {other:?}").into()),
    }
}

/// An event of `c` for the memory rule from `hook` (the LSM hook: the fallback's syscall
/// tracepoint stands in for it there) about `file`, with `action` (`Deny`: the path's refusal).
fn expect_memory_event(
    h: &Harness,
    c: &Container,
    hook: Hook,
    file: FileKind,
    action: Action,
) -> Result<Event, Failed> {
    let hook = mapping_hook(h, hook);
    let action = if action == Action::Deny { denied_action(h) } else { action };
    let e = wait_event(
        h,
        |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::ExecMemory && e.hook == hook && e.file == file,
        &format!("exec_memory event ({hook:?}, {file:?})"),
    )?;
    if e.action != action || e.prot.is_none() {
        return Err(format!("exec_memory event: expected {action:?} with prot, got {e:?}").into());
    }
    Ok(e)
}

/// On the fallback without its mapping checks: the route is not seen (the code runs), printed
/// as a LIMIT line.
fn fallback_limit(out: &Outcome, what: &str) -> R {
    expect_injected(out, &format!("fallback limit changed: {what}"))?;
    println!(
        "LIMIT {what}: runs on the tracepoint fallback without fallback_mappings (no mapping hook; docs/threat-model.md)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Trials

/// One trial: name and body.
pub type Trial = (&'static str, fn() -> R);

pub const TRIALS: [Trial; 12] = [
    ("exec_memory_anonymous_denied", exec_memory_anonymous_denied),
    ("exec_memory_written_file_mapping_and_own_text_denied", exec_memory_written_file_mapping_and_own_text_denied),
    ("exec_memory_read_implies_exec", exec_memory_read_implies_exec),
    ("exec_memory_jit_opt_out_frees_memory_only", exec_memory_jit_opt_out_frees_memory_only),
    ("exec_memory_monitor_reports_once_per_interval", exec_memory_monitor_reports_once_per_interval),
    ("exec_memory_image_code_keeps_working", exec_memory_image_code_keeps_working),
    ("exec_memory_policy_pinned_before_the_rule_keeps_it_off", exec_memory_policy_pinned_before_the_rule_keeps_it_off),
    ("exec_memory_fallback_checks_are_opt_in", exec_memory_fallback_checks_are_opt_in),
    ("exec_memory_compat_syscall", exec_memory_compat_syscall),
    (
        "exec_memory_mapping_kept_by_a_process_sharing_the_memory",
        exec_memory_mapping_kept_by_a_process_sharing_the_memory,
    ),
    ("exec_memory_real_jit_grep_pcre2", exec_memory_real_jit_grep_pcre2),
    ("exec_memory_real_jit_luajit", exec_memory_real_jit_luajit),
];

type Body = Box<dyn Fn() -> i32>;

/// Routes to anonymous executable memory: (what, refused step, hook, body).
fn anon_bodies() -> Vec<(&'static str, i32, Hook, Body)> {
    vec![
        (
            "mmap(RWX, MAP_PRIVATE|MAP_ANONYMOUS)",
            10,
            Hook::MmapFile,
            Box::new(|| anon_map(rwx(), libc::MAP_PRIVATE, PAGE)),
        ),
        (
            "mmap(RX, MAP_PRIVATE|MAP_ANONYMOUS)",
            10,
            Hook::MmapFile,
            Box::new(|| anon_map(rx(), libc::MAP_PRIVATE, PAGE)),
        ),
        (
            "mmap(RWX, MAP_SHARED|MAP_ANONYMOUS)",
            10,
            Hook::MmapFile,
            Box::new(|| anon_map(rwx(), libc::MAP_SHARED, PAGE)),
        ),
        ("mmap(RW) then mprotect(RX)", 50, Hook::FileMprotect, Box::new(|| anon_rw_then(mprotect))),
        ("mmap(RW) then pkey_mprotect(RX)", 50, Hook::FileMprotect, Box::new(|| anon_rw_then(pkey_mprotect))),
        ("heap (brk) mprotect(RX)", 50, Hook::FileMprotect, Box::new(heap_rx)),
        ("stack mprotect(RX)", 50, Hook::FileMprotect, Box::new(stack_rx)),
    ]
}

/// An enforced container named `tag` and, as the control, one without policy.
fn enforced_with_control(tag: &str) -> Result<(&'static Harness, Container, Container), Failed> {
    let h = harness()?;
    let c = container(tag)?;
    c.install(h, &enforce())?;
    let free = container(&format!("{tag}-free"))?;
    Ok((h, c, free))
}

/// Huge pages for the MAP_HUGETLB route: reserves two (root) and gives the old count back.
struct HugePages(String);

impl HugePages {
    const SYSCTL: &'static str = "/proc/sys/vm/nr_hugepages";

    fn reserve() -> Result<Self, Failed> {
        let old = fs::read_to_string(Self::SYSCTL).map_err(es)?;
        let n: u64 = old.trim().parse().map_err(es)?;
        if n < 2 {
            fs::write(Self::SYSCTL, "2").map_err(|e| format!("reserving huge pages: {e}"))?;
        }
        Ok(HugePages(old.trim().to_string()))
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = fs::write(Self::SYSCTL, &self.0);
    }
}

fn exec_memory_anonymous_denied() -> R {
    let (h, c, free) = enforced_with_control("anonexec")?;
    for (what, step, hook, body) in anon_bodies() {
        let control = fork_in_cgroup(&free.cgroup, &*body)?;
        let ran = if step == 10 && what.contains("(RX") { 99 } else { 0 };
        expect_code(&control, ran, &format!("control: {what}"))?;
        let out = fork_in_cgroup(&c.cgroup, &*body)?;
        if !sees_mappings(h) {
            expect_code(&out, ran, &format!("fallback limit changed: {what}"))?;
            println!("LIMIT {what}: runs on the tracepoint fallback without fallback_mappings (no mapping hook)");
            continue;
        }
        expect_refused(h, &out, step, what)?;
        let e = expect_memory_event(h, &c, hook, FileKind::Anonymous, Action::Deny)?;
        // Off the exec hook, `args` is the process's own command line: the forked child's is
        // this test binary's, and its parent is this process (docs/events.md, "Parent and args").
        let argv0 = std::env::args().next().unwrap_or_default();
        if e.args.as_ref().and_then(|a| a.first()) != Some(&argv0) || e.parent.pid != std::process::id() {
            return Err(format!("{what}: args from {argv0:?}, parent {}: {e:?}", std::process::id()).into());
        }
        if e.mode != Mode::Enforce || !e.path.is_empty() {
            let all: Vec<String> = events_for(h, c.cgid).iter().map(|e| format!("{e:?}")).collect();
            return Err(format!("{what}: anonymous memory has no path: {e:?}\nall events:\n{}", all.join("\n")).into());
        }
    }
    // MAP_HUGETLB: the kernel makes an unlinked hugetlbfs file before the mapping hook runs:
    // read-write-exec is the memory rule (`writable`), read-exec the fileless rule.
    let _huge = HugePages::reserve()?;
    let rwx_huge = || anon_map(rwx(), libc::MAP_PRIVATE | libc::MAP_HUGETLB, HUGE_PAGE);
    let rx_huge = || anon_map(rx(), libc::MAP_PRIVATE | libc::MAP_HUGETLB, HUGE_PAGE);
    expect_injected(&fork_in_cgroup(&free.cgroup, &rwx_huge)?, "control: mmap(RWX, MAP_HUGETLB)")?;
    expect_code(&fork_in_cgroup(&free.cgroup, &rx_huge)?, 99, "control: mmap(RX, MAP_HUGETLB)")?;
    let out = fork_in_cgroup(&c.cgroup, &rwx_huge)?;
    let rx_out = fork_in_cgroup(&c.cgroup, &rx_huge)?;
    if !sees_mappings(h) {
        expect_code(&rx_out, 99, "fallback limit changed: mmap(RX, MAP_HUGETLB)")?;
        return fallback_limit(&out, "mmap(RWX, MAP_HUGETLB)");
    }
    expect_refused(h, &out, 10, "mmap(RWX, MAP_HUGETLB)")?;
    expect_refused(h, &rx_out, 10, "mmap(RX, MAP_HUGETLB)")?;
    if !lsm(h) {
        // At the syscall's entry there is no hugetlbfs file yet, only MAP_ANONYMOUS: both are
        // anonymous memory there, refused as the private and shared routes above, whose events
        // are asserted (docs/bpf.md, "Mapping checks on the fallback").
        return Ok(());
    }
    let huge = |e: &Event| e.policy_cgroup_id == c.cgid && e.hook == Hook::MmapFile && e.path.contains("hugepage");
    wait_event(h, |e| huge(e) && e.rule == Rule::ExecMemory && e.file == FileKind::Writable, "hugetlb RWX event")?;
    wait_event(h, |e| huge(e) && e.rule == Rule::Fileless, "hugetlb RX event")?;
    Ok(())
}

fn exec_memory_written_file_mapping_and_own_text_denied() -> R {
    let (h, c, free) = enforced_with_control("filemod")?;
    // The image's own busybox, mapped privately: the file is the image's, the bytes are not.
    let file = |c: &Container| CString::new(c.host_str("/bin/busybox")).map_err(es);
    let (inside, outside) = (file(&c)?, file(&free)?);
    for (way, step, kind, hook) in [
        (FileWay::Rwx, 10, FileKind::Writable, Hook::MmapFile),
        (FileWay::WrittenThenRx, 50, FileKind::Modified, Hook::FileMprotect),
        (FileWay::RemappedWrittenThenRx, 50, FileKind::Modified, Hook::FileMprotect),
    ] {
        expect_injected(&fork_in_cgroup(&free.cgroup, &|| file_mapping(&outside, way))?, &format!("control: {way:?}"))?;
        let out = fork_in_cgroup(&c.cgroup, &|| file_mapping(&inside, way))?;
        if !sees_mappings(h) {
            fallback_limit(&out, &format!("image file mapping {way:?}"))?;
            continue;
        }
        expect_refused(h, &out, step, &format!("{way:?}"))?;
        if mprotect_blind(h) && hook == Hook::FileMprotect {
            let e = expect_memory_event(h, &c, hook, FileKind::Anonymous, Action::Deny)?;
            if !e.mapping_unknown {
                return Err(format!("{way:?} without bpf_find_vma: expected mapping_unknown: {e:?}").into());
            }
            continue;
        }
        let e = expect_memory_event(h, &c, hook, kind, Action::Deny)?;
        if !e.path.ends_with("/bin/busybox") {
            return Err(format!("{way:?}: the event should name the file: {e:?}").into());
        }
    }
    // /dev/zero mapped private, written, made executable: anonymous memory where the kernel
    // drops the file from the vma, a written private mapping of /dev/zero where it keeps it
    // (before 6.12): refused either way.
    expect_injected(&fork_in_cgroup(&free.cgroup, &dev_zero_rw_then_rx)?, "control: /dev/zero RW then RX")?;
    let out = fork_in_cgroup(&c.cgroup, &dev_zero_rw_then_rx)?;
    if !sees_mappings(h) {
        fallback_limit(&out, "/dev/zero RW then RX")?;
    } else {
        expect_refused(h, &out, 50, "/dev/zero RW then RX")?;
    }
    // The process's own text made writable and executable.
    expect_injected(&fork_in_cgroup(&free.cgroup, &own_text_rwx)?, "control: own text mprotect(RWX)")?;
    let out = fork_in_cgroup(&c.cgroup, &own_text_rwx)?;
    if !sees_mappings(h) {
        return fallback_limit(&out, "own text mprotect(RWX)");
    }
    expect_refused(h, &out, 50, "own text mprotect(RWX)")?;
    let hook = mapping_hook(h, Hook::FileMprotect);
    let e = wait_event(
        h,
        |e| {
            e.policy_cgroup_id == c.cgid && e.rule == Rule::ExecMemory && e.file == FileKind::Writable && e.hook == hook
        },
        "exec_memory event of the own-text mprotect",
    )?;
    if e.prot.as_deref() != Some("rwx") {
        return Err(format!("own text: prot should be rwx: {e:?}").into());
    }
    // Must keep working: the image file's unchanged pages made executable. Without
    // bpf_find_vma the mprotect is killed (fail closed): an asserted LIMIT.
    if mprotect_blind(h) {
        let out = fork_in_cgroup(&c.cgroup, &|| file_mapping(&inside, FileWay::SharedThenRx))?;
        expect_refused(h, &out, 50, "LIMIT changed: mprotect(RX) of an image file without bpf_find_vma")?;
        println!(
            "LIMIT mprotect(RX) of an image file's mapping: killed on the fallback without bpf_find_vma (fail closed)"
        );
    }
    let ways: &[FileWay] =
        if mprotect_blind(h) { &[FileWay::PrivateRx] } else { &[FileWay::SharedThenRx, FileWay::PrivateRx] };
    for &way in ways {
        expect_code(
            &fork_in_cgroup(&c.cgroup, &|| file_mapping(&inside, way))?,
            99,
            &format!("{way:?} of an image file"),
        )?;
    }
    Ok(())
}

fn exec_memory_read_implies_exec() -> R {
    let (h, c, free) = enforced_with_control("persona")?;
    expect_injected(&fork_in_cgroup(&free.cgroup, &personality_mmap)?, "control: READ_IMPLIES_EXEC mmap(RW)")?;
    expect_injected(&fork_in_cgroup(&free.cgroup, &personality_heap)?, "control: READ_IMPLIES_EXEC heap")?;
    let mapped = fork_in_cgroup(&c.cgroup, &personality_mmap)?;
    let heap = fork_in_cgroup(&c.cgroup, &personality_heap)?;
    if !sees_mappings(h) {
        fallback_limit(&mapped, "READ_IMPLIES_EXEC then mmap(RW)")?;
        return fallback_limit(&heap, "READ_IMPLIES_EXEC then brk");
    }
    // mmap_file gets the protection the kernel will apply, READ_IMPLIES_EXEC folded in (the
    // fallback folds it in from the task's personality).
    expect_refused(h, &mapped, 10, "READ_IMPLIES_EXEC then mmap(RW)")?;
    let e = expect_memory_event(h, &c, Hook::MmapFile, FileKind::Anonymous, Action::Deny)?;
    if e.prot.as_deref() != Some("rwx") {
        return Err(format!("READ_IMPLIES_EXEC mmap: prot should show the implied exec: {e:?}").into());
    }
    // brk has no LSM hook: the heap it grows is executable under this personality.
    expect_injected(&heap, "LIMIT changed: READ_IMPLIES_EXEC then brk")?;
    println!("LIMIT READ_IMPLIES_EXEC then brk: the new heap is executable, no hook sees brk (docs/threat-model.md)");
    Ok(())
}

fn with_exec_memory(m: ExecMemory) -> Policy {
    let mut p = enforce();
    p.rules.exec_memory = m;
    p
}

fn exec_memory_jit_opt_out_frees_memory_only() -> R {
    let h = harness()?;
    let c = container("jit")?;
    c.install(h, &with_exec_memory(ExecMemory::Jit))?;
    for (what, step, _, body) in anon_bodies() {
        let ran = if step == 10 && what.contains("(RX") { 99 } else { 0 };
        expect_code(&fork_in_cgroup(&c.cgroup, &*body)?, ran, &format!("exec-memory=false: {what}"))?;
    }
    let busybox = CString::new(c.host_str("/bin/busybox")).map_err(es)?;
    expect_injected(
        &fork_in_cgroup(&c.cgroup, &|| file_mapping(&busybox, FileWay::WrittenThenRx))?,
        "exec-memory=false: written file mapping",
    )?;
    // .NET's double mapping of a memfd: allowed with the opt-out, the fileless rule without.
    expect_injected(&fork_in_cgroup(&c.cgroup, &memfd_double_map)?, "exec-memory=false: memfd double mapping")?;
    let strict = container("jit-strict")?;
    strict.install(h, &enforce())?;
    let out = fork_in_cgroup(&strict.cgroup, &memfd_double_map)?;
    if sees_mappings(h) {
        expect_refused(h, &out, 30, "memfd double mapping without the opt-out")?;
        let hook = mapping_hook(h, Hook::MmapFile);
        wait_event(
            h,
            |e| e.policy_cgroup_id == strict.cgid && e.rule == Rule::Fileless && e.hook == hook,
            "fileless event of the memfd mapping",
        )?;
    } else {
        fallback_limit(&out, "memfd double mapping")?;
    }
    // Only the memory rule: exec of a memfd stays fileless, a dropped binary stays drift.
    let memfd = fork_in_cgroup(&c.cgroup, &|| memfd_exec_of(bb_bytes()))?;
    assert_denied(h, &memfd, "exec-memory=false: exec of a memfd")?;
    wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless, "fileless exec event")?;
    c.drop_file("/tmp/dropped", bb()?)?;
    assert_denied(h, &c.run("true", &["/tmp/dropped"])?, "exec-memory=false: dropped binary")?;
    expect_event(h, &c, "/tmp/dropped", Rule::Drift, denied_action(h))?;
    Ok(())
}

/// The busybox binary's bytes (read before forking).
fn bb_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| bb().ok().and_then(|p| fs::read(p).ok()).unwrap_or_default())
}

/// memfd_create, the bytes written, fexecve: 200 + errno when the exec fails.
fn memfd_exec_of(bytes: &[u8]) -> i32 {
    // SAFETY: our own memfd; raw exec.
    unsafe {
        let fd = libc::memfd_create(c"dg-exec".as_ptr(), 0);
        if fd < 0 || bytes.is_empty() {
            return 110;
        }
        if libc::write(fd, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize {
            return 111;
        }
        let argv = [c"true".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        libc::fexecve(fd, argv.as_ptr(), envp.as_ptr());
        200 + errno()
    }
}

fn exec_memory_monitor_reports_once_per_interval() -> R {
    let h = harness()?;
    let c = container("memmon")?;
    c.install(h, &Policy::with_mode(Mode::Monitor))?;
    const FLIPS: usize = 50;
    // A JIT flipping pages: every flip runs, one alert for the burst.
    expect_injected(&fork_in_cgroup(&c.cgroup, &|| jit_flips(FLIPS))?, "monitor mode: JIT flips")?;
    if !sees_mappings(h) {
        println!("LIMIT exec_memory in monitor mode: not seen on the tracepoint fallback without fallback_mappings");
        return Ok(());
    }
    let first = expect_memory_event(h, &c, Hook::FileMprotect, FileKind::Anonymous, Action::Alert)?;
    if first.count != Some(1) || first.mode != Mode::Monitor {
        return Err(format!("first alert of the burst: count 1 expected: {first:?}").into());
    }
    let hook = mapping_hook(h, Hook::FileMprotect);
    let key = |e: &Event| e.policy_cgroup_id == c.cgid && e.rule == Rule::ExecMemory && e.hook == hook;
    event_barrier(h)?;
    let n = events_for(h, c.cgid).iter().filter(|e| key(e)).count();
    if n != 1 {
        return Err(format!("{FLIPS} flips within the interval gave {n} alerts, expected 1").into());
    }
    // The interval passes (boot clock, as the kernel counts it); the next flip reports the
    // suppressed ones with itself.
    let due = first.boot_ns + ALERT_INTERVAL.as_nanos() as u64;
    let deadline = Instant::now() + ALERT_INTERVAL + Duration::from_secs(30);
    while driftguard::agent::output::boot_ns() <= due {
        if Instant::now() > deadline {
            return Err("the boot clock did not pass the alert interval".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_injected(&fork_in_cgroup(&c.cgroup, &|| jit_flips(1))?, "monitor mode: one more flip")?;
    let next = wait_event(h, |e| key(e) && e.boot_ns > due, "the alert after the interval")?;
    if next.count != Some(FLIPS as u32) {
        return Err(format!(
            "the alert after the interval should count the {} suppressed flips and itself ({FLIPS}): {next:?}",
            FLIPS - 1
        )
        .into());
    }
    Ok(())
}

fn exec_memory_image_code_keeps_working() -> R {
    let h = harness()?;
    let c = container("memok")?;
    c.install(h, &enforce())?;
    // Static busybox, a dynamic binary (ld.so maps the image's libraries, RELRO mprotects to
    // read-only), dlopen of an image library, a shell pipeline.
    assert_runs(&c.run("true", &["/bin/busybox"])?, "static image binary")?;
    assert_runs(&c.run("dyn", &["/usr/bin/dyn"])?, "dynamic image binary")?;
    if c.host_path("/usr/bin/dgdlopen").exists() {
        assert_runs(&c.run("dgdlopen", &["/usr/bin/dgdlopen", "/usr/lib/libimage.so"])?, "dlopen of an image library")?;
    }
    assert_runs(&c.sh("echo a | /bin/busybox grep -q a")?, "shell pipeline")?;
    event_barrier(h)?;
    if let Some(e) = events_for(h, c.cgid).into_iter().find(|e| e.rule == Rule::ExecMemory) {
        return Err(format!("image code made an exec_memory event: {e:?}").into());
    }
    Ok(())
}

/// A policy pinned by an agent from before the memory rules (neither bit) keeps its old
/// behaviour: anonymous executable memory runs, a memfd mapping stays fileless.
fn exec_memory_policy_pinned_before_the_rule_keeps_it_off() -> R {
    let h = harness()?;
    let c = container("legacy")?;
    c.install(h, &with_exec_memory(ExecMemory::Off))?;
    let pinned = h.store.get(c.cgid).map_err(es)?.ok_or("no policy pinned")?;
    if pinned.policy.rules.exec_memory != ExecMemory::Off {
        return Err(format!("pinned rules {:?}", pinned.policy.rules).into());
    }
    expect_injected(&fork_in_cgroup(&c.cgroup, &|| anon_rw_then(mprotect))?, "old policy: RW then RX")?;
    let out = fork_in_cgroup(&c.cgroup, &memfd_double_map)?;
    if sees_mappings(h) {
        expect_refused(h, &out, 30, "old policy: memfd mapping stays fileless")?;
    }
    Ok(())
}

/// The fallback's mapping checks are opt-in (`[bpf] fallback_mappings`): with them anonymous
/// executable memory is killed; turning them off removes their pinned links, and the same route
/// then runs (the limit its kernel limit line states). Loaded as the fallback on every kernel, so
/// each VM's verifier sees the mapping programs (5.10: the variant without `bpf_find_vma`).
fn exec_memory_fallback_checks_are_opt_in() -> R {
    use driftguard::enforcer::MappingChecks;
    let _h = harness()?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-test-maps-{}", std::process::id()));
    let _ = enforcer::unload(&pin_dir);
    let opts =
        |fallback_mappings| EnforcerOptions { pin_dir: Some(pin_dir.clone()), force_fallback: true, fallback_mappings };
    let sys_links = || -> Vec<String> {
        fs::read_dir(&pin_dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("link_dg_sys_"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = container("optin")?;
    let route = || anon_map(rwx(), libc::MAP_PRIVATE, PAGE);
    let result = (|| -> R {
        let on = Enforcer::load(&opts(true)).map_err(es)?;
        let find_vma = match on.mapping_checks() {
            MappingChecks::Tracepoints { find_vma, .. } => find_vma,
            other => return Err(format!("fallback_mappings = true loaded {other:?}").into()),
        };
        on.store().set(c.cgid, c.level, &enforce(), &c.provenance(&enforce())?).map_err(es)?;
        // the mapping checks, and the process-memory checks that come with them (7)
        let want = if find_vma { 7 } else { 5 } + 7;
        let links = sys_links();
        if links.len() != want && !on.kernel_limits().iter().any(|l| l.contains("cannot be pinned")) {
            return Err(format!("{want} pinned syscall links expected, found {links:?}").into());
        }
        match fork_in_cgroup(&c.cgroup, &route)? {
            Outcome::Signaled(libc::SIGKILL) => {}
            other => {
                return Err(format!("fallback_mappings = true: anonymous RWX should be killed, got {other:?}").into())
            }
        }
        drop(on);
        // The operator turns the option off: the next load removes the mapping links.
        let off = Enforcer::load(&opts(false)).map_err(es)?;
        if off.mapping_checks() != MappingChecks::Off {
            return Err(format!("fallback_mappings = false loaded {:?}", off.mapping_checks()).into());
        }
        let left = sys_links();
        if !left.is_empty() {
            return Err(format!("mapping links left pinned after turning the option off: {left:?}").into());
        }
        if !off.kernel_limits().iter().any(|l| l.contains("fallback_mappings = true")) {
            return Err(format!("the kernel limits should name the option: {:?}", off.kernel_limits()).into());
        }
        // The pinned policy is still there; the kernel frees the old links from a work queue,
        // so wait until the route runs (bounded), as it must with the checks off.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = fork_in_cgroup(&c.cgroup, &route)?;
            if matches!(out, Outcome::Exited(0, _)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("with fallback_mappings = false the route should run, got {out:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "LIMIT anonymous RWX memory runs on the fallback without fallback_mappings (opt-in, docs/configuration.md)"
        );
        Ok(())
    })();
    let _ = enforcer::unload(&pin_dir);
    result
}

/// `mmap2(NULL, PAGE, RWX, MAP_PRIVATE|MAP_ANONYMOUS)` through the 32-bit (compat) syscall entry,
/// `int $0x80`, from this 64-bit process: the kernel maps below 4 GiB, the code is copied and
/// called. 10 + errno when refused, 100 + errno when the compat entry itself is not there.
fn compat_mmap2_rwx() -> i32 {
    let ret: u32;
    // SAFETY: the i386 mmap2 call (eax 192; ebx, ecx, edx, esi, edi, ebp = addr, len, prot,
    // flags, fd, pgoff). rbx is reserved by LLVM, so it is swapped in and out; rbp is saved.
    unsafe {
        core::arch::asm!(
            "xchg rbx, {a}",
            "push rbp",
            "xor ebp, ebp",
            "int 0x80",
            "pop rbp",
            "xchg rbx, {a}",
            a = inout(reg) 0u64 => _,
            inlateout("eax") 192u32 => ret,
            in("ecx") PAGE as u32,
            in("edx") rwx() as u32,
            in("esi") (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
            in("edi") u32::MAX,
        );
    }
    if ret >= 0xffff_f001 {
        let errno = ret.wrapping_neg() as i32;
        return if errno == libc::ENOSYS { 100 + errno } else { 10 + errno };
    }
    let p = ret as usize as *mut libc::c_void;
    // SAFETY: a fresh read-write-exec mapping of our own.
    unsafe {
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        call_code(p)
    }
}

/// x86-64 syscall tracepoints do not fire for compat (32-bit) syscalls: on the fallback a 32-bit
/// binary, or `int $0x80` from a 64-bit one, maps executable memory unseen (an asserted LIMIT).
/// BPF LSM's `mmap_file` sees every entry.
fn exec_memory_compat_syscall() -> R {
    let (h, c, free) = enforced_with_control("compat")?;
    match fork_in_cgroup(&free.cgroup, &compat_mmap2_rwx)? {
        Outcome::Exited(0, _) => {}
        Outcome::Exited(c, _) if c == 100 + libc::ENOSYS => {
            println!("LIMIT exec_memory_compat_syscall: this kernel has no 32-bit syscall entry, so the route cannot be staged");
            return Ok(());
        }
        Outcome::Signaled(libc::SIGSEGV) => {
            println!("LIMIT exec_memory_compat_syscall: int $0x80 faults (32-bit emulation off), so the route cannot be staged");
            return Ok(());
        }
        other => return Err(format!("control: compat mmap2(RWX) should run the code, got {other:?}").into()),
    }
    let out = fork_in_cgroup(&c.cgroup, &compat_mmap2_rwx)?;
    if lsm(h) {
        expect_refused(h, &out, 10, "compat mmap2(RWX)")?;
        expect_memory_event(h, &c, Hook::MmapFile, FileKind::Anonymous, Action::Deny)?;
        return Ok(());
    }
    expect_injected(&out, "LIMIT changed: compat mmap2(RWX) on the fallback")?;
    println!(
        "LIMIT compat mmap2(RWX) via int $0x80: runs on the fallback, syscall tracepoints do not see 32-bit syscalls (docs/threat-model.md)"
    );
    Ok(())
}

/// Runs `body` (given the write end of a pipe, which the process it starts to share its memory
/// inherits) in `cgroup`: its outcome, and whether that process wrote `y` (the code ran). The
/// read ends at EOF once every holder of the write end is gone.
pub fn run_with_sharer_report(cgroup: &Path, body: &dyn Fn(libc::c_int) -> i32) -> Result<(Outcome, bool), Failed> {
    let mut fds = [0; 2];
    // SAFETY: a pipe of our own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err("pipe2".into());
    }
    let (r, w) = (fds[0], fds[1]);
    let out = fork_in_cgroup(cgroup, &|| body(w));
    // SAFETY: our own fds.
    unsafe { libc::close(w) };
    let mut b = [0u8; 1];
    // SAFETY: reading our own pipe.
    let n = unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
    // SAFETY: our own fd.
    unsafe { libc::close(r) };
    Ok((out?, n == 1 && b[0] == b'y'))
}

/// In a process sharing its parent's memory: waits until `parent` is gone (it is reparented),
/// yielding; false when that did not happen within a bound.
pub fn wait_until_parent_gone(parent: libc::pid_t) -> bool {
    let mut spins = 0u64;
    // SAFETY: getppid and sched_yield have no preconditions.
    while unsafe { libc::getppid() } == parent {
        unsafe { libc::sched_yield() };
        spins += 1;
        if spins > 50_000_000 {
            return false;
        }
    }
    true
}

/// The address of the mapping the parent makes executable, for the process sharing its memory.
static SHARED_ADDR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The parent's pid, set before the clone (the sharer may first run after the parent is gone).
static SHARED_PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The process sharing the parent's memory (`clone(CLONE_VM)` without `CLONE_THREAD`): waits
/// (bounded) until the parent is gone, then writes the code into the parent's mapping and calls
/// it; writes `y` to `arg` (a pipe fd) when the code ran. If the parent's mapping was refused the
/// write faults and nothing is written.
extern "C" fn sharer(arg: *mut libc::c_void) -> libc::c_int {
    let fd = arg as usize as libc::c_int;
    // SAFETY: raw syscalls; the address is the parent's reserved area in the shared memory.
    unsafe {
        if !wait_until_parent_gone(SHARED_PARENT.load(std::sync::atomic::Ordering::SeqCst)) {
            return 1;
        }
        let p = SHARED_ADDR.load(std::sync::atomic::Ordering::SeqCst) as *mut libc::c_void;
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        if call_code(p) == 0 {
            libc::write(fd, b"y".as_ptr().cast(), 1);
        }
    }
    0
}

/// Reserves an area, starts the process sharing its memory, then maps the area read-write-exec
/// over the reservation (`MAP_FIXED`). 10 + errno when that is refused.
fn share_then_map_rwx(fd: libc::c_int) -> i32 {
    // SAFETY: our own mappings; the clone child runs `sharer` on its own stack.
    unsafe {
        let area =
            libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        let stack = libc::mmap(std::ptr::null_mut(), 16 * PAGE, rw(), libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if area == libc::MAP_FAILED || stack == libc::MAP_FAILED {
            return 110;
        }
        SHARED_ADDR.store(area as usize, std::sync::atomic::Ordering::SeqCst);
        SHARED_PARENT.store(libc::getpid(), std::sync::atomic::Ordering::SeqCst);
        let top = (stack as usize + 16 * PAGE) as *mut libc::c_void;
        if libc::clone(sharer, top, libc::CLONE_VM | libc::SIGCHLD, fd as usize as *mut libc::c_void) < 0 {
            return 111;
        }
        let p = libc::mmap(area, PAGE, rwx(), libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0);
        if p == libc::MAP_FAILED {
            return 10 + errno();
        }
        0
    }
}

/// On the fallback the kill does not undo the call: the mapping is made, and its process dies
/// before the call returns. A process sharing the memory (`clone(CLONE_VM)` without
/// `CLONE_THREAD`) is another thread group, is not killed, and runs code from the mapping (an
/// asserted LIMIT). With BPF LSM the mapping is never made.
fn exec_memory_mapping_kept_by_a_process_sharing_the_memory() -> R {
    let (h, c, free) = enforced_with_control("sharedmm")?;
    // Whether the sharer ran the code, read from a pipe it inherited (EOF once every holder of
    // the write end is gone; the sharer gives up after its bounded wait).
    let run = |cgroup: &Path| run_with_sharer_report(cgroup, &share_then_map_rwx);
    let (out, ran) = run(&free.cgroup)?;
    if !matches!(out, Outcome::Exited(0, _)) || !ran {
        return Err(format!("control: the sharing process should run the code: {out:?}, ran {ran}").into());
    }
    let (out, ran) = run(&c.cgroup)?;
    expect_refused(h, &out, 10, "mmap(RWX) with another process sharing the memory")?;
    expect_memory_event(h, &c, Hook::MmapFile, FileKind::Anonymous, Action::Deny)?;
    if lsm(h) {
        if ran {
            return Err("with BPF LSM the refused mapping must not exist for the sharing process".into());
        }
        return Ok(());
    }
    if !ran {
        return Err("LIMIT changed: the process sharing the memory no longer runs the mapping on the fallback".into());
    }
    println!(
        "LIMIT mmap(RWX) with a process sharing the memory (CLONE_VM): the caller is killed, the mapping stays and the other process runs it (docs/threat-model.md)"
    );
    Ok(())
}

/// Real JIT runtimes from Debian's packages (scripts/install-deps.sh installs `luajit`; `grep`
/// links PCRE2 with its JIT): (binary, libraries it needs besides libc). The VM suites copy them
/// into the guest at the same paths (JIT_FILES).
pub const JIT_FILES: [(&str, &[&str]); 2] =
    [("/usr/bin/grep", &["libpcre2-8.so.0"]), ("/usr/bin/luajit", &["libm.so.6", "libgcc_s.so.1"])];

/// A Lua loop hot enough that LuaJIT compiles a trace (machine code in memory it maps
/// read-write, then makes read-exec).
const LUA_HOT_LOOP: &str = "local s = 0\nfor i = 1, 2000000 do s = s + i % 7 end\nprint('luajit-ran', s)\n";

/// The host files of [`JIT_FILES`] (their libraries resolved in the multiarch directories).
pub fn jit_host_files() -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for (bin, libs) in JIT_FILES {
        if !Path::new(bin).exists() {
            return Err(format!("{bin} missing (Debian package of a JIT runtime: run scripts/install-deps.sh)"));
        }
        out.push(PathBuf::from(bin));
        for lib in libs.iter() {
            let found = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
                .iter()
                .map(|d| Path::new(d).join(lib))
                .find(|p| p.exists())
                .ok_or_else(|| format!("{lib} (needed by {bin}) not found"))?;
            out.push(found);
        }
    }
    Ok(out)
}

/// A container whose image ships the JIT runtimes, a Lua script and a text file.
fn jit_container(tag: &str) -> Result<Container, Failed> {
    let files = jit_host_files()?;
    Container::with_image(tag, move |lower| {
        for f in &files {
            let name = f.file_name().ok_or("no file name")?;
            let to = if f.starts_with("/usr/bin") {
                lower.join("usr/bin").join(name)
            } else {
                lower.join("lib/x86_64-linux-gnu").join(name)
            };
            copy_exec(fs::canonicalize(f).map_err(es)?, &to)?;
        }
        fs::write(lower.join("hot.lua"), LUA_HOT_LOOP).map_err(es)?;
        fs::write(lower.join("input.txt"), "xyz\naab\n").map_err(es)?;
        Ok(())
    })
}

/// Runs `argv` in a container without policy, one enforced and one with the JIT opt-out; the
/// enforced result is returned after checking that the other two ran (`ran` is in the output).
fn jit_three_ways(tag: &str, argv: &[&str], ran: &str) -> Result<(&'static Harness, Container, Outcome), Failed> {
    let h = harness()?;
    let free = jit_container(&format!("{tag}-free"))?;
    let out = free.run(argv[0], argv)?;
    if !matches!(&out, Outcome::Exited(0, t) if t.contains(ran)) {
        return Err(format!("control: {argv:?} without policy should print {ran:?}: {out:?}").into());
    }
    let jit = jit_container(&format!("{tag}-jit"))?;
    jit.install(h, &with_exec_memory(ExecMemory::Jit))?;
    let out = jit.run(argv[0], argv)?;
    if !matches!(&out, Outcome::Exited(0, t) if t.contains(ran)) {
        return Err(format!("{argv:?} with exec-memory=false should run: {out:?}").into());
    }
    let c = jit_container(tag)?;
    c.install(h, &enforce())?;
    let out = c.run(argv[0], argv)?;
    event_barrier(h)?;
    if let Some(e) = events_for(h, jit.cgid).into_iter().find(|e| e.rule == Rule::ExecMemory) {
        return Err(format!("the opted-out container reported its JIT: {e:?}").into());
    }
    Ok((h, c, out))
}

/// `grep -P` compiles its pattern with PCRE2's JIT into an anonymous read-write-exec mapping.
/// With BPF LSM the mapping is refused, PCRE2 reports no JIT memory and grep matches with the
/// interpreter: it works, and the event says what was refused. On the fallback the process is
/// killed at the mmap. With the opt-out it runs with its JIT.
fn exec_memory_real_jit_grep_pcre2() -> R {
    let (h, c, out) = jit_three_ways("grep-p", &["/usr/bin/grep", "-P", "a+b", "/input.txt"], "aab")?;
    if lsm(h) {
        if !matches!(&out, Outcome::Exited(0, t) if t.contains("aab")) {
            return Err(format!("grep -P under W^X should fall back to PCRE2's interpreter and match: {out:?}").into());
        }
    } else {
        expect_refused(h, &out, 0, "grep -P (PCRE2 JIT) on the fallback")?;
    }
    let e = expect_memory_event(h, &c, Hook::MmapFile, FileKind::Anonymous, Action::Deny)?;
    if e.comm != "grep"
        || e.prot.as_deref() != Some("rwx")
        || e.args != Some(strings(&["/usr/bin/grep", "-P", "a+b", "/input.txt"]))
    {
        return Err(format!("the event should name grep and rwx: {e:?}").into());
    }
    Ok(())
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// LuaJIT maps its machine-code area read-write, writes a trace, then makes it read-exec. With
/// BPF LSM that mprotect is refused and LuaJIT stops with an error (it does not fall back to its
/// interpreter); on the fallback it is killed there. With the opt-out it runs.
fn exec_memory_real_jit_luajit() -> R {
    let (h, c, out) = jit_three_ways("luajit", &["/usr/bin/luajit", "/hot.lua"], "luajit-ran")?;
    if lsm(h) {
        match &out {
            Outcome::Exited(code, t) if *code != 0 && !t.contains("luajit-ran") => {
                println!("luajit under W^X: exit {code}: {}", t.trim());
            }
            other => return Err(format!("luajit under W^X should fail at its first trace: {other:?}").into()),
        }
    } else {
        expect_refused(h, &out, 0, "luajit on the fallback")?;
    }
    let e = expect_memory_event(h, &c, Hook::FileMprotect, FileKind::Anonymous, Action::Deny)?;
    if e.comm != "luajit"
        || e.prot.as_deref() != Some("r-x")
        || e.args != Some(strings(&["/usr/bin/luajit", "/hot.lua"]))
    {
        return Err(format!("the event should name luajit and r-x: {e:?}").into());
    }
    Ok(())
}
