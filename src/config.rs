//! The agent configuration, `/etc/driftguard/config.toml`.
//!
//! Every key is optional and has a default ([`Config::default`]); unknown keys are
//! errors. Values are validated while parsing, so errors carry toml's line and column
//! and name the key. See `docs/configuration.md` and `packaging/config.toml`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::annotations::{Defaults, FailurePolicy};
use crate::policy::Mode;
use crate::rules::{Exclusions, NodePolicy, Rule};

/// Where the config is read from when no path is given.
pub const DEFAULT_PATH: &str = "/etc/driftguard/config.toml";

/// Environment variable naming the node when `[events] node_name` is not set.
pub const NODE_NAME_ENV: &str = "DRIFTGUARD_NODE_NAME";

/// Invalid or unreadable configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given config file does not exist.
    #[error("config file {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The config file cannot be read.
    #[error("config file {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, has an unknown key, or a bad value (toml's message has
    /// the line, column and the offending text).
    #[error("{origin}: {detail}")]
    Parse {
        /// `config file <path>` or `config`.
        origin: String,
        /// toml's error.
        detail: toml::de::Error,
    },
    /// A rule that can never apply, or a duplicate rule name (the text points at the rule).
    #[error("{origin}: {detail}")]
    Rules {
        /// `config file <path>` or `config`.
        origin: String,
        /// Where and what, in toml's layout.
        detail: String,
    },
    /// A value that is invalid (from [`Config::validate`], for configs built in code).
    #[error("invalid config value {key} = {value}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `nri.plugin_index`.
        key: &'static str,
        /// The value, as TOML-ish text.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

/// The agent configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Mode of containers whose pod has no `driftguard.dev/mode` annotation.
    #[serde(deserialize_with = "de_default_mode")]
    pub default_mode: Mode,
    /// What to do when a container's policy cannot be installed.
    #[serde(deserialize_with = "de_failure_policy")]
    pub failure_policy: FailurePolicy,
    /// NRI plugin connection.
    pub nri: NriConfig,
    /// BPF programs and pins.
    pub bpf: BpfConfig,
    /// Verdict event output.
    pub events: EventsConfig,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Agent logging.
    pub log: LogConfig,
    /// cgroup v2 hierarchy.
    pub cgroup: CgroupConfig,
    /// The OCI hook's state.
    pub oci_hook: OciHookConfig,
    /// Namespaces no rule and no `default_mode` reaches.
    #[serde(deserialize_with = "de_exclusions")]
    pub exclusions: Exclusions,
    /// Node policy rules (`[[rules]]`), first match wins (docs/configuration.md#policy-rules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// `[nri]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// The NRI socket of containerd / CRI-O.
    #[serde(deserialize_with = "de_nri_socket")]
    pub socket: PathBuf,
    /// Name the plugin registers with.
    #[serde(deserialize_with = "de_plugin_name")]
    pub plugin_name: String,
    /// Two-digit plugin index (orders plugins; lower runs first).
    #[serde(deserialize_with = "de_plugin_index")]
    pub plugin_index: String,
    /// Upper bound of the delay between reconnect attempts, in milliseconds.
    #[serde(deserialize_with = "de_backoff")]
    pub reconnect_max_backoff_ms: u64,
}

/// `[bpf]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpfConfig {
    /// bpffs directory where programs and maps are pinned.
    #[serde(deserialize_with = "de_pin_dir")]
    pub pin_dir: PathBuf,
    /// Use the tracepoint + SIGKILL fallback even when BPF LSM is available (testing).
    pub force_fallback: bool,
    /// On the fallback (no BPF LSM), also check mappings through syscall tracepoints: W^X and
    /// the file rules for mmap (ld.so, `LD_PRELOAD`, dlopen). Off by default: attaching any
    /// syscall tracepoint slows every syscall on the node (docs/configuration.md).
    pub fallback_mappings: bool,
}

/// `[events]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Write events as JSON lines to stdout.
    pub stdout: bool,
    /// Also append events as JSON lines to this file.
    #[serde(deserialize_with = "de_events_file", skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Node name put in events; `None` means the hostname.
    #[serde(deserialize_with = "de_node_name", skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Rotate `file` before it would grow beyond this many bytes; 0: never (logrotate's job).
    pub file_max_bytes: u64,
    /// Rotated files kept (`file.1` … `file.N`), the oldest deleted.
    #[serde(deserialize_with = "de_file_keep")]
    pub file_keep: u32,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address (`ip:port`); `None` (`""` in TOML) disables the endpoint.
    #[serde(deserialize_with = "de_metrics_address", serialize_with = "ser_metrics_address")]
    pub address: Option<SocketAddr>,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    #[serde(deserialize_with = "de_log_format")]
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, or directives like `info,driftguard=debug`.
    #[serde(deserialize_with = "de_log_level")]
    pub level: String,
}

