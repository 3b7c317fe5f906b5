//! Bypass attempts: the same code without an exec of a dropped file (ld.so, LD_PRELOAD, dlopen,
//! memfd and /proc/self/fd, System V shared memory, O_TMPFILE).
use super::*;

pub(super) fn ld_so_running_dropped_binaries() -> R {
    let h = harness()?;
    let c = container("ldso")?;
    c.install(h, &enforce())?;
    let d = dyn_bin().ok_or("no dynamic binary (coreutils true)")?;
    c.drop_file("/tmp/dyn-dropped", d)?;
    // An image dynamic binary, chmod'ed (copied up), run through ld.so.
    copy_exec(Path::new(d), &c.host_path("/usr/bin/dyn-copied-up"))?;
    let ld = "/lib64/ld-linux-x86-64.so.2";
    assert_runs(&c.run("ld.so", &[ld, "/usr/bin/dyn"])?, "ld.so running an image binary")?;
    for target in ["/tmp/dyn-dropped", "/usr/bin/dyn-copied-up"] {
        let out = c.run("ld.so", &[ld, target])?;
        if lsm(h) {
            match out {
                Outcome::Exited(127, _) => {}
                other => {
                    return Err(
                        format!("ld.so {target}: expected exit 127 (failed to map segment), got {other:?}").into()
                    )
                }
            }
        } else if sees_mappings(h) {
            // The fallback's mapping checks: ld.so's mmap of the dropped file is killed.
            assert_denied(h, &out, &format!("ld.so {target} (fallback mapping checks)"))?;
        } else {
            // Known limit of the fallback without its mapping checks: ld.so (an image binary) is
            // what was exec'd; the dropped file is only mmapped, which it cannot see.
            assert_runs(&out, &format!("fallback limit changed: ld.so {target}"))?;
        }
    }
    if sees_mappings(h) {
        let e = expect_event(h, &c, "/tmp/dyn-dropped", Rule::Drift, denied_action(h))?;
        if e.hook != mapping_hook(h, Hook::MmapFile) {
            return Err(format!("expected the mapping hook, got {:?}", e.hook).into());
        }
    }
    Ok(())
}

pub(super) fn ld_preload_of_dropped_library() -> R {
    let h = harness()?;
    let p = payloads()?;
    let c = container("preload")?;
    c.install(h, &enforce())?;
    copy_exec(&p.so, &c.host_path("/tmp/libevil.so"))?;
    // Control: the same library shipped in the image loads.
    match c.run_full(&c.cgroup, "/", "dyn", &["/usr/bin/dyn"], true, &[("LD_PRELOAD", "/usr/lib/libimage.so")])? {
        Outcome::Exited(0, t) if t.contains(PAYLOAD_MARK) => {}
        other => return Err(format!("control: LD_PRELOAD of an image library should load: {other:?}").into()),
    }
    let out = c.run_full(&c.cgroup, "/", "dyn", &["/usr/bin/dyn"], true, &[("LD_PRELOAD", "/tmp/libevil.so")])?;
    if lsm(h) {
        match out {
            // ld.so ignores a preload it cannot map; the program itself runs.
            Outcome::Exited(0, t) if !t.contains(PAYLOAD_MARK) => {}
            other => return Err(format!("LD_PRELOAD of a dropped .so must not run its code: {other:?}").into()),
        }
        expect_event(h, &c, "/tmp/libevil.so", Rule::Drift, Action::Deny)?;
    } else if sees_mappings(h) {
        // The fallback's mapping checks kill the process at ld.so's mmap of the preload.
        assert_denied(h, &out, "LD_PRELOAD of a dropped .so (fallback mapping checks)")?;
        let e = expect_event(h, &c, "/tmp/libevil.so", Rule::Drift, Action::Kill)?;
        if e.hook != Hook::SysMmap {
            return Err(format!("expected the sys_mmap hook, got {:?}", e.hook).into());
        }
    } else {
        match out {
            Outcome::Exited(0, t) if t.contains(PAYLOAD_MARK) => {}
            other => return Err(format!("fallback limit changed: LD_PRELOAD of a dropped .so: {other:?}").into()),
        }
    }
    Ok(())
}

