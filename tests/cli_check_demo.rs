//! The `driftguard check` and `driftguard demo` subcommands, run as the real binary.
//!
//! Trials that cannot run here (not root, no runc, no busybox-static) are
//! reported as ignored with `SKIP <name>: <reason>`; with
//! DRIFTGUARD_REQUIRE_ALL=1 (CI) they fail instead.
//!
//! Every run uses its own config file whose `bpf.pin_dir` is a test-private
//! directory under /sys/fs/bpf, so real pins on the machine are never touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use driftguard::check::{find_in_path, ITEM_NAMES};
use driftguard::demo::{BUSYBOX_CANDIDATES, DROPPED, ID_PREFIX};
use driftguard::enforcer::{self, Enforcer, EnforcerOptions, PolicyStore};
use driftguard::node_state;
use driftguard::policy::{Mode, Policy};
use driftguard::provenance::Provenance;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

type R = Result<(), Failed>;

const BIN: &str = env!("CARGO_BIN_EXE_driftguard");

fn main() {
    let args = Arguments::from_args();
    let require_all = std::env::var("DRIFTGUARD_REQUIRE_ALL").is_ok_and(|v| v == "1");
    let demo_reason = demo_requirements();
    let gate = |name: &str, reason: &Option<String>, f: fn() -> R| -> Trial {
        match reason {
            None => Trial::test(name, f),
            Some(why) if require_all => {
                let why = why.clone();
                Trial::test(name, move || Err(format!("cannot run (DRIFTGUARD_REQUIRE_ALL=1): {why}").into()))
            }
            Some(why) => {
                eprintln!("SKIP {name}: {why}");
                Trial::test(name, f).with_ignored_flag(true)
            }
        }
    };
    let trials = vec![
        Trial::test("check_reports_every_item", check_reports_every_item),
        Trial::test("completions_for_bash_zsh_fish", completions_for_bash_zsh_fish),
        gate("check_proves_the_overlay_layout_read", &demo_reason, check_proves_the_overlay_layout_read),
        gate("demo_stops_dropped_binary", &demo_reason, demo_stops_dropped_binary),
        gate("demo_uses_pinned_enforcement", &demo_reason, demo_uses_pinned_enforcement),
        gate("unload_removes_pins_and_state", &demo_reason, unload_removes_pins_and_state),
        gate("unload_touches_only_its_own_pin_dir", &demo_reason, unload_touches_only_its_own_pin_dir),
        gate("status_json_in_every_state", &demo_reason, status_json_in_every_state),
        gate("check_as_root_and_non_root", &demo_reason, check_as_root_and_non_root),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn demo_requirements() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (overlay mount, runc, BPF)".into());
    }
    if !enforcer::has_vmlinux_btf() {
        return Some("kernel has no BTF".into());
    }
    if find_in_path("runc").is_none() {
        return Some("runc not installed (apt-get install runc)".into());
    }
    if !BUSYBOX_CANDIDATES.iter().any(|p| Path::new(p).exists()) {
        return Some("busybox-static not installed".into());
    }
    None
}

// ---------------------------------------------------------------------------
// Helpers

/// A config file with a test-private pin directory; removes the pins on drop.
struct TestConfig {
    _file: tempfile::NamedTempFile,
    path: PathBuf,
    pin_dir: PathBuf,
}

impl TestConfig {
    fn new() -> Result<Self, Failed> {
        static N: AtomicU32 = AtomicU32::new(0);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/driftguard-test-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = tempfile::Builder::new().prefix("driftguard-cli-test").suffix(".toml").tempfile()?;
        use std::io::Write;
        writeln!(file, "[bpf]\npin_dir = \"{}\"", pin_dir.display())?;
        file.flush()?;
        let path = file.path().to_path_buf();
        Ok(TestConfig { _file: file, path, pin_dir })
    }

    fn run(&self, args: &[&str]) -> Result<Output, Failed> {
        Ok(Command::new(BIN).arg("--config").arg(&self.path).args(args).output()?)
    }
}

