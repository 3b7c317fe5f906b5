//! Subcommands of the `driftguard` binary. `anyhow` lives here, at the binary edge.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use driftguard::config::{Config, LogFormat};

pub mod check;
pub mod demo;
pub mod events;
pub mod run;
pub mod status;
pub mod unload;

/// Command-line flags that override keys of the configuration file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--nri-socket`: `[nri] socket`.
    pub nri_socket: Option<PathBuf>,
    /// `--pin-dir`: `[bpf] pin_dir`.
    pub pin_dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) -> anyhow::Result<()> {
        if let Some(s) = &self.nri_socket {
            cfg.nri.socket = s.clone();
        }
        if let Some(p) = &self.pin_dir {
            cfg.bpf.pin_dir = p.clone();
        }
        cfg.validate().context("--nri-socket / --pin-dir")
    }
}

/// An error and its causes on one line, each cause once: errors that embed their source's text
/// in their own message (`"{context}: {source}"`) would otherwise repeat it.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

impl crate::Command {
    /// Did the command line ask for JSON output?
    pub fn json(&self) -> bool {
        match self {
            crate::Command::Status { json } | crate::Command::Check { json, .. } | crate::Command::Unload { json } => {
                *json
            }
            crate::Command::Run
            | crate::Command::Events(_)
            | crate::Command::Demo
            | crate::Command::Completions { .. } => false,
        }
    }
}

/// The completion script build.rs generated from the command line (src/args.rs), the same the
/// packages install.
pub fn completions(shell: crate::Shell) -> &'static str {
    match shell {
        crate::Shell::Bash => include_str!(concat!(env!("OUT_DIR"), "/completions/driftguard.bash")),
        crate::Shell::Zsh => include_str!(concat!(env!("OUT_DIR"), "/completions/_driftguard")),
        crate::Shell::Fish => include_str!(concat!(env!("OUT_DIR"), "/completions/driftguard.fish")),
    }
}

/// Load the configuration, set up logging, run one subcommand.
pub fn dispatch(config: Option<&Path>, overrides: &Overrides, command: crate::Command) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(config).context("loading configuration")?;
    overrides.apply(&mut cfg)?;
    init_logging(&cfg);
    match command {
        crate::Command::Run => run::run(cfg),
        crate::Command::Status { json } => {
            status::run(&cfg, config.unwrap_or(Path::new(driftguard::config::DEFAULT_PATH)), json)
        }
        crate::Command::Events(a) => events::run(&cfg, &a),
        crate::Command::Check { json, containerd_config, containerd_bin } => {
            check::run(&cfg, json, &driftguard::check::Runtime { containerd_config, containerd_bin })
        }
        crate::Command::Demo => demo::run(&cfg),
        crate::Command::Unload { json } => unload::run(&cfg, json),
        crate::Command::Completions { shell } => {
            print!("{}", completions(shell));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DRIFTGUARD_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, `kubectl logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening {path}: {source}")]
    struct Embeds {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = anyhow::Error::new(Embeds { path: "/x", source: io }).context("reading the pins");
        assert_eq!(error_chain(&e), "reading the pins: opening /x: Permission denied (os error 13)");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }

    #[test]
    fn flags_override_the_config_file() {
        let mut cfg = Config::default();
        let o = Overrides { nri_socket: Some("/run/x/nri.sock".into()), pin_dir: Some("/sys/fs/bpf/dg-x".into()) };
        o.apply(&mut cfg).unwrap();
        assert_eq!(cfg.nri.socket, Path::new("/run/x/nri.sock"));
        assert_eq!(cfg.bpf.pin_dir, Path::new("/sys/fs/bpf/dg-x"));
        let mut cfg = Config::default();
        let before = cfg.bpf.pin_dir.clone();
        Overrides::default().apply(&mut cfg).unwrap();
        assert_eq!(cfg.bpf.pin_dir, before);
        let bad = Overrides { nri_socket: Some("relative.sock".into()), pin_dir: None };
        let err = format!("{:#}", bad.apply(&mut Config::default()).unwrap_err());
        assert!(err.contains("--nri-socket") && err.contains("nri.socket"), "{err}");
    }
}
