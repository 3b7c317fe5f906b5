//! `check`'s runtime items: the NRI socket, containerd and its NRI and OCI hook wiring, runc
//! and podman. Pure judgements over what [`super::gather`] read.
use super::*;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SocketState {
    Socket,
    NotASocket,
    Missing,
}

pub(super) fn check_nri_socket(
    path: &Path,
    state: SocketState,
    containerd_installed: bool,
    nri_config: Status,
) -> Item {
    match state {
        SocketState::Socket => Item::ok("nri_socket", format!("{} is a socket", path.display())),
        SocketState::NotASocket => Item::fail(
            "nri_socket",
            format!("{} exists but is not a socket", path.display()),
            "point nri.socket in /etc/driftguard/config.toml at the runtime's NRI socket",
        ),
        SocketState::Missing => {
            let why = if !containerd_installed {
                "containerd is not installed (or not on PATH); CRI-O: NRI needs `[crio.nri] enable_nri = true`"
            } else if nri_config != Status::Ok {
                "containerd runs with NRI disabled (see containerd_nri)"
            } else {
                "containerd is not running, or uses another NRI socket_path"
            };
            Item::warn(
                "nri_socket",
                format!(
                    "{} is missing: {why}; without NRI, containers can only be covered by the OCI hook",
                    path.display()
                ),
                "enable NRI (see containerd_nri) and `systemctl restart containerd`",
            )
        }
    }
}

/// `containerd --version` → (major, minor). Accepts `v1.7.13`, `1.6.33`, `2.0.0-rc.1`.
pub(super) fn parse_containerd_version(text: &str) -> Option<(u32, u32)> {
    text.split_whitespace().find_map(|w| {
        let w = w.strip_prefix('v').unwrap_or(w);
        let mut parts = w.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()?;
        Some((major, minor))
    })
}

pub(super) fn check_containerd(bin: Option<&Path>, version_text: Option<&str>, version: Option<(u32, u32)>) -> Item {
    let Some(bin) = bin else {
        return Item::warn(
            "containerd",
            "containerd not found on PATH (fine for runc/podman with the OCI hook, or CRI-O)",
            "Kubernetes nodes: install containerd 1.7 or newer (NRI support); elsewhere on disk: \
             `driftguard check --containerd /path/to/containerd --containerd-config /path/to/config.toml`",
        );
    };
    let shown = version_text.map(|t| first_line(t).trim().to_string()).unwrap_or_else(|| "version unknown".into());
    match version {
        Some(v) if v < (1, 7) => Item::fail(
            "containerd",
            format!("{}: {shown}: NRI needs containerd 1.7 or newer", bin.display()),
            "upgrade containerd to 1.7+ (or 2.x, where NRI is on by default)",
        ),
        Some(_) => Item::ok("containerd", format!("{}: {shown}", bin.display())),
        None => Item::warn(
            "containerd",
            format!("{}: cannot tell the version ({shown})", bin.display()),
            "check `containerd --version`: NRI needs 1.7 or newer",
        ),
    }
}

/// The TOML section that enables NRI (same section name for config versions 2 and 3).
pub(super) fn nri_toml(socket: &Path) -> String {
    format!("[plugins.\"{NRI_SECTION}\"]\n  disable = false\n  socket_path = \"{}\"", socket.display())
}