pub(super) fn dlopen_of_dropped_library() -> R {
    let h = harness()?;
    let p = payloads()?;
    let c = container("dlopen")?;
    c.install(h, &enforce())?;
    copy_exec(&p.so, &c.host_path("/tmp/libevil.so"))?;
    match c.run("dgdlopen", &["/usr/bin/dgdlopen", "/usr/lib/libimage.so"])? {
        Outcome::Exited(0, _) => {}
        other => return Err(format!("control: dlopen of an image library should work: {other:?}").into()),
    }
    let out = c.run("dgdlopen", &["/usr/bin/dgdlopen", "/tmp/libevil.so"])?;
    if lsm(h) {
        match out {
            Outcome::Exited(3, t) if !t.contains(PAYLOAD_MARK) => {}
            other => return Err(format!("dlopen of a dropped .so must fail (exit 3): {other:?}").into()),
        }
        let e = expect_event(h, &c, "/tmp/libevil.so", Rule::Drift, Action::Deny)?;
        if e.hook != Hook::MmapFile {
            return Err(format!("expected the mmap_file hook, got {:?}", e.hook).into());
        }
    } else if sees_mappings(h) {
        // The fallback's mapping checks kill the process at dlopen's mmap, before any of the
        // library's code (its constructor) runs.
        assert_denied(h, &out, "dlopen of a dropped .so (fallback mapping checks)")?;
        let e = expect_event(h, &c, "/tmp/libevil.so", Rule::Drift, Action::Kill)?;
        if e.hook != Hook::SysMmap {
            return Err(format!("expected the sys_mmap hook, got {:?}", e.hook).into());
        }
    } else {
        match out {
            Outcome::Exited(0, t) if t.contains(PAYLOAD_MARK) => {}
            other => return Err(format!("fallback limit changed: dlopen of a dropped .so: {other:?}").into()),
        }
    }
    Ok(())
}

pub(super) fn memfd_fexecve_and_proc_fd_exec_denied() -> R {
    let h = harness()?;
    let c = container("memfd")?;
    c.install(h, &enforce())?;
    let bytes = fs::read(bb()?).map_err(es)?;
    let name = CString::new("dg-adv-payload").map_err(es)?;
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: fd is ours.
    let mut f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&bytes).map_err(es)?;
    let a = argv(&["true"]);
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(fd, &a))?;
    assert_denied(h, &out, "memfd + execveat(fd, \"\", AT_EMPTY_PATH)")?;
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(es)?;
    let out = fork_in_cgroup(&c.cgroup, &|| exec_path(&proc_path, &a))?;
    assert_denied(h, &out, "memfd exec via /proc/self/fd/N")?;
    // Sealed read-only memfd: no difference.
    // SAFETY: fcntl on our fd.
    unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) };
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(fd, &a))?;
    assert_denied(h, &out, "sealed memfd + fexecve")?;
    drop(f);
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless, "memfd event")?;
    if !e.path.contains("memfd:dg-adv-payload") || e.action != denied_action(h) {
        return Err(format!("memfd event wrong: {e:?}").into());
    }
    // Control: the same fd-exec of an image binary is allowed.
    let img = CString::new(c.host_str("/bin/true")).map_err(es)?;
    // SAFETY: open a path we own.
    let ifd = unsafe { libc::open(img.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(ifd, &a))?;
    // SAFETY: closing our fd.
    unsafe { libc::close(ifd) };
    assert_runs(&out, "fexecve of an image binary")?;
    Ok(())
}

