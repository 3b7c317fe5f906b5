//! `driftguard demo`: a newcomer's first minute, with runc and no cluster.
//!
//! Builds a throwaway busybox image (overlay lower layer), runs it with runc,
//! puts the container under an `enforce` policy, then shows that an image
//! binary runs while a binary copied into the container at runtime is stopped
//! (EPERM with BPF LSM, SIGKILL on the tracepoint fallback), with the kernel's
//! verdict event. This file tells the story; the parts (image, overlay, runc,
//! enforcement, cleanup) are [`driftguard::demo`]. Everything is undone on the
//! way out ([`Sandbox`]), also on errors and on Ctrl-C.
use std::process::ExitCode;

use anyhow::Context;
use driftguard::config::Config;
use driftguard::demo::{self, describe, Enforcement, Sandbox, Stopped, DROPPED, EVENT_TIMEOUT};
use driftguard::enforcer::{EnforcementPath, Event};
use driftguard::policy::{Mode, Policy};

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    demo::require_root()?;
    let runc = demo::find_runc()?;
    let busybox = demo::static_busybox()?;
    demo::catch_signals();
    let cg_root = cfg.cgroup_root().context("finding the cgroup v2 hierarchy")?;

    let pid = std::process::id();
    let id = format!("{}{pid}", demo::ID_PREFIX);
    println!("driftguard demo: a throwaway busybox container run by runc, a binary dropped into it at");
    println!("runtime, and what driftguard does about it. Nothing outside the demo is touched.");

    // 1. Enforcement.
    step(1, "load enforcement")?;
    let enf = Enforcement::open(cfg)?;
    if let Some(pid) = enf.ring_reader {
        println!("   process {pid} (a driftguard agent?) reads the pinned event ring buffer");
    }
    match &enf.own {
        Some(e) => {
            println!("   loaded the BPF programs for the demo's lifetime (not pinned): path {}", e.path().as_str());
            if let Some(why) = e.fallback_reason() {
                println!("   BPF LSM unusable here, using the exec tracepoint fallback: {}", first_line(why));
            }
        }
        None => println!(
            "   using the enforcement an agent pinned under {}: path {}",
            cfg.bpf.pin_dir.display(),
            enf.path.as_str()
        ),
    }
    match enf.path {
        EnforcementPath::Lsm => println!("   (BPF LSM: a denied exec fails with EPERM, \"permission denied\")"),
        EnforcementPath::TracepointKill => {
            println!("   (fallback: a denied binary is SIGKILLed before its first instruction, exit status 137)")
        }
    }
    if enf.events.is_none() {
        println!("   a driftguard agent is running and consumes the event stream: events appear in its output");
    }

    // 2. Image and container.
    let mut guard = Sandbox::new(runc, id.clone());
    let layout = guard.prepare(busybox)?;

    step(2, "start a busybox container with runc")?;
    println!("   image (overlay lower layer): {}  (/bin/busybox + applet links, /tmp)", layout.lower.display());
    println!("   writable layer (upper):      {}", layout.upper.display());
    println!("   $ runc run -d --bundle {} {id}", layout.bundle.display());
    guard.run(&layout)?;
    let init_pid = guard.init_pid()?;
    let (cg, level, cg_id) = guard.cgroup(&cg_root, init_pid)?;
    println!("   container {id}: init pid {init_pid}, cgroup {} (id {cg_id}, level {level})", cg.display());

    // 3. Policy.
    step(3, "put the container under policy")?;
    println!("   as the agent does for a pod annotated");
    println!("       driftguard.dev/mode: enforce");
    let policy = Policy::with_mode(Mode::Enforce);
    guard.install_policy(&enf.store, init_pid, cg_id, level, &policy)?;
    println!(
        "   installed: mode enforce, rules drift={} fileless={} (policy map key: cgroup id {cg_id})",
        policy.rules.drift, policy.rules.fileless
    );
    let mut events = enf.events;
    if let Some(ev) = events.as_mut() {
        while ev.try_next().is_some() {} // events from before the demo
    }

    // 4. Image binary.
    step(4, "run a binary the image shipped")?;
    let ls = guard.exec(&["/bin/ls", "/"])?;
    println!("   $ runc exec {id} /bin/ls /");
    print_output(&ls);
    let image_ok = ls.status.success();
    println!("   -> {}", if image_ok { "runs (exit 0): image binaries are untouched" } else { "FAILED (unexpected)" });

    // 5. Drop a binary.
    step(5, "copy a binary into the container at runtime")?;
    println!("   $ runc exec {id} cp /bin/busybox {DROPPED}");
    let cp = guard.exec(&["/bin/cp", "/bin/busybox", DROPPED])?;
    print_output(&cp);
    if !cp.status.success() {
        anyhow::bail!("copying the binary inside the container failed ({})", describe(cp.status));
    }
    let in_upper = layout.upper.join(DROPPED.trim_start_matches('/'));
    println!(
        "   -> {} now exists in the writable layer: {} ({})",
        DROPPED,
        in_upper.display(),
        if in_upper.exists() { "not shipped in the image" } else { "NOT FOUND there (unexpected)" }
    );

    // 6. Run it.
    step(6, "run the dropped binary")?;
    println!("   $ runc exec {id} {DROPPED} echo hi");
    let dropped = guard.exec(&[DROPPED, "echo", "hi"])?;
    print_output(&dropped);
    let outcome = Stopped::of(&dropped);
    let stopped = outcome != Stopped::No;
    let printed_hi = String::from_utf8_lossy(&dropped.stdout).contains("hi");
    match outcome {
        Stopped::Denied => println!("   -> denied: exec failed with EPERM ({})", describe(dropped.status)),
        Stopped::Killed => {
            println!("   -> stopped: the process was SIGKILLed right after exec ({})", describe(dropped.status))
        }
        Stopped::No => println!(
            "   -> NOT stopped ({}{})",
            describe(dropped.status),
            if printed_hi { ", it printed \"hi\"" } else { "" }
        ),
    }
    println!("   enforcement path: {}", enf.path.as_str());
    let mut event: Option<Event> = None;
    match events.as_mut() {
        Some(stream) => {
            event = demo::wait_event(stream, cg_id);
            match &event {
                Some(e) => {
                    println!("   verdict event from the kernel:");
                    println!("   {}", serde_json::to_string(e)?);
                }
                None => println!("   no verdict event arrived within {}s", EVENT_TIMEOUT.as_secs()),
            }
        }
        None => println!("   (the verdict event went to the running agent: see its output or `driftguard events`)"),
    }

    // 7. Without policy.
    step(7, "remove the policy (driftguard.dev/mode: off) and try again")?;
    guard.remove_policy()?;
    println!("   $ runc exec {id} {DROPPED} echo hi");
    let again = guard.exec(&[DROPPED, "echo", "hi"])?;
    print_output(&again);
    println!(
        "   -> {}",
        if again.status.success() { "runs: only containers under policy are affected" } else { "fails (unexpected)" }
    );

    // Cleanup (also done by Drop on every error path above).
    step(8, "clean up")?;
    let problems = guard.finish();
    for p in &problems {
        println!("   warning: {p}");
    }
    println!("   container deleted, overlay unmounted, {} removed", layout.base.display());

    println!();
    let event_ok = events_expected_ok(&event, events.is_some());
    if image_ok && stopped {
        println!("RESULT: the image binary ran, the dropped binary was stopped.");
        if !event_ok {
            println!("        (but the expected verdict event was not seen)");
        }
        println!();
        println!("Next: check this node (`driftguard check`), run the agent (`driftguard run`, or the");
        println!("DaemonSet), and opt pods in with the annotation `driftguard.dev/mode: enforce`");
        println!("(or `monitor` to only report). See docs/annotations.md.");
        Ok(ExitCode::SUCCESS)
    } else {
        let mut why = Vec::new();
        if !image_ok {
            why.push(format!("the image binary did not run ({})", describe(ls.status)));
        }
        if !stopped {
            why.push(format!("the dropped binary was not stopped ({})", describe(dropped.status)));
        }
        eprintln!("driftguard demo: FAILED: {}", why.join("; "));
        eprintln!("run `driftguard check` to see what this node lacks");
        Ok(ExitCode::from(2))
    }
}

fn events_expected_ok(event: &Option<Event>, have_stream: bool) -> bool {
    !have_stream || event.as_ref().is_some_and(|e| e.path.ends_with(DROPPED))
}

fn step(n: u32, what: &str) -> anyhow::Result<()> {
    demo::check_interrupted()?;
    println!("\n[{n}] {what}");
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn print_output(o: &std::process::Output) {
    for (stream, tag) in [(&o.stdout, ""), (&o.stderr, "stderr: ")] {
        let s = String::from_utf8_lossy(stream);
        for l in s.lines().filter(|l| !l.trim().is_empty()) {
            println!("     {tag}{l}");
        }
    }
}
