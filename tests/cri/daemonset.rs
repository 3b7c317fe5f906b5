//! The DaemonSet's image, run the way the kubelet runs the DaemonSet's pod.
use super::*;

/// The deploy kit as applied: the objects of `deploy/daemonset.yaml`, which CI checks is the
/// rendering of `deploy/kustomize/base` (tests/packaging/test.sh), parsed with python3-yaml.
pub(super) fn rendered_deploy_kit() -> Result<Vec<serde_json::Value>, String> {
    let file = containerd::repo_root().join("deploy/daemonset.yaml");
    // Debian's python3 has python3-yaml (scripts/install-deps.sh); another one on PATH may not.
    let python = if Path::new("/usr/bin/python3").is_file() { "/usr/bin/python3" } else { "python3" };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(&file)
        .output()
        .map_err(|e| format!("python3 (apt-get install python3-yaml): {e}"))?;
    if !out.status.success() {
        return Err(format!("parsing {}: {}", file.display(), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{}: {e}", file.display()))
}

/// This trial's node: the DaemonSet's hostPath volumes point at the node's real paths except
/// where that would touch the machine's own driftguard or runtime: those are mapped to
/// scratch directories (the NRI socket directory to this test's containerd, /run/driftguard,
/// /opt/driftguard and /etc/containerd to private ones). bpffs is the host's, through a shared
/// bind mount of /sys/fs/bpf: HostToContainer propagation needs a shared or slave source mount
/// (systemd makes every mount shared on a real node; this test machine's are private).
/// Dropped after the containerd: unloads the agent's pins, detaches the bind mount.
pub(super) struct DaemonSetNode {
    dir: tempfile::TempDir,
    map: Vec<(&'static str, PathBuf)>,
    pin_dir: PathBuf,
    bpffs: PathBuf,
    /// Empty directories made on this machine as the kubelet would ([`DaemonSetNode::mountpoint`]).
    made: std::cell::RefCell<Vec<PathBuf>>,
}

impl DaemonSetNode {
    /// Before containerd starts (so that it is dropped after it); [`DaemonSetNode::attach`] then.
    fn new() -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("dg-ds-node-").tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().to_path_buf();
        let bpffs = d.join("bpffs");
        let etc_containerd = d.join("etc-containerd");
        for p in [
            &bpffs,
            &etc_containerd,
            &d.join("run-driftguard"),
            &d.join("opt-driftguard"),
            &d.join("var-log-driftguard"),
        ] {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let sh = |cmd: &str| -> T {
            let st = std::process::Command::new("/bin/sh").args(["-c", cmd]).status().map_err(|e| e.to_string())?;
            st.success().then_some(()).ok_or(format!("`{cmd}`: {st}"))
        };
        sh(&format!("mount --bind /sys/fs/bpf {0} && mount --make-shared {0}", bpffs.display()))?;
        // `dg-cri-<pid>-<n>`: `containerd::sweep_stale` unloads it if this process dies.
        static DS_SEQ: AtomicUsize = AtomicUsize::new(0);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/dg-cri-{}-{}",
            std::process::id(),
            9000 + DS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let map = vec![
            ("/sys/fs/bpf", bpffs.clone()),
            ("/run/driftguard", d.join("run-driftguard")),
            ("/opt/driftguard", d.join("opt-driftguard")),
            ("/var/log/driftguard", d.join("var-log-driftguard")),
            ("/etc/containerd", etc_containerd),
        ];
        Ok(DaemonSetNode { dir, map, pin_dir, bpffs, made: Default::default() })
    }

    /// The node's runtime is `ctd`: its NRI socket directory and its config.
    fn attach(&mut self, ctd: &Containerd) -> T {
        let etc = self.host_path("/etc/containerd");
        std::fs::copy(&ctd.config, etc.join("config.toml")).map_err(|e| e.to_string())?;
        self.map.push(("/var/run/nri", ctd.dir.clone()));
        Ok(())
    }

    /// A mount inside the read-only mount of the node's root (node-setup's `/host/opt/driftguard`
    /// in `/host`) needs its mountpoint on the node: there the kubelet has made it for the
    /// DirectoryOrCreate volume. Here that volume is a scratch directory, so make the (empty)
    /// node directory when it is missing, and remove it again at the end.
    fn mountpoint(&self, node_path: &Path) -> T {
        if !node_path.exists() {
            std::fs::create_dir_all(node_path).map_err(|e| format!("{}: {e}", node_path.display()))?;
            self.made.borrow_mut().push(node_path.to_path_buf());
        }
        Ok(())
    }

    fn host_path(&self, node_path: &str) -> PathBuf {
        self.map.iter().find(|(p, _)| *p == node_path).map(|(_, h)| h.clone()).unwrap_or_else(|| node_path.into())
    }
}

impl Drop for DaemonSetNode {
    fn drop(&mut self) {
        let _ = enforcer::unload(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string; our own bind mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for d in self.made.borrow().iter() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub(super) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The HTTP status code of GET `path` on 127.0.0.1:`port` (the kubelet's httpGet probe).
pub(super) fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// The CRI ContainerConfig the kubelet makes of container `c` of `pod_spec` (the fields the
/// DaemonSet uses; any other field is an error, so this keeps up with the manifest): command,
/// args, env (values and the spec.nodeName field), security context and volume mounts (hostPath
/// through `node`, the ConfigMap as the directory `configmap`, which is named after it, emptyDir
/// as a scratch directory).
pub(super) fn cri_container(
    c: &serde_json::Value,
    pod_spec: &serde_json::Value,
    node: &DaemonSetNode,
    configmap: &Path,
    ns: &cri::NamespaceOption,
) -> Result<cri::ContainerConfig, String> {
    let name = c["name"].as_str().ok_or(format!("container without a name: {c}"))?;
    let known = [
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ];
    if let Some(k) = c.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !known.contains(&k.as_str())) {
        return Err(format!("container {name}: field {k} is not translated by this trial"));
    }
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
    };
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let mut envs = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            node_name.clone()
        } else {
            return Err(format!("container {name}: env {e} is not translated by this trial"));
        };
        envs.push(cri::KeyValue { key, value });
    }
    let volumes: Vec<&serde_json::Value> = pod_spec["volumes"].as_array().into_iter().flatten().collect();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap_or_default();
        let v = volumes.iter().find(|v| v["name"] == vname).ok_or(format!("{name}: no volume {vname}"))?;
        let host = if let Some(p) = v["hostPath"]["path"].as_str() {
            let h = node.host_path(p);
            if v["hostPath"]["type"] == "DirectoryOrCreate" {
                std::fs::create_dir_all(&h).map_err(|e| format!("{}: {e}", h.display()))?;
            }
            h
        } else if v.get("configMap").is_some() {
            let want = configmap.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if v["configMap"]["name"] != want {
                return Err(format!("volume {v}: not the deploy kit's ConfigMap {want}"));
            }
            configmap.to_path_buf()
        } else if v.get("emptyDir").is_some() {
            let h = node.dir.path().join(format!("empty-{name}-{vname}"));
            std::fs::create_dir_all(&h).map_err(|e| format!("{}: {e}", h.display()))?;
            h
        } else {
            return Err(format!("volume {v} is not translated by this trial"));
        };
        let propagation = match m["mountPropagation"].as_str() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(o) => return Err(format!("mountPropagation {o}")),
        };
        mounts.push(cri::Mount {
            container_path: m["mountPath"].as_str().unwrap_or_default().to_string(),
            host_path: host.display().to_string(),
            readonly: m["readOnly"] == true,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    for m in &mounts {
        let outer = mounts.iter().find(|o| {
            o.host_path == "/"
                && o.container_path != m.container_path
                && Path::new(&m.container_path).starts_with(&o.container_path)
        });
        if let Some(o) = outer {
            let rel = Path::new(&m.container_path).strip_prefix(&o.container_path).map_err(|e| e.to_string())?;
            node.mountpoint(&Path::new("/").join(rel))?;
        }
    }
    let sc = &c["securityContext"];
    let unconfined = || cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    };
    let security = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            // As rendered: this machine's bounding set lacks CAP_SYS_RESOURCE, as some nodes'
            // do, and the DaemonSet must start there (kernels before 5.11 add it with an overlay).
            add_capabilities: strings(&sc["capabilities"]["add"]),
            drop_capabilities: strings(&sc["capabilities"]["drop"]),
            ..Default::default()
        }),
        privileged: sc["privileged"] == true,
        namespace_options: Some(ns.clone()),
        run_as_user: sc["runAsUser"].as_i64().map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
        no_new_privs: sc["allowPrivilegeEscalation"] == false,
        seccomp: (sc["seccompProfile"]["type"] == "Unconfined").then(unconfined),
        apparmor: (sc["appArmorProfile"]["type"] == "Unconfined").then(unconfined),
        ..Default::default()
    };
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: c["image"].as_str().unwrap_or_default().into(), ..Default::default() }),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        envs,
        mounts,
        log_path: format!("{name}.log"),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig { security_context: Some(security), ..Default::default() }),
        ..Default::default()
    })
}