pub(super) fn proc_self_fd_exec_of_dropped_file_denied() -> R {
    let h = harness()?;
    let c = container("procfd")?;
    c.install(h, &enforce())?;
    c.drop_file("/tmp/dropped", bb()?)?;
    let p = CString::new(c.host_str("/tmp/dropped")).map_err(es)?;
    // SAFETY: open a path we own.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err("open dropped".into());
    }
    let a = argv(&["true"]);
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(fd, &a))?;
    assert_denied(h, &out, "fexecve of a dropped file")?;
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(es)?;
    let out = fork_in_cgroup(&c.cgroup, &|| exec_path(&proc_path, &a))?;
    assert_denied(h, &out, "exec of a dropped file via /proc/self/fd/N")?;
    // O_PATH fd, then execveat.
    // SAFETY: open a path we own.
    let pfd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(pfd, &a))?;
    assert_denied(h, &out, "execveat of an O_PATH fd of a dropped file")?;
    // The file unlinked while the fd stays open: nlink 0 -> fileless, still denied.
    fs::remove_file(c.host_path("/tmp/dropped")).map_err(es)?;
    let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(fd, &a))?;
    assert_denied(h, &out, "fexecve of a dropped file unlinked after open")?;
    // SAFETY: closing our fds.
    unsafe {
        libc::close(fd);
        libc::close(pfd);
    }
    expect_event_suffix(h, &c, "/tmp/dropped", Rule::Drift, denied_action(h))?;
    wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless, "unlinked-file event")?;
    Ok(())
}

/// Child body: attach a new SysV shared memory segment with `SHM_EXEC` (an executable mapping of
/// a file that has no name: the segment's shmem inode is unlinked). 0 = attached, 10 + errno =
/// refused, 110 = no segment.
pub(super) fn shm_attach_exec() -> i32 {
    // SAFETY: raw SysV IPC calls on a private segment the child removes before exiting.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
        if id < 0 {
            return 110;
        }
        let addr = libc::shmat(id, std::ptr::null(), libc::SHM_EXEC);
        let e = errno();
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        if addr as isize == -1 {
            return 10 + e;
        }
        libc::shmdt(addr);
        0
    }
}

/// Child body: attach a segment read-write (allowed), then `mprotect` it executable.
/// 0 = made executable, 50 + errno = mprotect refused, 30 + errno = the plain attach failed.
pub(super) fn shm_attach_then_mprotect_exec() -> i32 {
    // SAFETY: as above; the mapping is the child's own.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
        if id < 0 {
            return 110;
        }
        let addr = libc::shmat(id, std::ptr::null(), 0);
        let e = errno();
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        if addr as isize == -1 {
            return 30 + e;
        }
        let rc = libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC);
        let e = errno();
        libc::shmdt(addr);
        if rc != 0 {
            return 50 + e;
        }
        0
    }
}

/// Code written into SysV shared memory and mapped executable (`shmat(SHM_EXEC)`, or attached
/// read-write and then `mprotect`ed) never touches exec or a named file. The segment is an
/// unlinked shmem inode, so with BPF LSM the fileless rule refuses both mappings (`mmap_file` and
/// `file_mprotect`), like a memfd. The fallback sees no mappings: the known limit is asserted.
pub(super) fn sysv_shm_exec_mapping_denied() -> R {
    let h = harness()?;
    let c = container("sysvshm")?;
    c.install(h, &enforce())?;
    let attach = fork_in_cgroup(&c.cgroup, &shm_attach_exec)?;
    let mprotect = fork_in_cgroup(&c.cgroup, &shm_attach_then_mprotect_exec)?;
    if !sees_mappings(h) {
        return match (&attach, &mprotect) {
            (Outcome::Exited(0, _), Outcome::Exited(0, _)) => Ok(()),
            _ => Err(format!("fallback limit changed: shmat(SHM_EXEC) {attach:?}, mprotect {mprotect:?}").into()),
        };
    }
    if !lsm(h) {
        // The fallback's mapping checks: shmat(SHM_EXEC) is read-write-exec at the syscall
        // (the memory rule, writable); the read-write attach made executable is the shm file's
        // mapping, fileless like a memfd.
        assert_denied(h, &attach, "shmat(SHM_EXEC) (fallback mapping checks)")?;
        assert_denied(h, &mprotect, "mprotect(PROT_EXEC) of a SysV shm attachment (fallback mapping checks)")?;
        // (without bpf_find_vma the mprotect is not looked up: anonymous memory, fail closed)
        let mprotect_rule = if mprotect_blind(h) { Rule::ExecMemory } else { Rule::Fileless };
        for (hook, rule) in [(Hook::SysShmat, Rule::ExecMemory), (Hook::SysMprotect, mprotect_rule)] {
            wait_event(
                h,
                |e| e.policy_cgroup_id == c.cgid && e.rule == rule && e.hook == hook && e.action == Action::Kill,
                &format!("{rule:?} {hook:?} event of the SysV segment"),
            )?;
        }
        return Ok(());
    }
    if !matches!(attach, Outcome::Exited(c, _) if c == 10 + libc::EPERM) {
        return Err(
            format!("shmat(SHM_EXEC) in an enforced container: expected EPERM (exit 11), got {attach:?}").into()
        );
    }
    if !matches!(mprotect, Outcome::Exited(c, _) if c == 50 + libc::EPERM) {
        return Err(format!(
            "mprotect(PROT_EXEC) of a SysV shm attachment: expected the attach to work and mprotect EPERM (exit 51), got {mprotect:?}"
        )
        .into());
    }
    // shmat(SHM_EXEC) maps read-write-exec: the memory rule answers first (writable); the
    // read-write attach made executable later is the fileless shmem file.
    for (hook, rule) in [(Hook::MmapFile, Rule::ExecMemory), (Hook::FileMprotect, Rule::Fileless)] {
        let e = wait_event(
            h,
            |e| e.policy_cgroup_id == c.cgid && e.rule == rule && e.hook == hook,
            &format!("{rule:?} {hook:?} event of the SysV segment"),
        )?;
        if e.action != Action::Deny {
            return Err(format!("SysV shm event not a denial: {e:?}").into());
        }
    }
    // Control: in a container with no policy the same executable attach works.
    let free = container("sysvshm-free")?;
    let outside = fork_in_cgroup(&free.cgroup, &shm_attach_exec)?;
    if !matches!(outside, Outcome::Exited(0, _)) {
        return Err(format!("control: shmat(SHM_EXEC) outside any policy should work: {outside:?}").into());
    }
    Ok(())
}

