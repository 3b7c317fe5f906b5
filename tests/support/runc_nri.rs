//! runc containers driven through the NRI test peer, as tests/agent.rs and tests/adversarial.rs
//! use them: an overlay (or bind-mounted) busybox rootfs, `runc create` in a cgroup under
//! `dg-agent-<pid>`, the NRI `Container` that describes it, and the peer-side helpers (connect,
//! start a container, expect an exec to be stopped).
//!
//! Include with `#[path = "support/runc_nri.rs"] mod runc_nri;` next to
//! `#[path = "support/rootfs.rs"] mod rootfs;` (the images and overlays).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use driftguard::enforcer::EnforcementPath;
use libtest_mimic::Failed;

use crate::rootfs;
use nri_plugin::api::{Container, ContainerState, PodSandbox};
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection, RuntimePeer};

type R = Result<(), Failed>;

pub fn cgroup2_root() -> Result<PathBuf, Failed> {
    Ok(driftguard::cgroup::CgroupRoot::detect().map_err(|e| e.to_string())?.path)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime")
}

/// Accept the agent's connection and do the NRI handshake and an initial Synchronize.
pub async fn connect(
    peer: &RuntimePeer,
    pods: Vec<PodSandbox>,
    ctrs: Vec<Container>,
) -> Result<PeerConnection, Failed> {
    let mut conn = tokio::time::timeout(Duration::from_secs(60), peer.accept())
        .await
        .map_err(|_| "the agent did not connect to the NRI socket within 60s")?
        .map_err(|e| format!("accept: {e}"))?;
    conn.set_timeout(Duration::from_secs(60));
    let (reg, _) = conn.handshake().await.map_err(|e| format!("handshake: {e}"))?;
    if reg.plugin_name != "driftguard" || reg.plugin_idx != "10" {
        return Err(format!("registered as {}-{}", reg.plugin_idx, reg.plugin_name).into());
    }
    conn.synchronize(pods, ctrs, 2).await.map_err(|e| format!("synchronize: {e}"))?;
    Ok(conn)
}

// ---------------------------------------------------------------------------
// runc containers

pub struct RuncCtr {
    pub id: String,
    pub bundle: PathBuf,
    pub merged: PathBuf,
    pub cgroups_path: String,
    pub parent_cgroup: PathBuf,
}