impl Drop for TestConfig {
    fn drop(&mut self) {
        let _ = enforcer::unload(&self.pin_dir);
    }
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn show(o: &Output) -> String {
    let (out, err) = text(o);
    format!("status {:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}", o.status)
}

// ---------------------------------------------------------------------------
// check

fn check_reports_every_item() -> R {
    let cfg = TestConfig::new()?;
    let o = cfg.run(&["check", "--json"])?;
    let (stdout, _) = text(&o);
    let items: Vec<Value> =
        serde_json::from_str(&stdout).map_err(|e| format!("check --json is not a JSON array ({e})\n{}", show(&o)))?;
    let names: Vec<&str> = items.iter().filter_map(|i| i["name"].as_str()).collect();
    if names != ITEM_NAMES {
        return Err(format!("items {names:?}, expected {ITEM_NAMES:?}").into());
    }
    let mut any_fail = false;
    for i in &items {
        let name = i["name"].as_str().unwrap_or("?");
        let status = i["status"].as_str().ok_or(format!("{name}: no status"))?;
        if !["ok", "warn", "fail", "unknown"].contains(&status) {
            return Err(format!("{name}: status {status:?}").into());
        }
        any_fail |= status == "fail";
        if i["detail"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{name}: empty detail").into());
        }
        match (&i["fix"], status) {
            (Value::Null, "ok") => {}
            (Value::String(f), _) if !f.is_empty() => {}
            (f, _) => {
                return Err(format!("{name} ({status}): fix must be a non-empty string (null only when ok): {f}").into())
            }
        }
        let keys: BTreeSet<&str> = i.as_object().ok_or("item is not an object")?.keys().map(String::as_str).collect();
        if keys != BTreeSet::from(["name", "status", "detail", "fix"]) {
            return Err(format!("{name}: keys {keys:?}").into());
        }
    }
    let want = if any_fail { 1 } else { 0 };
    if o.status.code() != Some(want) {
        return Err(format!("exit status should be {want} (fail items: {any_fail})\n{}", show(&o)).into());
    }

    // Text mode: same verdict, one line per item.
    let t = cfg.run(&["check"])?;
    let (stdout, _) = text(&t);
    if t.status.code() != Some(want) {
        return Err(format!("text mode exit status differs from --json\n{}", show(&t)).into());
    }
    for (item, name) in items.iter().zip(ITEM_NAMES) {
        let tag = format!("[{}]", item["status"].as_str().unwrap_or("?"));
        if !stdout.lines().any(|l| l.starts_with(&tag) && l.split_whitespace().nth(1) == Some(name)) {
            return Err(format!("text output has no `{tag} {name}` line\n{stdout}").into());
        }
    }
    // The load test in `check` must not leave anything pinned.
    if cfg.pin_dir.exists() {
        return Err(format!("check created {}", cfg.pin_dir.display()).into());
    }
    Ok(())
}

/// `check` with the layout read of overlay's upper dentry forced (the test knob): the real
/// offset is proved on this kernel (`upper check` row), an offset 8 bytes off fails the
/// `capabilities` item with the reason and the fail-closed consequence, and nothing of the
/// proof (mounts, cgroup) is left behind.
fn check_proves_the_overlay_layout_read() -> R {
    let cfg = TestConfig::new()?;
    let capabilities = |knob: &str| -> Result<(String, String, Output), Failed> {
        let o = Command::new(BIN)
            .arg("--config")
            .arg(&cfg.path)
            .args(["check", "--json"])
            .env(enforcer::TEST_OVL_LAYOUT_ENV, knob)
            .output()?;
        let items: Vec<Value> = serde_json::from_str(&text(&o).0).map_err(|e| format!("{e}\n{}", show(&o)))?;
        let c = items.iter().find(|i| i["name"] == "capabilities").ok_or("no capabilities item")?;
        Ok((c["status"].as_str().unwrap_or("").to_string(), c["detail"].as_str().unwrap_or("").to_string(), o))
    };
    let (status, detail, o) = capabilities("layout")?;
    if status == "fail"
        || !detail.contains("forced by DRIFTGUARD_TEST_OVL_LAYOUT")
        || !detail.contains("upper check proved at start")
    {
        return Err(format!("the real layout must be proved: [{status}] {detail}\n{}", show(&o)).into());
    }
    let (status, detail, o) = capabilities("layout+8")?;
    if status != "fail" || !detail.contains("upper check proof FAILED (") || !detail.contains("counts as drift") {
        return Err(format!("a wrong layout must fail the item: [{status}] {detail}\n{}", show(&o)).into());
    }
    if o.status.code() != Some(1) {
        return Err(format!("a failed item must fail check\n{}", show(&o)).into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    if mounts.contains("driftguard-ovlproof") {
        return Err("the proof left a mount behind".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// demo

/// The verdict event the demo printed (a JSON object on its own line).
fn demo_event(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("rule").is_some())
}

/// Container id, cgroup and temp dir the demo reported, to check nothing is left.
fn demo_leftovers(stdout: &str) -> Result<Vec<String>, Failed> {
    let id = stdout
        .split_whitespace()
        .find(|w| {
            w.strip_prefix(ID_PREFIX)
                .is_some_and(|n| !n.is_empty() && n.trim_end_matches(':').chars().all(|c| c.is_ascii_digit()))
        })
        .map(|w| w.trim_end_matches(':').to_string())
        .ok_or("demo output names no container id")?;
    let mut left = Vec::new();
    let list = Command::new(find_in_path("runc").ok_or("runc")?).args(["list", "-q"]).output()?;
    if String::from_utf8_lossy(&list.stdout).lines().any(|l| l.trim() == id) {
        left.push(format!("runc container {id}"));
    }
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    for l in mounts.lines().filter(|l| l.contains(&id)) {
        left.push(format!("mount: {l}"));
    }
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let p = Path::new(base).join(&id);
        if p.exists() {
            left.push(format!("cgroup {}", p.display()));
        }
    }
    if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in ctrls.filter_map(Result::ok) {
            let p = c.path().join(&id);
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
    }
    let tmp = std::env::temp_dir().join(&id);
    if tmp.exists() {
        left.push(format!("directory {}", tmp.display()));
    }
    Ok(left)
}

fn assert_demo_ok(o: &Output) -> Result<Value, Failed> {
    let (stdout, _) = text(o);
    if o.status.code() != Some(0) {
        return Err(format!("demo failed\n{}", show(o)).into());
    }
    let ev = demo_event(&stdout).ok_or_else(|| format!("demo printed no event JSON\n{}", show(o)))?;
    if ev["rule"] != "drift" || ev["path"] != DROPPED || !(ev["action"] == "kill" || ev["action"] == "deny") {
        return Err(format!("unexpected event {ev}\n{}", show(o)).into());
    }
    if ev["mode"] != "enforce" || ev["file"] != "upper" {
        return Err(format!("unexpected event {ev}").into());
    }
    let left = demo_leftovers(&stdout)?;
    if !left.is_empty() {
        return Err(format!("demo left behind: {left:#?}\n{}", show(o)).into());
    }
    Ok(ev)
}

fn demo_stops_dropped_binary() -> R {
    let cfg = TestConfig::new()?;
    let o = cfg.run(&["demo"])?;
    let ev = assert_demo_ok(&o)?;
    let (stdout, _) = text(&o);
    // The output says which path is active and matches the event.
    let path_line = stdout.lines().find(|l| l.contains("enforcement path:")).ok_or("no `enforcement path:` line")?;
    let want_action = if path_line.contains("tracepoint_kill") { "kill" } else { "deny" };
    if ev["action"] != want_action {
        return Err(format!("{path_line} but event action {}", ev["action"]).into());
    }
    if cfg.pin_dir.exists() {
        return Err(format!("demo pinned something under {}", cfg.pin_dir.display()).into());
    }
    Ok(())
}

fn demo_uses_pinned_enforcement() -> R {
    let cfg = TestConfig::new()?;
    // An "agent" that pinned its enforcement and exited.
    {
        let e = Enforcer::load(&EnforcerOptions {
            pin_dir: Some(cfg.pin_dir.clone()),
            force_fallback: false,
            fallback_mappings: false,
        })
        .map_err(|e| format!("pinning enforcement: {e}"))?;
        drop(e);
    }
    if enforcer::pinned_path(&cfg.pin_dir).is_none() {
        return Err("nothing pinned after Enforcer::load".into());
    }
    let o = cfg.run(&["demo"])?;
    let (stdout, _) = text(&o);
    if !stdout.contains("using the enforcement an agent pinned under") {
        return Err(format!("demo did not use the pinned enforcement\n{}", show(&o)).into());
    }
    assert_demo_ok(&o)?;
    // The policy it installed in the pinned maps is gone, the pins themselves stay.
    let store = PolicyStore::open_pinned(&cfg.pin_dir).map_err(|e| e.to_string())?;
    let left = store.list().map_err(|e| e.to_string())?;
    if !left.is_empty() {
        return Err(format!("policies left in the pinned maps: {left:?}").into());
    }
    if enforcer::pinned_path(&cfg.pin_dir).is_none() {
        return Err("the demo removed the pinned enforcement".into());
    }
    Ok(())
}

fn pin(cfg: &TestConfig) -> R {
    let e = Enforcer::load(&EnforcerOptions {
        pin_dir: Some(cfg.pin_dir.clone()),
        force_fallback: false,
        fallback_mappings: false,
    })
    .map_err(|e| format!("pinning enforcement under {}: {e}", cfg.pin_dir.display()))?;
    drop(e);
    Ok(())
}

/// An OCI hook record (the hook's own format) of cgroup id `cgid` in `pin_dir`.
fn hook_record(id: &str, cgid: u64, pin_dir: &Path) -> String {
    serde_json::to_string(&node_state::HookRecord {
        container_id: id.into(),
        cgroup_id: cgid,
        cgroup: "/sys/fs/cgroup/x".into(),
        level: 1,
        pin_dir: pin_dir.to_path_buf(),
        mode: "enforce".into(),
        policy_source: String::new(),
    })
    .expect("a record serializes")
}

fn unload(cfg: &TestConfig, state_dir: &Path, json: bool) -> Result<Output, Failed> {
    let mut c = Command::new(BIN);
    c.arg("--config").arg(&cfg.path).arg("unload").env("DRIFTGUARD_STATE_DIR", state_dir);
    if json {
        c.arg("--json");
    }
    let o = c.output()?;
    if !o.status.success() {
        return Err(format!("unload failed\n{}", show(&o)).into());
    }
    Ok(o)
}

/// `driftguard unload` leaves nothing of its pin dir behind that a later install or test would
/// trip over: the pins, and the state that describes them (registry, events socket, agent
/// state, OCI hook records).
fn unload_removes_pins_and_state() -> R {
    let cfg = TestConfig::new()?;
    pin(&cfg)?;
    let state = tempfile::tempdir()?;
    let dir = state.path().join("driftguard");
    std::fs::create_dir_all(dir.join("oci"))?;
    node_state::claim(&dir, &cfg.pin_dir)?;
    for f in ["containers.json", "events.sock", "agent.json"] {
        std::fs::write(dir.join(f), "x")?;
    }
    std::fs::write(dir.join("oci/abc"), hook_record("abc", 7, &cfg.pin_dir))?;
    let o = unload(&cfg, &dir, false)?;
    if enforcer::pinned_path(&cfg.pin_dir).is_some() || cfg.pin_dir.exists() || dir.exists() {
        return Err(format!(
            "after unload: pinned {:?}, state dir exists {}\n{}",
            enforcer::pinned_path(&cfg.pin_dir),
            dir.exists(),
            show(&o)
        )
        .into());
    }
    // Nothing left: a second unload says so, and succeeds.
    let o = unload(&cfg, &dir, true)?;
    let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("unload --json: {e}\n{}", show(&o)))?;
    if v["was_pinned"] != Value::Bool(false) || v["removed"] != serde_json::json!([]) {
        return Err(format!("second unload: {v}").into());
    }
    Ok(())
}

/// Two enforcements on one node (two pin dirs, one state directory holding the OCI hook records
/// of both): unloading one removes its pins and records only. The other stays pinned with its
/// policy, its records and the agent state that names it; `--json` lists both sides.
fn unload_touches_only_its_own_pin_dir() -> R {
    let (mine, other) = (TestConfig::new()?, TestConfig::new()?);
    pin(&mine)?;
    pin(&other)?;
    let cgid = 0x7fff_0000_0000_0001;
    PolicyStore::open_pinned(&other.pin_dir)
        .and_then(|s| s.set(cgid, 3, &Policy::with_mode(Mode::Enforce), &Provenance::unknown()))
        .map_err(|e| format!("installing a policy in the other pin dir: {e}"))?;
    let state = tempfile::tempdir()?;
    let dir = state.path().join("driftguard");
    std::fs::create_dir_all(dir.join("oci"))?;
    node_state::claim(&dir, &other.pin_dir)?;
    std::fs::write(dir.join("containers.json"), "[]")?;
    std::fs::write(dir.join("oci/mine"), hook_record("mine", 9, &mine.pin_dir))?;
    std::fs::write(dir.join("oci/other"), hook_record("other", cgid, &other.pin_dir))?;

    let o = unload(&mine, &dir, true)?;
    let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("unload --json: {e}\n{}", show(&o)))?;
    let removed: Vec<&str> = v["removed"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let kept: Vec<&str> = v["kept"].as_array().into_iter().flatten().filter_map(|k| k["path"].as_str()).collect();
    let path = |p: PathBuf| p.display().to_string();
    let expect_removed = [path(dir.join("oci/mine")), path(mine.pin_dir.clone())];
    let expect_kept = [path(dir.join("oci/other")), path(dir.join("containers.json"))];
    if v["was_pinned"] != Value::Bool(true)
        || !expect_removed.iter().all(|p| removed.contains(&p.as_str()))
        || !expect_kept.iter().all(|p| kept.contains(&p.as_str()))
        || removed.iter().any(|p| p.starts_with(&path(other.pin_dir.clone())) || p.contains("other"))
    {
        return Err(format!("unload of {}: {v:#}", mine.pin_dir.display()).into());
    }
    if mine.pin_dir.exists() || dir.join("oci/mine").exists() {
        return Err("the unloaded pin dir's pins or record are still there".into());
    }
    if enforcer::pinned_path(&other.pin_dir).is_none() {
        return Err(format!("the other enforcement lost its pins: {v:#}").into());
    }
    let still = PolicyStore::open_pinned(&other.pin_dir)
        .and_then(|s| s.get(cgid))
        .map_err(|e| format!("the other pin dir's maps: {e}"))?;
    if still.is_none() {
        return Err("the other pin dir's policy is gone".into());
    }
    let rec: node_state::HookRecord = serde_json::from_slice(&std::fs::read(dir.join("oci/other"))?)?;
    if rec.pin_dir != other.pin_dir || node_state::owner(&dir)? != other.pin_dir {
        return Err(format!("the other's record or state owner changed: {rec:?}").into());
    }
    // Then the other's unload takes the rest, the directories included.
    unload(&other, &dir, false)?;
    if dir.exists() || other.pin_dir.exists() {
        return Err(
            format!("after both unloads: state dir {}, other pins {}", dir.exists(), other.pin_dir.exists()).into()
        );
    }
    Ok(())
}

/// Run the binary as `nobody` (uid/gid 65534) with the test's config, made readable.
fn run_as_nobody(cfg: &TestConfig, state_dir: &Path, args: &[&str]) -> Result<Output, Failed> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(0o644))?;
    Ok(Command::new(BIN)
        .arg("--config")
        .arg(&cfg.path)
        .args(args)
        .env("DRIFTGUARD_STATE_DIR", state_dir)
        .uid(65534)
        .gid(65534)
        .output()?)
}

/// `status --json` answers JSON on stdout in every state, with the documented exit code:
/// not_loaded 3, agent_down 4, error 1 (as non-root; also a broken config); `enforcing` (0) is
/// asserted with a registered agent in tests/operator.rs. `events` as non-root says why too.
fn status_json_in_every_state() -> R {
    let cfg = TestConfig::new()?;
    let state = tempfile::tempdir()?;
    let status = |as_nobody: bool| -> Result<(i32, Value, Output), Failed> {
        let o = if as_nobody {
            run_as_nobody(&cfg, state.path(), &["status", "--json"])?
        } else {
            Command::new(BIN)
                .arg("--config")
                .arg(&cfg.path)
                .args(["status", "--json"])
                .env("DRIFTGUARD_STATE_DIR", state.path())
                .output()?
        };
        let v: Value =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("status --json is not JSON ({e})\n{}", show(&o)))?;
        Ok((o.status.code().unwrap_or(-1), v, o))
    };
    let (code, v, o) = status(false)?;
    if code != 3 || v["state"] != "not_loaded" || v["pin_dir"] != cfg.pin_dir.display().to_string() {
        return Err(format!("nothing pinned: exit {code}, {v:#}\n{}", show(&o)).into());
    }
    pin(&cfg)?;
    let (code, v, o) = status(false)?;
    if code != 4 || v["state"] != "agent_down" || v["enforcement_path"].is_null() || v["stats"].is_null() {
        return Err(format!("pinned, no agent: exit {code}, {v:#}\n{}", show(&o)).into());
    }
    let (code, v, o) = status(true)?;
    let why = v["error"].as_str().unwrap_or_default();
    if code != 1 || v["state"] != "error" || !why.contains("run as root") {
        return Err(format!("as non-root: exit {code}, {v:#}\n{}", show(&o)).into());
    }
    // A configuration that cannot be loaded: still JSON on stdout.
    let o = Command::new(BIN).args(["--config", "/nonexistent/driftguard.toml", "status", "--json"]).output()?;
    let v: Value =
        serde_json::from_slice(&o.stdout).map_err(|e| format!("bad config: not JSON ({e})\n{}", show(&o)))?;
    if o.status.code() != Some(1)
        || v["state"] != "error"
        || !v["error"].as_str().unwrap_or_default().contains("nonexistent")
    {
        return Err(format!("bad config: {v:#}\n{}", show(&o)).into());
    }
    // `events` as non-root: the same hint, not libbpf's wording.
    let o = run_as_nobody(&cfg, state.path(), &["events"])?;
    let (_, err) = text(&o);
    if o.status.code() != Some(1) || !err.contains("run as root") || err.contains("open pinned failed") {
        return Err(format!("events as non-root\n{}", show(&o)).into());
    }
    Ok(())
}