/// `[cgroup]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// The cgroup2 mount; `None` means detect from `/proc/self/mountinfo`.
    #[serde(deserialize_with = "de_cgroup_root", skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
}

/// `[oci_hook]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OciHookConfig {
    /// The hook's records and the refusals it leaves for the agent to report (the hook's
    /// `--state-dir` wins for the hook).
    #[serde(deserialize_with = "de_hook_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for OciHookConfig {
    fn default() -> Self {
        OciHookConfig { state_dir: PathBuf::from(crate::node_state::DEFAULT_HOOK_STATE_DIR) }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Lower-case name as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_mode: Mode::Off,
            failure_policy: FailurePolicy::Fail,
            nri: NriConfig::default(),
            bpf: BpfConfig::default(),
            events: EventsConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            cgroup: CgroupConfig::default(),
            oci_hook: OciHookConfig::default(),
            exclusions: Exclusions::default(),
            rules: Vec::new(),
        }
    }
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            socket: PathBuf::from("/var/run/nri/nri.sock"),
            plugin_name: "driftguard".to_string(),
            plugin_index: "10".to_string(),
            reconnect_max_backoff_ms: 5000,
        }
    }
}

impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            pin_dir: PathBuf::from(crate::node_state::DEFAULT_PIN_DIR),
            force_fallback: false,
            fallback_mappings: false,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { stdout: true, file: None, node_name: None, file_max_bytes: 0, file_keep: 5 }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { address: Some(SocketAddr::from(([127, 0, 0, 1], 9963))) }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_string() }
    }
}

impl std::str::FromStr for Config {
    type Err = ConfigError;
    /// Parse and validate TOML text (errors say `config: ...`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Config::parse(s, "config".to_string())
    }
}

impl Config {
    /// The cgroup v2 hierarchy: `[cgroup] root` when set, else found in mountinfo. The one
    /// place the agent, the OCI hook, `status` and `demo` turn the configuration into it.
    pub fn cgroup_root(&self) -> Result<crate::cgroup::CgroupRoot, crate::cgroup::CgroupError> {
        match &self.cgroup.root {
            Some(p) => Ok(crate::cgroup::CgroupRoot::at(p.clone())),
            None => crate::cgroup::CgroupRoot::detect(),
        }
    }