pub fn runc(args: &[&str]) -> Result<std::process::Output, Failed> {
    Command::new("runc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failed::from(format!("runc {args:?}: {e}")))
}

impl RuncCtr {
    /// `runc create`: cgroup and init exist, entrypoint not yet exec'd (where containerd calls
    /// NRI StartContainer).
    pub fn create(dir: &Path, name: &str) -> Result<Self, Failed> {
        Self::create_with(dir, name, true)
    }

    pub fn create_with(dir: &Path, name: &str, overlay: bool) -> Result<Self, Failed> {
        let id = format!("dg-{}-{name}", std::process::id());
        let bundle = dir.join(format!("bundle-{name}"));
        let merged = bundle.join("rootfs");
        if overlay {
            // /data: the mount point of a volume the pod declares.
            rootfs::overlay_rootfs(&bundle, &merged, &["data"])?;
        } else {
            // A plain directory rootfs, like a non-overlay snapshotter gives.
            let lower = bundle.join("lower");
            rootfs::build_image(&lower, &["data"])?;
            fs::create_dir_all(&merged).map_err(|e| e.to_string())?;
            let st = Command::new("mount")
                .args(["-o", "bind"])
                .arg(&lower)
                .arg(&merged)
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err("bind mount failed".into());
            }
        }
        let parent = format!("dg-agent-{}", std::process::id());
        let cgroups_path = format!("/{parent}/{id}");
        // containerd's default capability set, as a Kubernetes pod gets it.
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sleep", "3600"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true
            },
            "root": {"path": merged, "readonly": false},
            "hostname": "dg",
            // As containerd's default spec: /dev is a writable tmpfs without noexec. /data is a
            // volume the pod declares.
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=65536k"]}
            ],
            "linux": {
                "cgroupsPath": cgroups_path,
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]
            }
        });
        fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let _ = runc(&["delete", "-f", &id]);
        // The container inherits runc's stdio: a pipe would never reach EOF, so use a file.
        let log_path = bundle.join("runc-create.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let st = Command::new("runc")
            .args(["create", "--bundle", bundle.to_str().ok_or("bundle path")?, &id])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| format!("runc create: {e}"))?;
        if !st.success() {
            return Err(format!("runc create: {}", fs::read_to_string(&log_path).unwrap_or_default()).into());
        }
        Ok(RuncCtr { id, bundle, merged, cgroups_path, parent_cgroup: cgroup2_root()?.join(parent) })
    }

    pub fn pid(&self) -> u32 {
        runc(&["state", &self.id])
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["pid"].as_u64())
            .unwrap_or(0) as u32
    }

    pub fn start(&self) -> R {
        let out = runc(&["start", &self.id])?;
        if !out.status.success() {
            return Err(format!("runc start: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }

    /// `runc exec` (the `kubectl exec` path). Returns (exit code, output).
    pub fn exec(&self, argv: &[&str]) -> Result<(i32, String), Failed> {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend_from_slice(argv);
        let out = runc(&args)?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// Drop a binary into the container's writable layer (through the overlay).
    pub fn drop_binary(&self, inside: &str) -> R {
        Ok(rootfs::drop_binary(&self.merged, inside)?)
    }

    pub fn nri(&self, pod: &PodSandbox, name: &str) -> Container {
        let mut c = Container::new();
        c.id = self.id.clone();
        c.pod_sandbox_id = pod.id.clone();
        c.name = name.to_string();
        c.state = ContainerState::CONTAINER_RUNNING.into();
        c.linux.mut_or_insert_default().cgroups_path = self.cgroups_path.clone();
        c.pid = self.pid();
        c.annotations.insert("io.kubernetes.cri.image-name".into(), "busybox:test".into());
        c
    }
}

impl Drop for RuncCtr {
    fn drop(&mut self) {
        let _ = runc(&["delete", "-f", &self.id]);
        rootfs::umount(&self.merged);
        let _ = fs::remove_dir(&self.parent_cgroup);
        let _ = fs::remove_dir_all(&self.bundle);
    }
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct CgroupDirs(pub Vec<PathBuf>);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

pub fn pod(name: &str, annotations: &[(&str, &str)]) -> PodSandbox {
    let mut p = PodSandbox::new();
    p.id = format!("pod-{name}");
    p.name = name.to_string();
    p.namespace = "shop".into();
    p.uid = format!("uid-{name}");
    p.annotations = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
    p
}

pub fn assert_stopped(path: Option<EnforcementPath>, code: i32, out: &str, what: &str) -> R {
    match path {
        Some(EnforcementPath::TracepointKill) if code == 137 => Ok(()),
        Some(EnforcementPath::Lsm)
            if code != 0
                && ["permission denied", "operation not permitted"].iter().any(|m| out.to_lowercase().contains(m)) =>
        {
            Ok(())
        }
        p => Err(format!("{what}: expected the exec to be stopped on path {p:?}, got exit {code}: {out}").into()),
    }
}

pub async fn start_container(conn: &PeerConnection, d: Delivery, pod: &PodSandbox, ctr: &Container) -> R {
    for ev in [
        LifecycleEvent::RunPodSandbox(pod.clone()),
        LifecycleEvent::CreateContainer(pod.clone(), ctr.clone()),
        LifecycleEvent::StartContainer(pod.clone(), ctr.clone()),
    ] {
        let what = format!("{:?}", ev.event());
        conn.send(d, ev).await.map_err(|e| format!("NRI {what} ({d:?}) failed: {e}"))?;
    }
    Ok(())
}

impl RuncCtr {
    /// Cgroup v2 id of the container's cgroup.
    pub fn cgroup_id(&self) -> Result<u64, Failed> {
        let path = cgroup2_root()?.join(self.cgroups_path.trim_start_matches('/'));
        driftguard::cgroup::cgroup_id(&path).map_err(|e| e.to_string().into())
    }
}
