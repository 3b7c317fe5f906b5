//! Wall time of one `driftguard-oci-hook create-runtime` (+ `poststop`) invocation, the
//! real binary as a runtime runs it: fork/exec, read the state on stdin, config.json,
//! cgroup lookup, open the pinned maps, write the policy and the record.
//!
//! `cargo bench -p driftguard-oci-hook --bench create_runtime` (root, BPF, cgroup v2).
//! Loads the enforcement into a private pin dir, creates a cgroup with one idle process
//! in it (the "container"), and times N invocations of each stage. Prints min / median /
//! p95 / max. `DG_BENCH_ITERS` (default 200).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driftguard::cgroup::CgroupRoot;
use driftguard::enforcer::{self, Enforcer, EnforcerOptions};

const HOOK: &str = env!("CARGO_BIN_EXE_driftguard-oci-hook");

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches lists benches; nothing to list.
    }
    // Only under `cargo bench` (which passes --bench); `cargo test --all-targets` runs it too.
    if !std::env::args().any(|a| a == "--bench") {
        println!("create_runtime bench: not run by `cargo bench` (no --bench argument); nothing measured");
        return;
    }
    if let Err(e) = bench() {
        eprintln!("create_runtime bench: {e}");
        std::process::exit(1);
    }
}

fn invoke(stage: &str, args: &[String], state: &[u8]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut child = Command::new(HOOK)
        .arg(stage)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{HOOK}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(state).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!("{stage} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(d)
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<16} n={:<4} min {:.2} ms  median {:.2} ms  p95 {:.2} ms  max {:.2} ms",
        v.len(),
        ms(v[0]),
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(v[v.len() - 1])
    );
}

fn bench() -> Result<(), String> {
    let iters: usize = std::env::var("DG_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(200).max(1);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-oci-bench-{}", std::process::id()));
    let enf = Enforcer::load(&EnforcerOptions {
        pin_dir: Some(pin_dir.clone()),
        force_fallback: false,
        fallback_mappings: false,
    })
    .map_err(|e| e.to_string())?;
    println!("enforcement: {} (pinned under {})", enf.path().as_str(), pin_dir.display());
    drop(enf);

    let root = CgroupRoot::detect().map_err(|e| e.to_string())?;
    let cg = root.path.join(format!("dg-oci-bench-{}", std::process::id()));
    fs::create_dir_all(&cg).map_err(|e| format!("{}: {e}", cg.display()))?;
    let tmp = std::env::temp_dir().join(format!("dg-oci-bench-{}", std::process::id()));
    let result = (|| -> Result<(), String> {
        let bundle = tmp.join("bundle");
        fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
        // A realistic config.json size: podman/CRI-O configs are 5-20 KB.
        let spec = Command::new("runc").arg("spec").arg("--bundle").arg(&bundle).status();
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value = if spec.is_ok_and(|s| s.success()) {
            serde_json::from_slice(&fs::read(&cfg_path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?
        } else {
            serde_json::json!({"ociVersion": "1.0.2"})
        };
        cfg["annotations"] =
            serde_json::json!({"driftguard.dev/mode": "enforce", "driftguard.dev/allow": "/usr/local/bin/tool"});
        fs::write(&cfg_path, cfg.to_string()).map_err(|e| e.to_string())?;
        let config = tmp.join("driftguard.toml");
        fs::write(&config, "").map_err(|e| e.to_string())?;
        // The "container": an idle process in its own cgroup (moved there by us, not exec'd).
        let mut ctr = Command::new("sleep").arg("3600").spawn().map_err(|e| e.to_string())?;
        fs::write(cg.join("cgroup.procs"), ctr.id().to_string()).map_err(|e| e.to_string())?;
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
            "pid": ctr.id(), "bundle": bundle})
        .to_string()
        .into_bytes();
        let args: Vec<String> = [
            "--pin-dir",
            &pin_dir.display().to_string(),
            "--config",
            &config.display().to_string(),
            "--state-dir",
            &tmp.join("state").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (mut create, mut stop) = (Vec::new(), Vec::new());
        let r = (|| {
            for _ in 0..iters {
                create.push(invoke("create-runtime", &args, &state)?);
                stop.push(invoke("poststop", &args, &state)?);
            }
            Ok::<(), String>(())
        })();
        let _ = ctr.kill();
        let _ = ctr.wait();
        r?;
        stats("create-runtime", create);
        stats("poststop", stop);
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    remove_cgroup(&cg);
    let _ = enforcer::unload(&pin_dir);
    result
}

fn remove_cgroup(cg: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(cg).is_ok() || !cg.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
