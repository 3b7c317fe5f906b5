//! Agent faults (host only): real `driftguard run`, runc, the NRI test peer.
use super::*;

mod agent_support {
    use super::*;
    pub use crate::agent_process::{metric, AgentProcess};
    pub use crate::runc_nri::{assert_stopped, connect, pod, rt, RuncCtr};
    use nri_plugin::api::{Container as NriContainer, PodSandbox};
    use nri_plugin::testing::{Delivery, PeerConnection};

    /// RunPodSandbox, CreateContainer, StartContainer as dedicated requests.
    pub async fn start_container(conn: &PeerConnection, pod: &PodSandbox, ctr: &NriContainer) -> R {
        crate::runc_nri::start_container(conn, Delivery::Dedicated, pod, ctr).await
    }

    pub fn ids(store: &PolicyStore) -> BTreeSet<u64> {
        store.cgroup_ids().into_iter().collect()
    }
}

pub(super) fn agent_kill9_during_container_burst() -> R {
    use agent_support::*;
    const N: usize = 6;
    let dir = tempfile::tempdir().map_err(es)?;
    let mut agent = AgentProcess::with_own_socket("adv")?;
    let rt = rt();
    let _guard = rt.enter();
    let peer = nri_plugin::testing::RuntimePeer::bind(&agent.socket).map_err(es)?;
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    let path = agent.path();
    let pid = agent.pid().ok_or("agent pid")? as i32;

    // Background execs in the first container during the burst.
    let mut ctrs: Vec<RuncCtr> = Vec::new();
    let mut pods = Vec::new();
    let mut ok = Vec::new();
    let killed = Arc::new(AtomicBool::new(false));
    let kill_after = Duration::from_millis(1500);
    let t0 = Instant::now();
    let killer = {
        let killed = killed.clone();
        std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            // SAFETY: kill(2) of our own child process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.store(true, Ordering::SeqCst);
        })
    };
    for i in 0..N {
        let ctr = RuncCtr::create(dir.path(), &format!("burst{i}"))?;
        let p = agent_support::pod(&format!("burst{i}"), &[("driftguard.dev/mode", "enforce")]);
        let c = ctr.nri(&p, "app");
        let started = rt.block_on(start_container(&conn, &p, &c));
        let was_killed = killed.load(Ordering::SeqCst);
        ctr.start()?;
        ctr.drop_binary("/tmp/dropped")?;
        println!(
            "container {i}: StartContainer {:?} at {:?} (agent killed: {was_killed})",
            started.as_ref().map_err(|e| format!("{e:?}")),
            t0.elapsed()
        );
        if started.is_ok() {
            ok.push(i);
            // Exec right away, then again later (below).
            let (code, out) = ctr.exec(&["/tmp/dropped", "true"])?;
            assert_stopped(path, code, &out, &format!("container {i} right after StartContainer returned OK"))
                .map_err(|e| {
                    let _ = fs::write("/tmp/dg-adv-kill9-agent.log", agent.log());
                    format!(
                        "{e:?}\npolicy map {:?}, container cgroup {:?} (agent log: /tmp/dg-adv-kill9-agent.log)",
                        agent.store().map(|s| ids(&s)).ok(),
                        ctr.cgroup_id().ok()
                    )
                })?;
        }
        let (code, out) = ctr.exec(&["/bin/busybox", "true"])?;
        if code != 0 {
            return Err(format!("image binary in container {i}: {code} {out}").into());
        }
        pods.push(p);
        ctrs.push(ctr);
    }
    killer.join().map_err(|_| "killer thread")?;
    if ok.len() == N {
        println!("note: the burst finished before the kill; every container was acknowledged");
    }
    if ok.is_empty() {
        return Err("no StartContainer succeeded before the kill".into());
    }
    // Agent dead: every acknowledged container is still enforced.
    agent.kill9();
    drop(conn);
    let store = agent.store()?;
    for &i in &ok {
        let (code, out) = ctrs[i].exec(&["/tmp/dropped", "true"])?;
        assert_stopped(path, code, &out, &format!("container {i} with the agent dead")).map_err(|e| {
            let _ = fs::write("/tmp/dg-adv-kill9-agent.log", agent.log());
            format!(
                "{e:?}\npolicy map {:?}, container cgroup {:?}, pinned path {:?}\nagent log tail:\n{}",
                ids(&store),
                ctrs[i].cgroup_id(),
                agent.path(),
                agent.log().lines().rev().take(15).collect::<Vec<_>>().join("\n")
            )
        })?;
    }
    // Restart + resync with everything the runtime runs: all N enforced, nothing else.
    agent.start()?;
    let nri_ctrs: Vec<_> = ctrs.iter().zip(&pods).map(|(c, p)| c.nri(p, "app")).collect();
    let _conn2 = rt.block_on(connect(&peer, pods.clone(), nri_ctrs))?;
    let want: BTreeSet<u64> = ctrs.iter().map(|c| c.cgroup_id()).collect::<Result<_, _>>()?;
    let got = ids(&store);
    if got != want {
        return Err(format!("policy map after resync {got:?}, expected {want:?}\n{}", agent.log()).into());
    }
    for (i, c) in ctrs.iter().enumerate() {
        let (code, out) = c.exec(&["/tmp/dropped", "true"])?;
        assert_stopped(path, code, &out, &format!("container {i} after restart + resync"))?;
    }
    println!("{} of {N} containers acknowledged before the kill; all {N} enforced after resync", ok.len());
    Ok(())
}