    /// Load the config file at `path`, or [`DEFAULT_PATH`] when `None`.
    ///
    /// A missing file yields [`Config::default`] only for the default path (whether
    /// given as `None` or spelled out); a missing explicitly given file is
    /// [`ConfigError::NotFound`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default = Path::new(DEFAULT_PATH);
        let p = path.unwrap_or(default);
        match std::fs::read_to_string(p) {
            Ok(s) => Config::parse(&s, format!("config file {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if p == default {
                    Ok(Config::default())
                } else {
                    Err(ConfigError::NotFound { path: p.to_path_buf() })
                }
            }
            Err(source) => Err(ConfigError::Read { path: p.to_path_buf(), source }),
        }
    }

    fn parse(s: &str, origin: String) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(s).map_err(|detail| ConfigError::Parse { origin: origin.clone(), detail })?;
        if let Err(e) = c.node_policy().check() {
            return Err(ConfigError::Rules { origin, detail: point_at_rule(s, e.index, &e.to_string()) });
        }
        Ok(c)
    }

    /// Exclusions, rules and defaults: what decides each container's base policy.
    pub fn node_policy(&self) -> NodePolicy {
        NodePolicy {
            exclusions: self.exclusions.clone(),
            rules: self.rules.clone(),
            defaults: self.annotation_defaults(),
        }
    }

    /// Check every value (parsing does this already; for configs built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check<T: fmt::Debug>(key: &'static str, v: T, r: Result<(), String>) -> Result<(), ConfigError> {
            r.map_err(|problem| ConfigError::Invalid { key, value: format!("{v:?}"), problem })
        }
        check("nri.socket", &self.nri.socket, check_abs(&self.nri.socket))?;
        check("nri.plugin_name", &self.nri.plugin_name, check_plugin_name(&self.nri.plugin_name))?;
        check("nri.plugin_index", &self.nri.plugin_index, check_plugin_index(&self.nri.plugin_index))?;
        check(
            "nri.reconnect_max_backoff_ms",
            self.nri.reconnect_max_backoff_ms,
            check_backoff(self.nri.reconnect_max_backoff_ms),
        )?;
        check("bpf.pin_dir", &self.bpf.pin_dir, check_abs(&self.bpf.pin_dir))?;
        if let Some(f) = &self.events.file {
            check("events.file", f, check_abs(f))?;
        }
        check("events.file_keep", self.events.file_keep, check_file_keep(self.events.file_keep))?;
        if let Some(n) = &self.events.node_name {
            check("events.node_name", n, check_node_name(n))?;
        }
        check("log.level", &self.log.level, check_log_level(&self.log.level))?;
        if let Some(r) = &self.cgroup.root {
            check("cgroup.root", r, check_abs(r))?;
        }
        check("oci_hook.state_dir", &self.oci_hook.state_dir, check_abs(&self.oci_hook.state_dir))?;
        check("exclusions.own_namespace", &self.exclusions.own_namespace, self.exclusions.validate())?;
        if let Err(e) = self.node_policy().check() {
            return Err(ConfigError::Invalid { key: "rules", value: format!("{:?}", e.rule), problem: e.to_string() });
        }
        Ok(())
    }

    /// The node defaults annotations override.
    pub fn annotation_defaults(&self) -> Defaults {
        Defaults { mode: self.default_mode, failure_policy: self.failure_policy }
    }

    /// `events.node_name`, or the hostname when unset (`"unknown"` if that fails).
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.events.node_name {
            return n.clone();
        }
        // A DaemonSet passes the node name through the downward API (spec.nodeName).
        if let Ok(n) = std::env::var(NODE_NAME_ENV) {
            if !n.trim().is_empty() {
                return n.trim().to_string();
            }
        }
        hostname().unwrap_or_else(|| "unknown".to_string())
    }
}

/// `message` under toml's layout, pointing at the `index`th `[[rules]]` table of `text`.
fn point_at_rule(text: &str, index: usize, message: &str) -> String {
    #[derive(Deserialize)]
    struct Spans {
        #[serde(default)]
        rules: Vec<toml::Spanned<toml::Value>>,
    }
    let span = toml::from_str::<Spans>(text).ok().and_then(|s| s.rules.get(index).map(|r| r.span()));
    let Some(span) = span else { return message.to_string() };
    // An array-of-tables element's span starts at its `[[rules]]` header.
    let start = span.start;
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let col = start - line_start + 1;
    let width = line_no.to_string().len();
    let pad = " ".repeat(width);
    let carets = "^".repeat(line.len().saturating_sub(col - 1).max(1));
    format!(
        "TOML parse error at line {line_no}, column {col}\n{pad} |\n{line_no} | {line}\n{pad} | {}{carets}\n{message}\n",
        " ".repeat(col - 1)
    )
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success
    // when the name fits (we also look for the NUL ourselves).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

// ---- value checks (shared by the deserializers and Config::validate) ----

fn check_abs(p: &Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err("must be an absolute path".into())
    }
}

/// The NRI library's rule, the one the runtime applies at registration.
fn check_plugin_name(s: &str) -> Result<(), String> {
    nri_plugin::validate_name(s).map_err(|_| nri_plugin::NAME_RULE.to_string())
}

fn check_plugin_index(s: &str) -> Result<(), String> {
    nri_plugin::validate_index(s).map_err(|_| nri_plugin::INDEX_RULE.to_string())
}

fn check_backoff(ms: u64) -> Result<(), String> {
    if ms == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(())
    }
}

fn check_node_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err("must not be empty (leave the key out to use the hostname)".into())
    } else {
        Ok(())
    }
}

fn check_log_level(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| ())
        .map_err(|e| format!("not a level (trace, debug, info, warn, error) or tracing filter directive: {e}"))
}

// ---- deserializers: parse, check, and name the key in the error ----

fn invalid<E: serde::de::Error>(key: &str, value: impl fmt::Debug, problem: impl fmt::Display) -> E {
    E::custom(format!("invalid {key} {value:?}: {problem}"))
}

fn de_default_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| invalid("default_mode", &s, "expected one of off, monitor, enforce"))
}