pub(super) fn check_containerd_nri(
    config: Option<&str>,
    config_path: &Path,
    containerd_installed: bool,
    containerd_version: Option<(u32, u32)>,
    socket: &Path,
) -> Item {
    let restart = "systemctl restart containerd";
    let Some(text) = config else {
        if !containerd_installed {
            return Item::warn(
                "containerd_nri",
                format!("{} not found and containerd not installed", config_path.display()),
                format!(
                    "after installing containerd 1.7, add to {}:\nversion = 2\n{}",
                    config_path.display(),
                    nri_toml(socket)
                ),
            );
        }
        return match containerd_version {
            Some((major, _)) if major >= 2 => Item::ok(
                "containerd_nri",
                format!("no {}: containerd {major}.x enables NRI by default", config_path.display()),
            ),
            _ => Item::fail(
                "containerd_nri",
                format!("no {}: containerd 1.7 keeps NRI disabled by default", config_path.display()),
                format!("create {} with:\nversion = 2\n{}\nthen `{restart}`", config_path.display(), nri_toml(socket)),
            ),
        };
    };
    let doc: toml::Table = match text.parse() {
        Ok(d) => d,
        Err(e) => {
            return Item::fail(
                "containerd_nri",
                format!("{} is not valid TOML: {}", config_path.display(), first_line(&e.to_string())),
                format!("fix the file (`containerd config dump` shows what containerd uses), then `{restart}`"),
            )
        }
    };
    let cfg_version = doc.get("version").and_then(|v| v.as_integer()).unwrap_or(1);
    let section = doc.get("plugins").and_then(|p| p.get(NRI_SECTION)).and_then(|s| s.as_table());
    let disable = section.and_then(|s| s.get("disable")).and_then(|v| v.as_bool());
    let no_connections = section.and_then(|s| s.get("disable_connections")).and_then(|v| v.as_bool()) == Some(true);
    let socket_path = section.and_then(|s| s.get("socket_path")).and_then(|v| v.as_str());
    let imports = doc.get("imports").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty());
    let imports_note = if imports { " (the config imports drop-ins; NRI settings there were not read)" } else { "" };

    // containerd 2.x enables NRI unless disabled; 1.7 disables it unless enabled.
    // The binary's version decides the default; the config version is the hint when it is unknown.
    let default_enabled = match containerd_version {
        Some((major, _)) => major >= 2,
        None => cfg_version >= 3,
    };
    let enabled = disable.map(|d| !d).unwrap_or(default_enabled);
    let where_ = format!("{} (config version {cfg_version})", config_path.display());

    if cfg_version < 2 {
        return Item::fail(
            "containerd_nri",
            format!("{where_}: version 1 config format, NRI cannot be configured in it{imports_note}"),
            format!(
                "convert it: `containerd config migrate > new.toml` (2.x) or start from `containerd config default`, \
                 then make sure it contains:\nversion = 2\n{}\nand `{restart}`",
                nri_toml(socket)
            ),
        );
    }
    if !enabled {
        let why = match disable {
            Some(true) => format!("NRI is disabled (`disable = true` in [plugins.\"{NRI_SECTION}\"])"),
            _ if cfg_version == 2 => {
                "NRI is disabled: containerd 1.7 (config version 2) keeps it off unless `disable = false`".to_string()
            }
            _ => "NRI is disabled by default for this containerd version".to_string(),
        };
        let fix = match section {
            Some(_) => format!(
                "in the existing [plugins.\"{NRI_SECTION}\"] section of {} set:\n  disable = false\nthen `{restart}`",
                config_path.display()
            ),
            None => format!("add to {}:\n{}\nthen `{restart}`", config_path.display(), nri_toml(socket)),
        };
        return Item::fail("containerd_nri", format!("{where_}: {why}{imports_note}"), fix);
    }
    if no_connections {
        return Item::fail(
            "containerd_nri",
            format!("{where_}: NRI is on but `disable_connections = true` refuses external plugins like driftguard"),
            format!("set `disable_connections = false` in [plugins.\"{NRI_SECTION}\"], then `{restart}`"),
        );
    }
    if let Some(sp) = socket_path {
        if Path::new(sp) != socket {
            return Item::warn(
                "containerd_nri",
                format!("{where_}: NRI is on, socket_path is {sp} but driftguard connects to {}", socket.display()),
                format!("set in /etc/driftguard/config.toml:\n[nri]\nsocket = \"{sp}\""),
            );
        }
    }
    let how = if disable == Some(false) { "`disable = false`" } else { "on by default in containerd 2.x" };
    Item::ok("containerd_nri", format!("{where_}: NRI enabled ({how}){imports_note}"))
}

/// Where the DaemonSet's init container (deploy/helm/driftguard/files/node-setup.sh) installs
/// the base runtime spec on a node.
pub(super) const DAEMONSET_BASE_SPEC: &str = "/opt/driftguard/containerd/base-runtime-spec.json";

/// The base runtime spec to name in a fix: the DaemonSet's on a node it set up (the agent's pod
/// mounts the node's /opt/driftguard), else the package's.
pub(super) fn base_spec_path() -> &'static str {
    if Path::new(DAEMONSET_BASE_SPEC).is_file() {
        DAEMONSET_BASE_SPEC
    } else {
        SHIPPED_BASE_SPEC
    }
}

/// The runtime keys that make containerd run `driftguard-oci-hook` for every container of the
/// runtime, fail closed (packaging/containerd/oci-hook-1.7.toml).
pub(super) fn hook_toml(cri_plugin: &str, runtime: &str) -> String {
    let spec = base_spec_path();
    format!(
        "[plugins.\"{cri_plugin}\".containerd.runtimes.{runtime}]\n  base_runtime_spec = \"{spec}\"\n  \
         pod_annotations = [\"{ANNOTATION_PATTERN}\"]\n  container_annotations = [\"{ANNOTATION_PATTERN}\"]"
    )
}

/// containerd's annotation passthrough patterns (Go's `path.Match`, where `*` does not cross
/// `/`): do they pass both pod-wide and per-container driftguard keys?
pub(super) fn passes_driftguard_keys(patterns: Option<&toml::Value>) -> bool {
    let Some(list) = patterns.and_then(|v| v.as_array()) else { return false };
    let matches = |pat: &str, key: &str| match pat.strip_suffix('*') {
        Some(prefix) => key.strip_prefix(prefix).is_some_and(|rest| !rest.contains('/')),
        None => pat == key,
    };
    ["driftguard.dev/mode", "driftguard.dev/mode.app", "driftguard.dev/allow"]
        .iter()
        .all(|k| list.iter().filter_map(|p| p.as_str()).any(|p| matches(p, k)))
}