/// `check` says each reason once, and gives the same verdict whoever runs it: as non-root an
/// item is root's verdict or `unknown` (it needs the load test), never `ok` where root finds a
/// problem. Only the `root` item itself differs.
fn check_as_root_and_non_root() -> R {
    let cfg = TestConfig::new()?;
    let state = tempfile::tempdir()?;
    let parse = |o: &Output| -> Result<Vec<Value>, Failed> {
        serde_json::from_slice(&o.stdout).map_err(|e| format!("check --json: {e}\n{}", show(o)).into())
    };
    let root = parse(&cfg.run(&["check", "--json"])?)?;
    let nobody = parse(&run_as_nobody(&cfg, state.path(), &["check", "--json"])?)?;
    for items in [&root, &nobody] {
        // Each reason once: no clause of 60 characters or more in two items' details.
        let details: Vec<(&str, &str)> =
            items.iter().map(|i| (i["name"].as_str().unwrap_or("?"), i["detail"].as_str().unwrap_or(""))).collect();
        for (name, d) in &details {
            for clause in d.split([':', ';', '(', ')', '\n']).map(str::trim).filter(|c| c.len() >= 60) {
                if let Some((other, _)) = details.iter().find(|(n, o)| n != name && o.contains(clause)) {
                    return Err(format!("{name} and {other} both say: {clause:?}").into());
                }
            }
        }
    }
    for (r, n) in root.iter().zip(&nobody) {
        let name = r["name"].as_str().unwrap_or("?");
        let (rs, ns) = (r["status"].as_str().unwrap_or("?"), n["status"].as_str().unwrap_or("?"));
        if name == "root" {
            if rs != "ok" || ns != "fail" {
                return Err(format!("root item: as root {rs}, as nobody {ns}").into());
            }
            continue;
        }
        if rs != ns && ns != "unknown" {
            return Err(format!("{name}: {rs} as root, {ns} as nobody ({})", n["detail"]).into());
        }
    }
    if !nobody.iter().any(|i| i["status"] == "unknown") {
        return Err("as nobody no item needed root to be known (the load test cannot run)".into());
    }
    Ok(())
}

