//! Smoke test of the qemu VM harness (tests/support/vm.rs): boots every kernel of the matrix,
//! checks BPF LSM + overlayfs are there, and that the test binary can re-run itself in the VM
//! (exit-code and environment propagation, `--exact <trial>` re-entry).
//!
//! Kernels: `sudo tests/vm/fetch-kernels.sh`. Without them (or qemu) the trials are skipped,
//! unless DRIFTGUARD_REQUIRE_VM=1.

#[path = "support/vm.rs"]
mod vm;

use driftguard::enforcer;
use libtest_mimic::{Arguments, Failed, Trial};
use std::time::Duration;

/// When set in the guest, main() prints a line and exits with 3 (exit-code propagation check).
const EXIT3_ENV: &str = "DG_SMOKE_EXIT3";
const PROBE_ENV: &str = "DG_SMOKE_PROBE";
const PROBE_VALUE: &str = "it's \"quoted\" $HOME `x` \\ ok";

fn main() {
    if vm::in_vm() && std::env::var_os(EXIT3_ENV).is_some() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        println!(
            "child: args={args:?} probe={:?} kernel={:?}",
            std::env::var(PROBE_ENV).unwrap_or_default(),
            vm::guest_kernel()
        );
        eprintln!("child: this goes to stderr");
        std::process::exit(3);
    }

    let args = Arguments::from_args();
    let trials = if vm::in_vm() { guest_trials() } else { host_trials() };
    libtest_mimic::run(&args, trials).exit();
}

/// Trials run inside the VM (the host side re-runs this binary with `--exact <name>`).
fn guest_trials() -> Vec<Trial> {
    let k = vm::guest_kernel().unwrap_or_default();
    vec![Trial::test(format!("vm_guest_{k}"), guest_checks)]
}

fn guest_checks() -> Result<(), Failed> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    for (fs, at) in [
        ("bpf", "/sys/fs/bpf"),
        ("cgroup2", "/sys/fs/cgroup"),
        ("securityfs", "/sys/kernel/security"),
        ("tmpfs", "/tmp"),
    ] {
        if !mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 2 && f[1] == at && f[2] == fs
        }) {
            return Err(format!("{fs} not mounted at {at}:\n{mounts}").into());
        }
    }
    // After the mount table: reading the LSM list mounts securityfs when it is missing.
    let lsm = enforcer::lsm_list()?;
    println!("guest: lsm={lsm}");
    if !enforcer::parse_lsm_list(&lsm).contains(&"bpf") {
        return Err(format!("bpf not in LSM list: {lsm}").into());
    }
    if std::env::var(PROBE_ENV).as_deref() != Ok(PROBE_VALUE) {
        return Err(format!("env {PROBE_ENV} = {:?}", std::env::var(PROBE_ENV)).into());
    }
    if !std::fs::read_to_string("/proc/filesystems").map_err(|e| e.to_string())?.contains("overlay") {
        return Err("overlay filesystem not registered".into());
    }
    println!("guest: all checks passed");
    Ok(())
}

fn host_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, k) in vm::kernel_matrix() {
        match k {
            Ok(k) => {
                let k1 = k.clone();
                trials.push(Trial::test(format!("vm_boot_{name}"), move || boot(&k1)));
                let k2 = k.clone();
                trials.push(Trial::test(format!("vm_self_exit_{name}"), move || self_exit(&k2)));
                trials.push(Trial::test(format!("vm_self_trial_{name}"), move || self_trial(&k)));
            }
            Err(reason) => {
                for t in ["vm_boot", "vm_self_exit", "vm_self_trial"] {
                    let reason = reason.clone();
                    let tname = format!("{t}_{name}");
                    if vm::require_vm() {
                        trials.push(Trial::test(tname, move || {
                            Err(format!("VM required (DRIFTGUARD_REQUIRE_VM=1): {reason}").into())
                        }));
                    } else {
                        eprintln!("SKIP: {tname}: {reason}");
                        trials.push(Trial::test(tname, || Ok(())).with_ignored_flag(true));
                    }
                }
            }
        }
    }
    trials
}

