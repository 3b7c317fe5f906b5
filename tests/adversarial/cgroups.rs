//! Bypass attempts: moving out of the policied cgroup.
use super::*;

pub(super) fn self_move_to_child_cgroup_still_enforced() -> R {
    let h = harness()?;
    let mut c = container("selfchild")?;
    c.install(h, &enforce())?;
    c.drop_file("/tmp/dropped", bb()?)?;
    let child = c.cgroup.join("escape");
    fs::create_dir(&child).map_err(es)?;
    c.children.push(child.clone());
    let deep = child.join("deeper");
    fs::create_dir(&deep).map_err(es)?;
    c.children.push(deep.clone());
    // Not chrooted (cgroupfs must be reachable): the process moves *itself*, then execs.
    for target in [&child, &deep] {
        let script = format!("echo 0 > {}/cgroup.procs && exec {} true", target.display(), c.host_str("/tmp/dropped"));
        // The shell is the image's busybox: a host binary is not image and would be stopped itself.
        let out = c.run_full(&c.cgroup, "/", "sh", &[&c.host_str("/bin/busybox"), "-c", &script], false, &[])?;
        assert_shell_denied(h, &out, &format!("after moving itself to {}", target.display()))?;
    }
    let e = wait_event(h, |e| e.policy_cgroup_id == c.cgid && e.cgroup_id != c.cgid, "event from the nested cgroup")?;
    if e.cgroup_id != cgroup_id(&child)? && e.cgroup_id != cgroup_id(&deep)? {
        return Err(format!("event cgroup {} is not one of the nested cgroups", e.cgroup_id).into());
    }
    Ok(())
}

pub(super) fn limit_self_move_to_sibling_cgroup_escapes() -> R {
    // A process that can write cgroup.procs *outside* its container's cgroup leaves the policy's
    // scope. driftguard cannot prevent that; real containers get a read-only or namespaced
    // cgroupfs (docs/threat-model.md). This trial asserts the limit exists, so a change is noticed.
    let h = harness()?;
    let c = container("sibling")?;
    c.install(h, &enforce())?;
    // Named "true" so that busybox runs its `true` applet when it is not stopped.
    c.drop_file("/tmp/true", bb()?)?;
    let root = cgroup2_root().ok_or("cgroup2")?;
    let sibling = root.join(format!("dg-adv-{}-sibling-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    fs::create_dir(&sibling).map_err(es)?;
    let script = format!("echo 0 > {}/cgroup.procs && exec {}", sibling.display(), c.host_str("/tmp/true"));
    let out = c.run_full(&c.cgroup, "/", "sh", &[&c.host_str("/bin/busybox"), "-c", &script], false, &[]);
    let _ = fs::remove_dir(&sibling);
    assert_runs(&out?, "limit changed: a process that moved itself out of the container's cgroup")?;
    Ok(())
}
