//! The real `driftguard run` binary as a test drives it: its own config (NRI socket, pin dir
//! `/sys/fs/bpf/dg-<tag>-<pid>-<n>`, events file, metrics port), state dir and log file under a
//! temporary directory. Killed and its pinned state unloaded on drop. The one agent harness of
//! tests/agent.rs, tests/adversarial.rs, tests/cri.rs and benches/cri.rs.
//!
//! Include with `#[path = "support/agent_process.rs"] mod agent_process;` next to
//! `#[path = "support/vm.rs"] mod vm;` (it asks `crate::vm::in_vm()`).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

const TAIL: usize = 40;

/// The capabilities packaging/systemd/driftguard.service and the DaemonSet grant
/// (`AmbientCapabilities=`), for [`AgentProcess::unit_caps`].
pub const UNIT_CAPS: &str = "-all,+bpf,+perfmon,+sys_admin";

/// The `[log] level` of the config the harness writes.
pub const LOG_LEVEL: &str = "info,driftguard=debug,nri_plugin=debug";

pub struct AgentProcess {
    /// The agent's own directory: config, state, log, events, and (for
    /// [`AgentProcess::with_own_socket`]) the NRI socket.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    /// The NRI socket the agent connects to.
    pub socket: PathBuf,
    pub events_file: PathBuf,
    pub metrics_addr: String,
    /// Start with only [`UNIT_CAPS`] (through setpriv, when installed and not in a VM) instead of
    /// full root.
    pub unit_caps: bool,
    /// Extra environment of the agent process.
    pub env: Vec<(String, String)>,
    /// Arguments after `run --config <file>` (e.g. flags overriding the file).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl AgentProcess {
    /// Write the config for an agent connecting to `nri_socket` (not started yet).
    pub fn new(nri_socket: &Path) -> Result<Self, String> {
        Self::create("cri", Some(nri_socket))
    }

    /// An agent whose NRI socket is `nri.sock` in its own directory (for the NRI test peer);
    /// `tag` names the suite in its pin dir and temp dir.
    pub fn with_own_socket(tag: &str) -> Result<Self, String> {
        Self::create(tag, None)
    }