/// Does the OCI spec text run `driftguard-oci-hook <stage-arg>` at `stage`?
pub(super) fn spec_runs_hook(spec: &serde_json::Value, stage: &str, arg: &str) -> bool {
    spec["hooks"][stage].as_array().is_some_and(|hooks| {
        hooks.iter().any(|h| {
            h["path"].as_str().is_some_and(|p| p.ends_with("/driftguard-oci-hook"))
                && h["args"].as_array().is_some_and(|a| a.iter().any(|x| x == arg))
        })
    })
}

/// Is `driftguard-oci-hook` in the default runtime's base runtime spec, with the driftguard
/// annotations passed through (fail-closed start)? `read` reads the spec file.
pub(super) fn check_containerd_hook(
    config: Option<&str>,
    config_path: &Path,
    containerd_installed: bool,
    read: impl Fn(&Path) -> Result<String, String>,
) -> Item {
    const NAME: &str = "containerd_hook";
    let restart = "systemctl restart containerd";
    let consequence = "containerd starts opted-in containers while the agent is down or restarting without \
                       their policy (fail open; docs/oci-hooks.md, \"containerd\")";
    let Some(text) = config else {
        if !containerd_installed {
            return Item::ok(NAME, "containerd not installed (CRI-O and podman run the hook from hooks.d)");
        }
        return Item::warn(
            NAME,
            format!("no {}: {consequence}", config_path.display()),
            format!(
                "create {} with `version = 2` (containerd 1.7) and:\n{}\nthen `{restart}`",
                config_path.display(),
                hook_toml("io.containerd.grpc.v1.cri", "runc")
            ),
        );
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Item::warn(
            NAME,
            format!("{} is not valid TOML (see containerd_nri)", config_path.display()),
            "fix the file",
        );
    };
    let cfg_version = doc.get("version").and_then(|v| v.as_integer()).unwrap_or(1);
    let cri_plugin = if cfg_version >= 3 { "io.containerd.cri.v1.runtime" } else { "io.containerd.grpc.v1.cri" };
    let ctd = doc.get("plugins").and_then(|p| p.get(cri_plugin)).and_then(|c| c.get("containerd"));
    let runtime = ctd.and_then(|c| c.get("default_runtime_name")).and_then(|v| v.as_str()).unwrap_or("runc");
    let section = ctd.and_then(|c| c.get("runtimes")).and_then(|r| r.get(runtime)).and_then(|s| s.as_table());
    let where_ = format!("{} [plugins.\"{cri_plugin}\".containerd.runtimes.{runtime}]", config_path.display());
    let fix = |what: &str| {
        format!(
            "{what} in {}:\n{}\nthen `{restart}` (docs/oci-hooks.md, \"containerd\")",
            config_path.display(),
            hook_toml(cri_plugin, runtime)
        )
    };
    let Some(section) = section else {
        return Item::warn(NAME, format!("{where_} is not in the file: {consequence}"), fix("add"));
    };
    let mut missing = Vec::new();
    match section.get("base_runtime_spec").and_then(|v| v.as_str()) {
        None => missing.push("no base_runtime_spec".to_string()),
        Some(p) => match read(Path::new(p))
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
        {
            Err(e) => missing.push(format!("base_runtime_spec {p} unreadable: {e}")),
            Ok(spec) => {
                for (stage, arg) in [("createRuntime", "create-runtime"), ("poststop", "poststop")] {
                    if !spec_runs_hook(&spec, stage, arg) {
                        missing.push(format!("base_runtime_spec {p} has no {stage} hook `driftguard-oci-hook {arg}`"));
                    }
                }
            }
        },
    }
    for key in ["pod_annotations", "container_annotations"] {
        if !passes_driftguard_keys(section.get(key)) {
            missing.push(format!("{key} does not pass \"{ANNOTATION_PATTERN}\""));
        }
    }
    if missing.is_empty() {
        return Item::ok(
            NAME,
            format!(
                "{where_}: driftguard-oci-hook in the base runtime spec, driftguard.dev/* passed through (fail closed)"
            ),
        );
    }
    Item::warn(NAME, format!("{where_}: {}: {consequence}", missing.join("; ")), fix("set"))
}

pub(super) fn check_runtime_tool(name: &'static str, bin: Option<&Path>, version_text: Option<&str>) -> Item {
    let role = match name {
        "runc" => "OCI runtime: `driftguard demo` and the OCI hook path use it",
        _ => "runs containers without Kubernetes; covered through the OCI hook (driftguard-oci-hook)",
    };
    match bin {
        Some(b) => Item::ok(
            name,
            format!(
                "{} ({}); {role}",
                b.display(),
                version_text.map(|t| first_line(t).trim().to_string()).unwrap_or_else(|| "version unknown".into())
            ),
        ),
        None => Item::warn(
            name,
            format!("{name} not found; {role}"),
            format!("apt-get install {name}   (only needed for the demo / OCI hook path)"),
        ),
    }
}
