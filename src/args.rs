// The command line, as clap derives it. Also compiled by build.rs (`include!`), which generates
// the man pages and shell completions from it: keep it free of anything but clap and std (no
// inner attributes or `//!` docs either, which `include!` does not accept).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Stop container drift: deny exec of binaries the image did not ship.
#[derive(Parser, Debug)]
#[command(
    name = "driftguard",
    version,
    about,
    long_about = "driftguard stops container drift on Kubernetes nodes: a container may run what its \
                  image shipped, and nothing else. `driftguard run` is the node agent (BPF LSM, or an exec \
                  tracepoint fallback; containers followed through NRI); the other commands inspect and \
                  manage a node."
)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', global = true, env = "DRIFTGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The runtime's NRI socket; overrides `[nri] socket` of the configuration file.
    #[arg(long, global = true, value_name = "PATH", env = "DRIFTGUARD_NRI_SOCKET")]
    pub nri_socket: Option<PathBuf>,
    /// Where enforcement is pinned (on bpffs); overrides `[bpf] pin_dir` of the configuration
    /// file. `status` and `unload` need the agent's value.
    #[arg(long, global = true, value_name = "PATH", env = "DRIFTGUARD_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: load or adopt enforcement, follow containers through NRI, publish events.
    Run,
    /// Whether an agent runs and is registered with the runtime, the enforcement path, and the
    /// containers under policy with their modes, from the pinned maps.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show events (verdicts, notices, refused containers): live from the agent (or the pinned
    /// ring buffer) until interrupted, or from the events file with --file, --since or --until;
    /// filtered, as JSON lines or aligned text.
    Events(EventsArgs),
    /// Check kernel and runtime readiness and say what to do about each problem.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// containerd's config file to inspect (NRI, and the OCI hook in the runc runtime's
        /// base runtime spec).
        #[arg(long, value_name = "PATH", default_value = "/etc/containerd/config.toml")]
        containerd_config: PathBuf,
        /// containerd's binary, when it is not on PATH (its version decides what NRI needs).
        #[arg(long = "containerd", value_name = "PATH")]
        containerd_bin: Option<PathBuf>,
    },
    /// One-minute demo with runc and a busybox container: a dropped binary is stopped.
    Demo,
    /// Detach the programs pinned under the pin dir, delete its pinned maps (stops that
    /// enforcement), and remove the state that belongs to it: the agent's state directory when
    /// it names this pin dir, and the OCI hook records that name it. Another pin dir's state
    /// stays and is listed as kept.
    Unload {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for bash, zsh or fish, e.g.
    /// `driftguard completions bash > ~/.local/share/bash-completion/completions/driftguard`
    /// (the packages install them).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Shells `driftguard completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `driftguard events` options.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct EventsArgs {
    /// Keep printing new events until interrupted: the default for live events; with --file,
    /// follow what the agent appends (across rotations).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Read the events file instead of the live agent: PATH, or `[events] file` of the
    /// configuration when no PATH is given. Rotated files (PATH.N … PATH.1) are read first.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub file: Option<Option<PathBuf>>,
    /// Only events of pods in this namespace (a name or a glob with * and ?; repeat for any of
    /// several).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// Only events of this pod (name or glob; repeatable).
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,
    /// Only events of this container (name or glob; repeatable).
    #[arg(long, value_name = "CONTAINER")]
    pub container: Vec<String>,
    /// Only verdicts of this rule (drift, fileless, non_image, deny_list, not_allowed,
    /// exec_memory, memory_write, process_access), or notices/refusals of this reason
    /// (repeatable).
    #[arg(long, value_name = "RULE")]
    pub rule: Vec<String>,
    /// Only events with this action: deny, kill, alert, refused (repeatable).
    #[arg(long, value_name = "ACTION")]
    pub action: Vec<String>,
    /// Only events at or after TIME: a duration back from now (30s, 15m, 2h, 7d, 1h30m) or an
    /// RFC 3339 time (2026-12-06T10:00:00Z). Reads the events file.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events at or before TIME (as --since). Reads the events file.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Output format: json (one JSON object per line, as the agent wrote it) or text (one
    /// aligned line per event: time, action, rule, namespace/pod/container, workload, detail).
    #[arg(long, short = 'o', value_enum, default_value_t = EventsOutput::Json)]
    pub output: EventsOutput,
}

/// `driftguard events --output`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventsOutput {
    /// JSON lines.
    #[default]
    Json,
    /// One aligned line per event, no colour.
    Text,
}
