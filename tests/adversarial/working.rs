//! What must keep working under enforcement.
use super::*;

pub(super) fn image_binaries_and_scripts_keep_working() -> R {
    let h = harness()?;
    let c = container("keep")?;
    c.install(h, &enforce())?;
    assert_runs(&c.run("true", &["/bin/busybox"])?, "image binary")?;
    assert_runs(&c.run("true", &["/bin/true"])?, "image binary under another name")?;
    match c.run("image-script.sh", &["/bin/image-script.sh"])? {
        Outcome::Exited(0, t) if t.contains("image-script-ran") => {}
        other => return Err(format!("image #! script: {other:?}").into()),
    }
    assert_runs(
        &c.sh("/bin/image-script.sh && cd /bin && ./image-script.sh && /usr/bin/dyn")?,
        "image script and dynamic binary from the shell",
    )?;
    // dlopen of an image library: the control of dlopen_of_dropped_library.
    event_barrier(h)?;
    let ev = events_for(h, c.cgid);
    if !ev.is_empty() {
        return Err(format!("clean execs must not produce events: {ev:?}").into());
    }
    Ok(())
}

pub(super) fn interpreter_reading_dropped_script_runs() -> R {
    // Known limit on both paths: the interpreter is an image binary and the script is data it
    // reads; no exec or PROT_EXEC mapping of the script happens.
    let h = harness()?;
    let c = container("interpdata")?;
    c.install(h, &enforce())?;
    fs::write(c.host_path("/tmp/dropped.sh"), "echo data-script-ran\n").map_err(es)?;
    match c.run("sh", &["/bin/sh", "/tmp/dropped.sh"])? {
        Outcome::Exited(0, t) if t.contains("data-script-ran") => {}
        other => return Err(format!("limit changed: `sh /tmp/dropped.sh`: {other:?}").into()),
    }
    match c.sh("sh < /tmp/dropped.sh")? {
        Outcome::Exited(0, t) if t.contains("data-script-ran") => {}
        other => return Err(format!("limit changed: `sh < /tmp/dropped.sh`: {other:?}").into()),
    }
    Ok(())
}

pub(super) fn monitor_mode_denies_nothing_reports_everything() -> R {
    let h = harness()?;
    let mut c = container("monitor")?;
    let p = Policy::with_mode(Mode::Monitor);
    c.install(h, &p)?;
    c.drop_file("/tmp/dropped", bb()?)?;
    copy_exec(c.host_path("/bin/busybox"), &c.host_path("/tmp/copy"))?;
    fs::set_permissions(c.host_path("/bin/tool"), fs::Permissions::from_mode(0o755)).map_err(es)?;
    let mnt = c.host_path("/mnt");
    mount("tmpfs", &mnt, "tmpfs", "size=16m")?;
    c.extra_mounts.push(mnt);
    c.drop_file("/mnt/vol-tool", bb()?)?;
    for path in ["/tmp/dropped", "/tmp/copy", "/bin/tool", "/mnt/vol-tool"] {
        assert_runs(&c.run("true", &[path])?, &format!("monitor mode: {path}"))?;
    }
    let bytes = fs::read(bb()?).map_err(es)?;
    let name = CString::new("dg-adv-mon").map_err(es)?;
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: fd is ours.
    let mut f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&bytes).map_err(es)?;
    let a = argv(&["true"]);
    assert_runs(&fork_in_cgroup(&c.cgroup, &|| exec_fd(fd, &a))?, "monitor mode: memfd exec")?;
    drop(f);
    for (path, rule) in [
        ("/tmp/dropped", Rule::Drift),
        ("/tmp/copy", Rule::Drift),
        ("/bin/tool", Rule::Drift),
        ("/mnt/vol-tool", Rule::NonImage),
    ] {
        expect_event(h, &c, path, rule, Action::Alert)?;
    }
    wait_event(
        h,
        |e| e.policy_cgroup_id == c.cgid && e.rule == Rule::Fileless && e.action == Action::Alert,
        "memfd alert",
    )?;
    if lsm(h) {
        let pl = payloads()?;
        copy_exec(&pl.so, &c.host_path("/tmp/libevil.so"))?;
        write_script(&c.host_path("/tmp/run.sh"), "#!/bin/sh\necho script-ran\n")?;
        match c.run("run.sh", &["/tmp/run.sh"])? {
            Outcome::Exited(0, t) if t.contains("script-ran") => {}
            other => return Err(format!("monitor mode: dropped script: {other:?}").into()),
        }
        match c.run_full(&c.cgroup, "/", "dyn", &["/usr/bin/dyn"], true, &[("LD_PRELOAD", "/tmp/libevil.so")])? {
            Outcome::Exited(0, t) if t.contains(PAYLOAD_MARK) => {}
            other => return Err(format!("monitor mode: LD_PRELOAD must load: {other:?}").into()),
        }
        expect_event(h, &c, "/tmp/run.sh", Rule::Drift, Action::Alert)?;
        let e = expect_event(h, &c, "/tmp/libevil.so", Rule::Drift, Action::Alert)?;
        if e.hook != Hook::MmapFile {
            return Err(format!("LD_PRELOAD alert from hook {:?}", e.hook).into());
        }
    }
    if events_for(h, c.cgid).iter().any(|e| e.action != Action::Alert) {
        return Err("monitor mode produced a non-alert verdict".into());
    }
    Ok(())
}