fn de_failure_policy<'de, D: Deserializer<'de>>(d: D) -> Result<FailurePolicy, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| invalid("failure_policy", &s, "expected one of fail, ignore"))
}

fn de_exclusions<'de, D: Deserializer<'de>>(d: D) -> Result<Exclusions, D::Error> {
    let e = Exclusions::deserialize(d)?;
    e.validate().map_err(|p| D::Error::custom(format!("invalid exclusions.{p}")))?;
    Ok(e)
}

fn de_log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(invalid("log.format", &s, "expected one of text, json")),
    }
}

fn abs_path<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    check_abs(&p).map_err(|e| invalid(key, &p, e))?;
    Ok(p)
}

fn de_nri_socket<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    abs_path(d, "nri.socket")
}

fn de_hook_state_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    abs_path(d, "oci_hook.state_dir")
}

fn de_pin_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    abs_path(d, "bpf.pin_dir")
}

fn de_events_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    abs_path(d, "events.file").map(Some)
}

fn de_cgroup_root<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    abs_path(d, "cgroup.root").map(Some)
}

fn de_plugin_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_plugin_name(&s).map_err(|e| invalid("nri.plugin_name", &s, e))?;
    Ok(s)
}

/// A two-digit string, or an integer 0..=99 (written as two digits).
fn de_plugin_index<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Index {
        Str(String),
        Int(i64),
    }
    let idx = Index::deserialize(d)
        .map_err(|_| D::Error::custom("invalid nri.plugin_index: expected a two-digit string like \"10\""))?;
    let s = match idx {
        Index::Str(s) => s,
        Index::Int(n) if (0..=99).contains(&n) => format!("{n:02}"),
        Index::Int(n) => return Err(invalid("nri.plugin_index", n, nri_plugin::INDEX_RULE)),
    };
    check_plugin_index(&s).map_err(|e| invalid("nri.plugin_index", &s, e))?;
    Ok(s)
}

fn de_backoff<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    check_backoff(n).map_err(|e| invalid("nri.reconnect_max_backoff_ms", n, e))?;
    Ok(n)
}

fn de_file_keep<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    check_file_keep(n).map_err(|e| invalid("events.file_keep", n, e))?;
    Ok(n)
}

fn check_file_keep(n: u32) -> Result<(), String> {
    if n == 0 {
        Err("must be at least 1 (file_max_bytes = 0 turns rotation off)".into())
    } else {
        Ok(())
    }
}

fn de_node_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_node_name(&s).map_err(|e| invalid("events.node_name", &s, e))?;
    Ok(Some(s))
}

fn de_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_log_level(&s).map_err(|e| invalid("log.level", &s, e))?;
    Ok(s)
}

fn de_metrics_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<SocketAddr>().map(Some).map_err(|_| {
        invalid(
            "metrics.address",
            &s,
            "expected ip:port such as \"127.0.0.1:9963\" or \"[::1]:9963\", or \"\" to disable",
        )
    })
}