pub(super) fn agent_runtime_restart_reconnects_and_resyncs() -> R {
    use agent_support::*;
    let dir = tempfile::tempdir().map_err(es)?;
    let mut agent = AgentProcess::with_own_socket("adv")?;
    let rt = rt();
    let _guard = rt.enter();
    let peer = nri_plugin::testing::RuntimePeer::bind(&agent.socket).map_err(es)?;
    agent.start()?;
    let conn = rt.block_on(connect(&peer, vec![], vec![]))?;
    let path = agent.path();
    let a = RuncCtr::create(dir.path(), "rt-a")?;
    let b = RuncCtr::create(dir.path(), "rt-b")?;
    let (pa, pb) =
        (pod("rt-a", &[("driftguard.dev/mode", "enforce")]), pod("rt-b", &[("driftguard.dev/mode", "monitor")]));
    rt.block_on(start_container(&conn, &pa, &a.nri(&pa, "app")))?;
    rt.block_on(start_container(&conn, &pb, &b.nri(&pb, "app")))?;
    a.start()?;
    b.start()?;
    a.drop_binary("/tmp/dropped")?;
    let store = agent.store()?;
    if ids(&store) != [a.cgroup_id()?, b.cgroup_id()?].into_iter().collect() {
        return Err(format!("initial policies {:?}", ids(&store)).into());
    }

    // The runtime goes away (containerd restart): connection and listening socket gone.
    drop(conn);
    peer.close();
    // While it is away: b is removed (its cgroup stays, as the runtime has not cleaned it yet),
    // and a new enforced container c appears (created by the restarted runtime).
    let (code, out) = a.exec(&["/tmp/dropped", "true"])?;
    assert_stopped(path, code, &out, "enforced container while the runtime is away")?;
    std::thread::sleep(Duration::from_millis(800));
    let c = RuncCtr::create(dir.path(), "rt-c")?;
    let pc = pod("rt-c", &[("driftguard.dev/mode", "enforce")]);
    c.start()?;
    c.drop_binary("/tmp/dropped")?;

    // The runtime returns on the same path; the agent reconnects and gets Synchronize(a, c).
    let peer2 = nri_plugin::testing::RuntimePeer::bind(&agent.socket).map_err(es)?;
    let _conn2 =
        rt.block_on(connect(&peer2, vec![pa.clone(), pc.clone()], vec![a.nri(&pa, "app"), c.nri(&pc, "app")]))?;
    let want: BTreeSet<u64> = [a.cgroup_id()?, c.cgroup_id()?].into_iter().collect();
    let got = ids(&store);
    if got != want {
        return Err(format!("policy map after the runtime restart {got:?}, expected {want:?}\n{}", agent.log()).into());
    }
    let pol = store.get(c.cgroup_id()?).map_err(es)?.ok_or("c has no policy")?;
    if pol.policy.mode != Mode::Enforce || pol.owner != Owner::Agent {
        return Err(format!("c's policy {pol:?}").into());
    }
    for (n, ctr) in [("a", &a), ("c", &c)] {
        let (code, out) = ctr.exec(&["/tmp/dropped", "true"])?;
        assert_stopped(path, code, &out, &format!("container {n} after the runtime restart"))?;
    }
    // driftguard_nri_connected follows the runtime's Configure asynchronously: a barrier.
    let m = agent.wait_http("/metrics", "the reconnection counted and the agent connected", |m| {
        metric(m, "driftguard_nri_reconnects_total").is_some_and(|r| r >= 1.0)
            && metric(m, "driftguard_nri_connected") == Some(1.0)
    })?;
    println!(
        "driftguard_nri_reconnects_total {:?}, driftguard_nri_connected {:?}",
        metric(&m, "driftguard_nri_reconnects_total"),
        metric(&m, "driftguard_nri_connected")
    );
    Ok(())
}