fn check(cond: bool, what: &str, r: &vm::VmResult) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(format!(
            "{what}\nexit code {}\n--- output ---\n{}\n--- console (tail) ---\n{}",
            r.exit_code,
            r.output,
            r.console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        )
        .into())
    }
}

const BOOT_SCRIPT: &str = r#"
set -e
echo "uname=$(uname -r)"
echo "lsm=$(cat /sys/kernel/security/lsm)"
mkdir -p /tmp/lower /tmp/upper /tmp/merged
mount -t tmpfs lower /tmp/lower
mount -t tmpfs upper /tmp/upper
mkdir /tmp/upper/data /tmp/upper/work
echo from-lower > /tmp/lower/a
mount -t overlay overlay -o lowerdir=/tmp/lower,upperdir=/tmp/upper/data,workdir=/tmp/upper/work /tmp/merged
echo from-upper > /tmp/merged/b
test "$(cat /tmp/merged/a)" = from-lower
test "$(cat /tmp/upper/data/b)" = from-upper
test ! -e /tmp/upper/data/a
grep -q ' /tmp/merged overlay ' /proc/mounts
echo "overlay=ok"
"#;

fn boot(k: &vm::Kernel) -> Result<(), Failed> {
    let mut req = vm::VmRequest::new("/bin/busybox");
    req.args = vec!["sh".into(), "-c".into(), BOOT_SCRIPT.into()];
    req.timeout = Duration::from_secs(180);
    req.memory_mb = 256;
    let r = vm::run_in_vm(k, &req)?;
    eprintln!("vm_boot_{}: {} booted and ran in {:.1}s", k.name, k.version, r.elapsed.as_secs_f64());
    check(r.exit_code == 0, "boot script failed", &r)?;
    check(r.output.contains(&format!("uname={}", k.version)), "wrong kernel", &r)?;
    let lsm = r.output.lines().find_map(|l| l.strip_prefix("lsm=")).unwrap_or("");
    check(enforcer::parse_lsm_list(lsm).contains(&"bpf"), "bpf not in /sys/kernel/security/lsm", &r)?;
    check(r.output.lines().any(|l| l == "overlay=ok"), "overlay check failed", &r)?;
    Ok(())
}

fn self_exit(k: &vm::Kernel) -> Result<(), Failed> {
    let mut req = vm::self_request("unused")?;
    req.args = vec!["first arg".into(), "it's".into()];
    req.env.push((EXIT3_ENV.into(), "1".into()));
    req.env.push((PROBE_ENV.into(), PROBE_VALUE.into()));
    req.timeout = Duration::from_secs(180);
    let r = vm::run_in_vm(k, &req)?;
    eprintln!("vm_self_exit_{}: {:.1}s", k.name, r.elapsed.as_secs_f64());
    check(r.exit_code == 3, "expected exit code 3", &r)?;
    let want = format!("child: args=[\"first arg\", \"it's\"] probe={PROBE_VALUE:?} kernel=Some({:?})", k.name);
    check(r.output.contains(&want), &format!("expected line {want}"), &r)?;
    check(r.output.contains("child: this goes to stderr"), "stderr not captured", &r)?;
    Ok(())
}

fn self_trial(k: &vm::Kernel) -> Result<(), Failed> {
    let trial = format!("vm_guest_{}", k.name);
    let mut req = vm::self_request(&trial)?;
    req.env.push((PROBE_ENV.into(), PROBE_VALUE.into()));
    req.timeout = Duration::from_secs(180);
    let r = vm::run_in_vm(k, &req)?;
    eprintln!("vm_self_trial_{}: {:.1}s", k.name, r.elapsed.as_secs_f64());
    check(r.exit_code == 0, "guest trial failed", &r)?;
    check(r.output.contains("guest: all checks passed"), "guest checks did not run", &r)?;
    check(r.output.contains("1 passed"), "expected exactly one guest trial to pass", &r)?;
    Ok(())
}
