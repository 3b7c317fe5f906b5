//! Subcommands of the `driftguard` binary. `anyhow` lives here, at the binary edge.
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use driftguard::config::{Config, LogFormat};

pub mod check;
pub mod demo;
pub mod events;
pub mod run;
pub mod status;

/// Load the configuration, set up logging, run one subcommand.
pub fn dispatch(config: Option<&Path>, command: crate::Command) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config).context("loading configuration")?;
    init_logging(&cfg);
    match command {
        crate::Command::Run => run::run(cfg),
        crate::Command::Status { json } => status::run(&cfg, json),
        crate::Command::Events => events::run(&cfg),
        crate::Command::Check { json, containerd_config } => check::run(&cfg, json, &containerd_config),
        crate::Command::Demo => demo::run(&cfg),
        crate::Command::Unload => {
            let report = driftguard::enforcer::unload(&cfg.bpf.pin_dir)
                .with_context(|| format!("unloading {}", cfg.bpf.pin_dir.display()))?;
            if report.removed.is_empty() {
                println!("nothing pinned under {}", cfg.bpf.pin_dir.display());
            } else {
                for p in &report.removed {
                    println!("removed {}", p.display());
                }
                println!("driftguard enforcement is unloaded: no container on this node is protected until the agent starts again");
            }
            // The state that described those pins: the container registry, the events socket,
            // the OCI hook's records. Nothing of it means anything without the pins.
            let state = driftguard::agent::state_dir();
            for p in [
                driftguard::agent::registry_file(&state),
                driftguard::agent::events_socket(&state),
                state.join("oci"),
                state.clone(),
            ] {
                // The state dir itself only when nothing else is in it.
                let removed = match (p.is_dir(), p == state) {
                    (true, true) => std::fs::remove_dir(&p),
                    (true, false) => std::fs::remove_dir_all(&p),
                    (false, _) => std::fs::remove_file(&p),
                };
                match removed {
                    Ok(()) => println!("removed {}", p.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => eprintln!("warning: could not remove {}: {e}", p.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DRIFTGUARD_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