fn ser_metrics_address<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn err(s: &str) -> String {
        Config::from_str(s).unwrap_err().to_string()
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(Config::from_str("").unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.default_mode, Mode::Off);
        assert_eq!(d.failure_policy, FailurePolicy::Fail);
        assert_eq!(d.nri.plugin_index, "10");
        assert_eq!(d.metrics.address, Some("127.0.0.1:9963".parse().unwrap()));
        assert!(d.validate().is_ok());
        assert_eq!(d.annotation_defaults(), Defaults::default());
    }

    #[test]
    fn packaged_config_is_default() {
        let text = include_str!("../packaging/config.toml");
        assert_eq!(Config::from_str(text).unwrap(), Config::default());
        // Uncommenting every `#key = value` / `#[section]` line must still give the
        // defaults: the packaged file documents the real default values.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, text);
        assert_eq!(Config::from_str(&uncommented).unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let c = Config::from_str(
            r#"
default_mode = "monitor"
failure_policy = "ignore"
[nri]
socket = "/run/nri/nri.sock"
plugin_name = "dg"
plugin_index = "05"
reconnect_max_backoff_ms = 1000
[bpf]
pin_dir = "/sys/fs/bpf/dg"
force_fallback = true
fallback_mappings = true
[events]
stdout = false
file = "/var/log/driftguard/events.jsonl"
node_name = "node-1"
[metrics]
address = "[::]:9000"
[log]
format = "json"
level = "info,driftguard=debug"
[cgroup]
root = "/sys/fs/cgroup/unified"
"#,
        )
        .unwrap();
        assert_eq!(c.default_mode, Mode::Monitor);
        assert_eq!(c.failure_policy, FailurePolicy::Ignore);
        assert_eq!(c.nri.socket, PathBuf::from("/run/nri/nri.sock"));
        assert_eq!(c.nri.plugin_name, "dg");
        assert_eq!(c.nri.plugin_index, "05");
        assert_eq!(c.nri.reconnect_max_backoff_ms, 1000);
        assert_eq!(
            c.bpf,
            BpfConfig { pin_dir: "/sys/fs/bpf/dg".into(), force_fallback: true, fallback_mappings: true }
        );
        assert!(!c.events.stdout);
        assert_eq!(c.events.file.as_deref(), Some(Path::new("/var/log/driftguard/events.jsonl")));
        assert_eq!(c.node_name(), "node-1");
        assert_eq!(c.metrics.address, Some("[::]:9000".parse().unwrap()));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info,driftguard=debug");
        assert_eq!(c.cgroup.root.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert!(c.validate().is_ok());
        // serializes back to the same config
        let again = Config::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let d = Config::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        assert_eq!(d, Config::default());
    }

    #[test]
    fn metrics_disabled_and_int_index() {
        let c = Config::from_str("[metrics]\naddress = \"\"\n[nri]\nplugin_index = 7\n").unwrap();
        assert_eq!(c.metrics.address, None);
        assert_eq!(c.nri.plugin_index, "07");
        assert!(toml::to_string(&c).unwrap().contains("address = \"\""));
    }

    #[test]
    fn unknown_keys_rejected() {
        let e = err("default_mdoe = \"off\"\n");
        assert!(e.starts_with("config: TOML parse error at line 1, column 1"), "{e}");
        assert!(e.contains("unknown field `default_mdoe`"), "{e}");
        let e = err("[nri]\nsockett = \"/x\"\n");
        assert!(e.contains("line 2") && e.contains("unknown field `sockett`"), "{e}");
        assert!(err("[nope]\n").contains("unknown field `nope`"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "default_mode = \"enforcing\"",
                "invalid default_mode \"enforcing\": expected one of off, monitor, enforce",
            ),
            ("failure_policy = \"Fail\"", "invalid failure_policy \"Fail\": expected one of fail, ignore"),
            ("[nri]\nsocket = \"nri.sock\"", "invalid nri.socket \"nri.sock\": must be an absolute path"),
            ("[nri]\nplugin_name = \"\"", "invalid nri.plugin_name \"\": must be non-empty"),
            (
                "[nri]\nplugin_name = \"a/b\"",
                "invalid nri.plugin_name \"a/b\": must be non-empty and contain only ASCII letters, digits, '_', '.', '+' and '-'",
            ),
            ("[nri]\nplugin_index = \"1\"", "invalid nri.plugin_index \"1\": must be exactly two digits, \"00\" to \"99\""),
            ("[nri]\nplugin_index = \"1a\"", "invalid nri.plugin_index \"1a\": must be exactly two digits"),
            ("[nri]\nplugin_index = 100", "invalid nri.plugin_index 100: must be exactly two digits"),
            ("[nri]\nplugin_index = true", "invalid nri.plugin_index: expected a two-digit string like \"10\""),
            ("[nri]\nreconnect_max_backoff_ms = 0", "invalid nri.reconnect_max_backoff_ms 0: must be at least 1"),
            ("[bpf]\npin_dir = \"bpf\"", "invalid bpf.pin_dir \"bpf\": must be an absolute path"),
            ("[events]\nfile = \"ev.json\"", "invalid events.file \"ev.json\": must be an absolute path"),
            ("[events]\nnode_name = \" \"", "invalid events.node_name \" \": must not be empty"),
            ("[events]\nfile_keep = 0", "invalid events.file_keep 0: must be at least 1"),
            ("[metrics]\naddress = \"localhost\"", "invalid metrics.address \"localhost\": expected ip:port"),
            ("[log]\nformat = \"yaml\"", "invalid log.format \"yaml\": expected one of text, json"),
            ("[log]\nlevel = \"\"", "invalid log.level \"\": must not be empty"),
            ("[log]\nlevel = \"info,[\"", "invalid log.level \"info,[\": not a level"),
            ("[cgroup]\nroot = \"sys/fs/cgroup\"", "invalid cgroup.root \"sys/fs/cgroup\": must be an absolute path"),
            ("[bpf]\nforce_fallback = \"yes\"", "invalid type: string \"yes\", expected a boolean"),
        ];
        for (input, want) in cases {
            let e = err(input);
            assert!(e.starts_with("config: TOML parse error at line"), "{input}: {e}");
            assert!(e.contains(want), "{input}:\n{e}\nwant: {want}");
        }
    }

    #[test]
    fn validate_programmatic() {
        let mut c = Config::default();
        c.nri.plugin_index = "100".into();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config value nri.plugin_index = \"100\": must be exactly two digits, \"00\" to \"99\""
        );
        let mut c = Config::default();
        c.log.level = "".into();
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "log.level", .. })));
        let mut c = Config::default();
        c.events.file = Some("rel".into());
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "events.file", .. })));
        let mut c = Config::default();
        c.nri.reconnect_max_backoff_ms = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "nri.reconnect_max_backoff_ms", .. })));
    }

    #[test]
    fn load_paths() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.toml");
        std::fs::write(&p, "default_mode = \"monitor\"\n").unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().default_mode, Mode::Monitor);

        std::fs::write(&p, "[log]\nformat = \"xml\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("config file {}: TOML parse error at line 2, column 10", p.display())), "{e}");
        assert!(e.contains("invalid log.format \"xml\""), "{e}");

        let missing = t.path().join("missing.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }));
        assert_eq!(e.to_string(), format!("config file {} does not exist", missing.display()));

        let e = Config::load(Some(t.path())).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("config file {}: cannot read: ", t.path().display())));

        if !Path::new(DEFAULT_PATH).exists() {
            assert_eq!(Config::load(None).unwrap(), Config::default());
            assert_eq!(Config::load(Some(Path::new(DEFAULT_PATH))).unwrap(), Config::default());
        }
    }

    #[test]
    fn node_name_falls_back_to_hostname() {
        let n = Config::default().node_name();
        assert!(!n.is_empty());
    }

    #[test]
    fn log_format_strings() {
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(LogFormat::Text.as_str(), "text");
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn rules_and_exclusions_parse() {
        let c = Config::from_str(
            r#"
default_mode = "off"
[exclusions]
kube_system = false
own_namespace = "security"

[[rules]]
name = "payments"
namespaces = ["payments", "payments-*"]
mode = "enforce"
[rules.defaults]
exec-memory = false

[[rules]]
name = "front"
selector = "tier in (front), !canary"
mode = "monitor"
"#,
        )
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].name, "payments");
        assert!(!c.exclusions.kube_system);
        assert_eq!(c.exclusions.own_namespace, "security");
        assert!(c.validate().is_ok());
        let again = Config::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let d = Config::default();
        assert!(d.exclusions.kube_system && d.exclusions.own_namespace == "driftguard-system");
    }

    #[test]
    fn rule_errors_point_at_the_rule() {
        let e = Config::from_str("[[rules]]\nname = \"p\"\nmode = \"enforcing\"\n").unwrap_err().to_string();
        assert!(e.starts_with("config: TOML parse error at line"), "{e}");
        assert!(e.contains("rule \"p\": invalid mode \"enforcing\""), "{e}");
        let e = Config::from_str("[[rules]]\nname = \"p\"\nmode = \"enforce\"\nnamespace = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `namespace`"), "{e}");
        let text = "default_mode = \"off\"\n\n[[rules]]\nname = \"all\"\nmode = \"monitor\"\n\n[[rules]]\nname = \"pay\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\n";
        let e = Config::from_str(text).unwrap_err().to_string();
        assert!(
            e.starts_with("config: TOML parse error at line 7, column 1\n  |\n7 | [[rules]]\n  | ^^^^^^^^^\nrule \"pay\" never applies"),
            "{e}"
        );
        let e = Config::from_str("[[rules]]\nname = \"ks\"\nnamespaces = [\"kube-system\"]\nmode = \"enforce\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1, column 1") && e.contains("kube_system = false"), "{e}");
        let e = Config::from_str("[exclusions]\nown_namespace = \"Dg\"\n").unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("invalid exclusions.own_namespace \"Dg\": not a namespace name"),
            "{e}"
        );
        let rule = Rule::new(toml::from_str("name = \"a\"\nmode = \"off\"").unwrap()).unwrap();
        let c = Config { rules: vec![rule; 2], ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key: "rules", .. })));
    }
}
