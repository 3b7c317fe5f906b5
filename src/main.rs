//! `driftguard`: the node agent binary.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Stop container drift: deny exec of binaries the image did not ship.
#[derive(Parser, Debug)]
#[command(name = "driftguard", version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', global = true, env = "DRIFTGUARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: load or adopt enforcement, follow containers through NRI, publish events.
    Run,
    /// Containers under policy and their modes, from the pinned maps (works while the agent runs).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow verdict events as JSON lines.
    Events,
    /// Check kernel and runtime readiness and say what to do about each problem.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// containerd's config file to inspect (NRI, and the OCI hook in the runc runtime's
        /// base runtime spec).
        #[arg(long, value_name = "PATH", default_value = "/etc/containerd/config.toml")]
        containerd_config: std::path::PathBuf,
    },
    /// One-minute demo with runc and a busybox container: a dropped binary is stopped.
    Demo,
    /// Detach every pinned program and delete the pinned maps (stops enforcement on this node).
    Unload,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match cli::dispatch(args.config.as_deref(), args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftguard: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