/// The messages of a CRI container log (`<time> <stream> <tag> <message>` lines).
pub(super) fn cri_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// The issue-16 acceptance test of the deploy kit: the image `packaging/image/build.sh` builds
/// from this checkout's binaries, imported into containerd, runs the pod of the rendered
/// DaemonSet the way the kubelet would run it (host PID and network namespaces, its security
/// contexts, host mounts, env, the ConfigMap's files; the init container to completion first),
/// registers over the NRI socket it finds at the DaemonSet's path, and protects another pod:
/// drift in an enforce pod is stopped and reported as an event in the events file on the node
/// (not on the agent's stdout, which `kubectl logs` shows), an image binary runs. Stopping the agent's pod leaves enforcement pinned (the DaemonSet's promise),
/// which the trial then unloads.
///
/// Test-only changes to the ConfigMap's config.toml: a private pin dir and metrics port (the
/// machine may run its own agent). Not exercised: the Service, probes' periods, resources.
pub(super) fn daemonset_image_protects_another_pod() -> R {
    let hook = hook_binary()?;
    check_fresh(&hook)?;
    let objs = rendered_deploy_kit()?;
    let kind = |k: &str| objs.iter().find(|o| o["kind"] == k).ok_or(format!("the deploy kit has no {k}"));
    let ds = kind("DaemonSet")?;
    let cm = kind("ConfigMap")?;
    let spec = &ds["spec"]["template"]["spec"];
    let known = [
        "serviceAccountName",
        "automountServiceAccountToken",
        "hostPID",
        "hostNetwork",
        "dnsPolicy",
        "priorityClassName",
        "tolerations",
        "terminationGracePeriodSeconds",
        "initContainers",
        "containers",
        "volumes",
    ];
    if let Some(k) = spec.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !known.contains(&k.as_str())) {
        return Err(format!("pod spec field {k} is not translated by this trial").into());
    }
    let [agent_spec] = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err(format!("expected one container in the DaemonSet's pod: {}", spec["containers"]).into());
    };
    let image = agent_spec["image"].as_str().ok_or("the agent container has no image")?.to_string();

    // Declared first, dropped last: after containerd has removed the pods.
    let mut node = DaemonSetNode::new()?;
    let ctd = Containerd::start_line(LINE.with(Cell::get), None)?;
    eprintln!("containerd {} in {}", ctd.bins.version, ctd.dir.display());
    node.attach(&ctd)?;
    let fail = |e: String| -> Failed { format!("{e}\n{}", ctd.log_tail()).into() };

    // 1. The image, from the binaries this test was built with.
    let bins = node.dir.path().join("bins");
    std::fs::create_dir_all(&bins).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_driftguard"), bins.join("driftguard")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&hook, bins.join("driftguard-oci-hook")).map_err(|e| e.to_string())?;
    let tar = node.dir.path().join("image.oci.tar");
    let out = std::process::Command::new(containerd::repo_root().join("packaging/image/build.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out")
        .arg(&tar)
        .args(["--name", &image])
        .output()
        .map_err(|e| format!("packaging/image/build.sh: {e}"))?;
    if !out.status.success() {
        return Err(
            format!("packaging/image/build.sh: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)).into()
        );
    }
    ctd.import_image(&tar).map_err(fail)?;

    // 2. The ConfigMap's files.
    let port = free_port()?;
    // Named after the ConfigMap: [`cri_container`] checks the volumes name it.
    let cm_dir = node.dir.path().join(cm["metadata"]["name"].as_str().ok_or("ConfigMap without a name")?);
    std::fs::create_dir_all(&cm_dir).map_err(|e| e.to_string())?;
    for (file, body) in cm["data"].as_object().ok_or("ConfigMap without data")? {
        let mut body = body.as_str().unwrap_or_default().to_string();
        if file == "config.toml" {
            for (from, to) in [
                (
                    "pin_dir = \"/sys/fs/bpf/driftguard\"".to_string(),
                    format!("pin_dir = \"{}\"", node.pin_dir.display()),
                ),
                ("address = \"0.0.0.0:9963\"".to_string(), format!("address = \"127.0.0.1:{port}\"")),
            ] {
                if body.matches(&from).count() != 1 {
                    return Err(format!("the ConfigMap's config.toml has no single `{from}`:\n{body}").into());
                }
                body = body.replace(&from, &to);
            }
        }
        std::fs::write(cm_dir.join(file), body).map_err(|e| e.to_string())?;
    }

    // 3. The DaemonSet's pod: sandbox, init container to completion, agent.
    let node_ns = |on: bool| (if on { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod }) as i32;
    let ns = cri::NamespaceOption {
        network: node_ns(spec["hostNetwork"] == true),
        pid: node_ns(spec["hostPID"] == true),
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let logs = node.dir.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let meta = &ds["metadata"];
    let pod = ctd
        .run_pod_config(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("{}-node", meta["name"].as_str().unwrap_or_default()),
                uid: "ds-uid".into(),
                namespace: meta["namespace"].as_str().unwrap_or_default().into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .map_err(fail)?;
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        let name = init["name"].as_str().unwrap_or_default();
        let id = ctd.run_container_config(&pod, cri_container(init, spec, &node, &cm_dir, &ns)?).map_err(fail)?;
        let st = containerd::wait_for(Duration::from_secs(60), &format!("init container {name} to exit"), || {
            ctd.container_status(&id).ok().filter(|s| s.state == cri::ContainerState::ContainerExited as i32)
        })
        .map_err(fail)?;
        let out = cri_log(&logs.join(format!("{name}.log"))).join("\n");
        println!("init container {name} (exit {}):\n{out}", st.exit_code);
        if st.exit_code != 0 || out.contains("ERROR") {
            return Err(format!("init container {name} failed (exit {}):\n{out}", st.exit_code).into());
        }
    }
    let installed = node.host_path("/opt/driftguard").join("bin/driftguard-oci-hook");
    if !installed.is_file() {
        return Err(format!("node-setup did not install {}", installed.display()).into());
    }
    let agent_log = logs.join(format!("{}.log", agent_spec["name"].as_str().unwrap_or_default()));
    let agent_cfg = cri_container(agent_spec, spec, &node, &cm_dir, &ns)?;
    ctd.run_container_config(&pod, agent_cfg).map_err(fail)?;
    let agent_diag = || format!("--- agent log ---\n{}", containerd::tail(&cri_log(&agent_log).join("\n"), 40));
    // Barrier: ready (the readiness probe's /readyz: registered with containerd over NRI) and
    // synchronized with the runtime (its log, which reaches the CRI log file a moment later).
    containerd::wait_for(Duration::from_secs(60), "the agent's /readyz to answer 200 and its sync log line", || {
        (http_status(port, "/readyz") == Some(200)
            && cri_log(&agent_log).iter().any(|l| l.contains("synchronized with the runtime")))
        .then_some(())
    })
    .map_err(|e| fail(format!("{e}\n{}", agent_diag())))?;

    // 4. Another pod, opted in: drift stopped and reported, image binaries run.
    let check = || -> T {
        let (victim, id) = {
            let p = ctd.run_pod("victim", &[ENFORCE])?;
            let id = ctd.run_container(&p, "app", &[])?;
            (p, id)
        };
        expect_ok(&ctd.sh(&id, "/bin/hello.sh")?, HELLO, "an image binary in a pod the DaemonSet's agent protects")?;
        // `; exit $?`: the shell stays the parent (it would exec its last command in its place).
        let e = ctd.sh(&id, &format!("{DRIFT_RUNS}; exit $?"))?;
        stopped(enforcer::pinned_path(&node.pin_dir), &e, "drift in a pod the DaemonSet's agent protects")?;
        let events_file = node.host_path("/var/log/driftguard").join("events.jsonl");
        let ev = containerd::wait_for(Duration::from_secs(10), "the drift event in the node's events file", || {
            std::fs::read_to_string(&events_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|ev| ev["path"] == "/tmp/busybox-x" && ev["pod"] == "victim")
        })?;
        // `kubectl logs` shows the agent's log, not the events.
        if let Some(l) = cri_log(&agent_log).iter().find(|l| l.contains("\"event\":\"verdict\"")) {
            return Err(format!("an event on the agent's stdout: {l}"));
        }
        if ev["mode"] != "enforce" || ev["container"] != "app" || ev["namespace"] != victim.namespace.as_str() {
            return Err(format!("unexpected event: {ev}"));
        }
        // With only the kit's capabilities (no SYS_PTRACE) the event still names the shell that
        // ran the drift, and its executable: the kernel walked it at the check.
        if ev["parent"]["comm"] != "sh" || ev["parent"]["exe"] != "/bin/busybox" || ev["ppid"] != ev["parent"]["pid"] {
            return Err(format!("the parent of the drift, with the DaemonSet's capabilities: {ev}"));
        }
        println!("event: {ev}");
        ctd.remove_pod(&victim.id)?;
        // The agent's pod goes; its enforcement stays pinned for the next one.
        ctd.remove_pod(&pod.id)?;
        if enforcer::pinned_path(&node.pin_dir).is_none() {
            return Err(format!(
                "enforcement is not pinned in {} after the agent's pod stopped",
                node.pin_dir.display()
            ));
        }
        Ok(())
    };
    check().map_err(|e| fail(format!("{e}\n{}", agent_diag())))?;
    // Unload before the scratch node goes (DaemonSetNode's drop does it again on failure).
    enforcer::unload(&node.pin_dir).map_err(|e| format!("unloading {}: {e}", node.pin_dir.display()))?;
    let _ = std::fs::remove_dir_all(&node.pin_dir);
    if node.pin_dir.exists() {
        return Err(format!("{} still exists after unload", node.pin_dir.display()).into());
    }
    Ok(())
}