pub(super) fn o_tmpfile_exec_denied() -> R {
    let h = harness()?;
    let mut c = container("tmpfile")?;
    c.install(h, &enforce())?;
    let bytes = fs::read(bb()?).map_err(es)?;
    // O_TMPFILE in the overlay (supported from Linux 6.6), else on a tmpfs volume of the container.
    let mut dirs = vec![c.host_path("/tmp")];
    let vol = c.host_path("/vol");
    mount("tmpfs", &vol, "tmpfs", "size=16m")?;
    c.extra_mounts.push(vol.clone());
    dirs.push(vol);
    let mut tried = 0;
    for dir in dirs {
        let d = CString::new(dir.as_os_str().as_bytes()).map_err(es)?;
        // SAFETY: open with a valid path.
        let wfd = unsafe { libc::open(d.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o755) };
        if wfd < 0 {
            println!("O_TMPFILE in {}: {}", dir.display(), std::io::Error::last_os_error());
            continue;
        }
        tried += 1;
        // SAFETY: wfd is ours.
        let mut w = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(wfd) };
        w.write_all(&bytes).map_err(es)?;
        // Re-open read-only through /proc (an open writer would make exec fail with ETXTBSY).
        let reopen = CString::new(format!("/proc/self/fd/{wfd}")).map_err(es)?;
        // SAFETY: open a valid path.
        let rfd = unsafe { libc::open(reopen.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        drop(w);
        if rfd < 0 {
            return Err(format!("reopen O_TMPFILE: {}", std::io::Error::last_os_error()).into());
        }
        let a = argv(&["true"]);
        let out = fork_in_cgroup(&c.cgroup, &|| exec_fd(rfd, &a))?;
        assert_denied(h, &out, &format!("O_TMPFILE in {} + fexecve", dir.display()))?;
        let proc_path = CString::new(format!("/proc/self/fd/{rfd}")).map_err(es)?;
        let out = fork_in_cgroup(&c.cgroup, &|| exec_path(&proc_path, &a))?;
        assert_denied(h, &out, &format!("O_TMPFILE in {} via /proc/self/fd", dir.display()))?;
        // SAFETY: closing our fd.
        unsafe { libc::close(rfd) };
    }
    if tried == 0 {
        return Err("O_TMPFILE worked nowhere".into());
    }
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless, "O_TMPFILE event")?;
    println!("O_TMPFILE event path: {:?} ({} dirs tried)", e.path, tried);
    Ok(())
}