    /// The one config writer: NRI socket, private pin dir, events file, free metrics port.
    fn create(tag: &str, nri_socket: Option<&Path>) -> Result<Self, String> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/dg-{tag}-{}-{n}", std::process::id()));
        let _ = driftguard::enforcer::unload(&pin_dir);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("dg-{tag}-agent-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        let port = free_port()?;
        let socket = nri_socket.map(Path::to_path_buf).unwrap_or_else(|| dir.join("nri.sock"));
        let events_file = dir.join("events.jsonl");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "default_mode = \"off\"\n[nri]\nsocket = \"{}\"\nreconnect_max_backoff_ms = 300\n\
                 [bpf]\npin_dir = \"{}\"\n[events]\nstdout = false\nfile = \"{}\"\nnode_name = \"test-node\"\n\
                 [metrics]\naddress = \"127.0.0.1:{port}\"\n[log]\nlevel = \"{LOG_LEVEL}\"\n",
                socket.display(),
                pin_dir.display(),
                events_file.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(AgentProcess {
            dir,
            _tmp: tmp,
            config,
            pin_dir,
            socket,
            events_file,
            metrics_addr: format!("127.0.0.1:{port}"),
            unit_caps: false,
            env: Vec::new(),
            extra_args: Vec::new(),
            child: None,
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn start(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .map_err(|e| e.to_string())?;
        let bin = env!("CARGO_BIN_EXE_driftguard");
        let setpriv = driftguard::check::find_in_path("setpriv").filter(|_| self.unit_caps && !crate::vm::in_vm());
        let mut cmd = match setpriv {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.arg(format!("--bounding-set={UNIT_CAPS}"))
                    .arg(format!("--inh-caps={UNIT_CAPS}"))
                    .arg(format!("--ambient-caps={UNIT_CAPS}"))
                    .arg("--")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // SAFETY: prctl is async-signal-safe. The agent must not outlive a killed test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .args(&self.extra_args)
            .env("DRIFTGUARD_STATE_DIR", self.state_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting driftguard run: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Start and wait until the agent has registered and synchronized `n` times in total
    /// (counted over the whole log, which is appended to across restarts).
    pub fn start_synced(&mut self, n: usize) -> Result<(), String> {
        self.start()?;
        self.wait_synced(n)
    }

    /// Barrier: the log has at least `n` "synchronized with the runtime" lines.
    pub fn wait_synced(&mut self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.synced_count() >= n {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("the agent exited ({st}) before synchronizing\n{}", self.log_tail()));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the agent did not synchronize with the runtime (#{n}) within 60s\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 60 s) for the agent process to exit on its own.
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus, String> {
        let child = self.child.as_mut().ok_or("agent not started")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!("the agent did not exit within 60s\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 60 s) until the agent's log contains `needle` at least `count` times.
    pub fn wait_log(&self, needle: &str, count: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(needle).count() < count {
            if Instant::now() > deadline {
                return Err(format!("agent log lacks {needle:?} (x{count}):\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pinned policy store (error with the agent's log when it is not pinned yet).
    pub fn store(&self) -> Result<driftguard::enforcer::PolicyStore, String> {
        driftguard::enforcer::PolicyStore::open_pinned(&self.pin_dir).map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    /// The pinned enforcement path.
    pub fn path(&self) -> Option<driftguard::enforcer::EnforcementPath> {
        driftguard::enforcer::pinned_path(&self.pin_dir)
    }

    pub fn synced_count(&self) -> usize {
        self.log().matches("synchronized with the runtime").count()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, no cleanup by the agent (pinned state stays).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a clean stop, as systemd and the kubelet do it) and wait up to 60 s for the exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus, String> {
        if !self.signal(libc::SIGTERM) {
            return Err("the agent is not running".into());
        }
        let mut child = self.child.take().ok_or("the agent is not running")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the agent did not exit within 60 s of SIGTERM\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Arguments `driftguard run` gets after its `--config` (from the next start on).
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The agent's stderr exactly as written (colour codes, if any, kept).
    pub fn raw_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Replace `from` by `to` in the config file (before [`AgentProcess::start`]).
    pub fn edit_config(&self, from: &str, to: &str) -> Result<(), String> {
        let text = fs::read_to_string(&self.config).map_err(|e| e.to_string())?;
        if !text.contains(from) {
            return Err(format!("config lacks {from:?}"));
        }
        fs::write(&self.config, text.replace(from, to)).map_err(|e| e.to_string())
    }

    /// `driftguard <args…>` with this agent's config and state dir: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String), String> {
        let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("DRIFTGUARD_STATE_DIR", self.state_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("driftguard {args:?}: {e}"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// SIGSTOP: the agent stays alive (its NRI connection, if any, stays open) but does
    /// nothing until [`AgentProcess::resume`]. False if it is not running.
    pub fn pause(&self) -> bool {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`AgentProcess::pause`].
    pub fn resume(&self) -> bool {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, sig: i32) -> bool {
        match &self.child {
            // SAFETY: signalling our own, not yet reaped, child.
            Some(c) => unsafe { libc::kill(c.id() as i32, sig) == 0 },
            None => false,
        }
    }

    /// The agent's stderr so far, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default())
    }

    /// The last lines of the log, without libbpf's loader chatter.
    pub fn log_tail(&self) -> String {
        let full = self.log();
        let log: Vec<String> = full
            .lines()
            .filter(|l| !l.starts_with("libbpf: "))
            .map(|l| match l.char_indices().nth(400) {
                Some((i, _)) => format!("{}…", &l[..i]),
                None => l.to_string(),
            })
            .collect();
        format!("--- agent log (last {TAIL} lines, libbpf lines left out) ---\n{}", tail(&log.join("\n"), TAIL))
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.events_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Barrier: the first event matching `pred` (30 s deadline).
    pub fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                let evs: Vec<String> = self.events().iter().map(|e| e.to_string()).collect();
                return Err(format!("no event {what} within 30s; events:\n{}", evs.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path` of the agent's metrics endpoint: the whole response, status line first.
    pub fn http_get(&self, path: &str) -> Result<String, String> {
        http_get(&self.metrics_addr, path)
    }

    /// GET /metrics.
    pub fn metrics(&self) -> Result<String, String> {
        self.http_get("/metrics")
    }

    /// Polls GET `path` (up to 60 s) until the whole response satisfies `pred`: the barrier for
    /// anything the agent updates asynchronously (the NRI state in /healthz, gauges set on the
    /// runtime's Configure). A connection refused while the endpoint comes up counts as "not yet".
    /// The error names `what` and carries the last response and the log's tail.
    pub fn wait_http(&self, path: &str, what: &str, pred: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match self.http_get(path) {
                Ok(r) if pred(&r) => return Ok(r),
                Ok(r) => r,
                Err(e) => format!("(no answer: {e})"),
            };
            if Instant::now() >= deadline {
                return Err(format!("{path} never showed {what} within 60 s; last:\n{last}\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls /metrics until every line of `want` is in it (see [`wait_http`](Self::wait_http)).
    pub fn wait_metrics(&self, want: &[&str]) -> Result<String, String> {
        self.wait_http("/metrics", &format!("{want:?}"), |m| want.iter().all(|w| m.contains(w)))
    }

    /// `driftguard status --json` with this agent's config and state dir.
    pub fn status(&self) -> Result<serde_json::Value, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .env("DRIFTGUARD_STATE_DIR", self.state_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("driftguard status: {e}"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!("driftguard status --json: {e} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))
        })
    }
}

/// One HTTP/1.1 GET on a fresh connection (`Connection: close`): the whole response.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("GET {path}: connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path}: write: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| format!("GET {path}: read: {e}"))?;
    Ok(body)
}

/// The value of an unlabelled metric in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Drop `ESC [ … letter` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for n in it.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        let _ = driftguard::enforcer::unload(&self.pin_dir);
    }
}