/// `driftguard completions <shell>` prints the script the packages install, without a
/// configuration; bash's is loaded into a real bash and completes a subcommand and a value.
fn completions_for_bash_zsh_fish() -> R {
    let subcommands = ["run", "status", "events", "check", "demo", "unload", "completions"];
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(BIN).args(["--config", "/nonexistent.toml", "completions", shell]).output()?;
        let (out, _) = text(&o);
        if !o.status.success() || subcommands.iter().any(|c| !out.contains(c)) || !out.contains("driftguard") {
            return Err(format!("completions {shell}\n{}", show(&o)).into());
        }
    }
    let o = Command::new(BIN).args(["completions", "tcsh"]).output()?;
    if o.status.code() != Some(2) || !text(&o).1.contains("bash") {
        return Err(format!(
            "completions for an unknown shell should be a usage error naming the shells\n{}",
            show(&o)
        )
        .into());
    }
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), Command::new(BIN).args(["completions", "bash"]).output()?.stdout)?;
    let complete = |words: &str, cword: u32| -> Result<String, Failed> {
        let prog = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _driftguard driftguard \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.path().display()
        );
        let o = Command::new("bash").args(["--norc", "-c", &prog]).output()?;
        Ok(text(&o).0)
    };
    let got = complete("driftguard unl", 1)?;
    if got.trim() != "unload" {
        return Err(format!("bash completes `driftguard unl` to {got:?}").into());
    }
    let got = complete("driftguard completions ''", 2)?;
    if got.split_whitespace().filter(|w| !w.starts_with('-')).collect::<Vec<_>>() != ["bash", "zsh", "fish"] {
        return Err(format!("bash completes `driftguard completions ` to {got:?}").into());
    }
    Ok(())
}
