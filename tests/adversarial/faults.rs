//! Faults: a full ring buffer, vanished cgroups.
use super::*;

pub(super) fn fault_ringbuf_overflow_counts_drops_and_recovers() -> R {
    let h = harness()?;
    // A separate, unpinned enforcer whose ring buffer nobody reads (the agent stalled). Its
    // EventStream would buffer 65536 events in userspace before the ring fills, so "no consumer"
    // is the way to overflow the 4 MiB ring (~4.5k 928-byte events).
    let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false })
        .map_err(es)?;
    let mut c = container("ringbuf")?;
    c.store = Some(enf.store().try_clone().map_err(es)?);
    enf.store()
        .set(c.cgid, c.level, &Policy::with_mode(Mode::Monitor), &c.provenance(&Policy::with_mode(Mode::Monitor))?)
        .map_err(es)?;
    let before = enf.stats().map_err(es)?;
    const N: usize = 14_000;
    let t = Instant::now();
    if lsm(h) {
        // mmap(PROT_EXEC) of a dropped file: one mmap_file alert each, much cheaper than exec
        // under TCG.
        c.drop_file("/tmp/blob", bb()?)?;
        let p = CString::new(c.host_str("/tmp/blob")).map_err(es)?;
        let out = fork_in_cgroup(&c.cgroup, &|| {
            // SAFETY: raw syscalls in the child.
            unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    return 10;
                }
                for _ in 0..N {
                    let a = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE,
                        fd,
                        0,
                    );
                    if a == libc::MAP_FAILED {
                        return 11;
                    }
                    libc::munmap(a, 4096);
                }
                0
            }
        })?;
        assert_runs(&out, "monitor-mode mmap loop")?;
    } else {
        c.drop_file("/tmp/true", bb()?)?;
        let out = c.sh(&format!("i=0; while [ $i -lt {N} ]; do /tmp/true || exit 1; i=$((i+1)); done"))?;
        assert_runs(&out, "monitor-mode exec loop")?;
    }
    let mid = enf.stats().map_err(es)?;
    let (events, drops) = (mid.events - before.events, mid.ringbuf_drops - before.ringbuf_drops);
    println!("{N} alerts in {:.1}s: {events} events written, {drops} dropped", t.elapsed().as_secs_f64());
    if drops == 0 || events + drops < N as u64 || events == 0 {
        return Err(format!("expected drops with no consumer: events {events}, drops {drops}, stats {mid:?}").into());
    }
    // The consumer comes back: it reads what the ring held, then new events flow, no more drops.
    let mut stream = enf.events().map_err(es)?;
    let mut drained = 0u64;
    while stream.next_timeout(Duration::from_millis(700)).is_some() {
        drained += 1;
    }
    if drained == 0 || drained > events {
        return Err(format!("drained {drained} events, {events} were written").into());
    }
    c.drop_file("/tmp/after", bb()?)?;
    for _ in 0..20 {
        assert_runs(&c.run("true", &["/tmp/after"])?, "monitor exec after the overflow")?;
    }
    let mut fresh = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh < 20 && Instant::now() < deadline {
        if let Some(e) = stream.next_timeout(Duration::from_millis(200)) {
            if e.path == "/tmp/after" && e.action == Action::Alert {
                fresh += 1;
            }
        }
    }
    let after = enf.stats().map_err(es)?;
    println!(
        "drained {drained}; {fresh}/20 fresh events; drops after recovery {}",
        after.ringbuf_drops - mid.ringbuf_drops
    );
    if fresh != 20 || after.ringbuf_drops != mid.ringbuf_drops || stream.malformed() != 0 {
        return Err(format!(
            "after recovery: {fresh}/20 events, drops {} -> {}, malformed {}",
            mid.ringbuf_drops,
            after.ringbuf_drops,
            stream.malformed()
        )
        .into());
    }
    drop(stream);
    let _ = enf.store().remove(c.cgid);
    drop(c);
    drop(enf);
    Ok(())
}

pub(super) fn fault_vanished_cgroup_policy_collected() -> R {
    use driftguard::agent::registry::{ContainerInfo, Rootfs};
    // Own (unpinned) enforcer: collect_vanished walks the whole store.
    let enf = Enforcer::load(&EnforcerOptions { pin_dir: None, force_fallback: false, fallback_mappings: false })
        .map_err(es)?;
    let store = enf.store();
    let root = cgroup2_root().ok_or("cgroup2")?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let gone = root.join(format!("dg-adv-{}-gone-{n}", std::process::id()));
    let kept = root.join(format!("dg-adv-{}-kept-{n}", std::process::id()));
    fs::create_dir(&gone).map_err(es)?;
    fs::create_dir(&kept).map_err(es)?;
    let res = (|| -> R {
        let (gid, kid) = (cgroup_id(&gone)?, cgroup_id(&kept)?);
        store.set(gid, 1, &enforce(), &Provenance::unknown()).map_err(es)?;
        store.set(kid, 1, &enforce(), &Provenance::unknown()).map_err(es)?;
        let registry = driftguard::agent::Registry::new(None);
        let info = |id: &str, path: &Path, cgid: u64| ContainerInfo {
            container_id: id.into(),
            container: "app".into(),
            pod: "p".into(),
            namespace: "ns".into(),
            pod_uid: "u".into(),
            image: "i".into(),
            cgroup_path: path.to_path_buf(),
            cgroup_id: cgid,
            mode: Mode::Enforce,
            rootfs: Rootfs::Overlay,
            policy_source: None,
            workload: None,
        };
        registry.insert(info("gone", &gone, gid));
        registry.insert(info("kept", &kept, kid));
        fs::remove_dir(&gone).map_err(|e| format!("rmdir {}: {e}", gone.display()))?;
        let removed =
            driftguard::agent::collect_vanished(store, &driftguard::cgroup::CgroupRoot::at(root.clone()), &registry);
        if removed != 1 {
            return Err(format!("collect_vanished removed {removed}, expected 1").into());
        }
        if store.get(gid).map_err(es)?.is_some() || store.get(kid).map_err(es)?.is_none() {
            return Err("wrong policy removed".into());
        }
        if registry.get("gone").is_some() || registry.get("kept").is_none() {
            return Err("registry not cleaned correctly".into());
        }
        // Idempotent.
        if driftguard::agent::collect_vanished(store, &driftguard::cgroup::CgroupRoot::at(root.clone()), &registry) != 0
        {
            return Err("second pass removed more".into());
        }
        Ok(())
    })();
    let _ = fs::remove_dir(&gone);
    let _ = fs::remove_dir(&kept);
    res
}
