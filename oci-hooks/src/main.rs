//! `driftguard-oci-hook create-runtime|poststop [--pin-dir DIR] [--config FILE] [--state-dir DIR] [-v]`
//!
//! OCI runtime hook; reads the container state JSON on stdin. Exit codes: 0 installed /
//! nothing to do / unprotected under `failure-policy: ignore` (warning on stderr);
//! 1 policy not installed and failure policy `fail` (container refused); 2 invalid input.
//! See docs/oci-hooks.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use driftguard_oci_hook::{
    create_runtime, poststop, read_state, refusal, CreateOutcome, HookError, Options, PoststopOutcome,
    DEFAULT_STATE_DIR, EXIT_INVALID_INPUT, EXIT_OK,
};

const NAME: &str = "driftguard-oci-hook";

/// OCI runtime hook: installs (create-runtime) and removes (poststop) the driftguard policy of
/// the container whose state JSON it reads on stdin.
#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    after_help = "exit codes: 0 ok (or started unprotected under failure-policy ignore, with a warning),
            1 policy not installed, container refused (failure-policy fail),
            2 invalid input (usage, state JSON, bundle, config.json, annotations, config)"
)]
struct Cli {
    #[command(subcommand)]
    stage: Stage,
    /// Pinned BPF maps [default: bpf.pin_dir of the config, /sys/fs/bpf/driftguard]
    #[arg(long, global = true, value_name = "DIR", value_parser = non_empty_path)]
    pin_dir: Option<PathBuf>,
    /// driftguard config [default: /etc/driftguard/config.toml, defaults if absent]
    #[arg(long, global = true, value_name = "FILE", value_parser = non_empty_path)]
    config: Option<PathBuf>,
    /// Per-container records, and refusals for the agent to report [default: [oci_hook] state_dir
    /// of the config, /run/driftguard/oci]
    #[arg(long, global = true, value_name = "DIR", value_parser = non_empty_path)]
    state_dir: Option<PathBuf>,
    /// Print what was done on stderr
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Install the container's driftguard policy (createRuntime stage)
    #[command(alias = "createRuntime")]
    CreateRuntime,
    /// Remove it again (poststop stage)
    Poststop,
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("needs a non-empty value".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version print to stdout and succeed; usage errors exit 2
        // (EXIT_INVALID_INPUT), like every other invalid input.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_INVALID_INPUT) } else { ExitCode::SUCCESS };
        }
    };
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<HookError>().map_or(EXIT_INVALID_INPUT, HookError::exit_code);
            // HookError's text already includes its cause.
            eprintln!("{NAME}: error: {e}");
            ExitCode::from(code)
        }
    }
}

/// `--state-dir`, else `[oci_hook] state_dir` of the config, else the default (also when the
/// config cannot be read: poststop must still find its records).
fn state_dir(args: &Cli) -> PathBuf {
    args.state_dir.clone().unwrap_or_else(|| {
        driftguard::config::Config::load(args.config.as_deref())
            .map(|c| c.oci_hook.state_dir)
            .unwrap_or_else(|_| PathBuf::from(DEFAULT_STATE_DIR))
    })
}

fn run(args: &Cli) -> anyhow::Result<u8> {
    let opts = Options { pin_dir: args.pin_dir.clone(), config: args.config.clone(), state_dir: state_dir(args) };
    let st = read_state(std::io::stdin().lock())?;
    match args.stage {
        Stage::CreateRuntime => {
            let out = match create_runtime(&st, &opts) {
                Ok(out) => out,
                Err(e) => {
                    // Left for the agent to report as an event and a metric (now, or when it is
                    // back); the runtime reports the error itself.
                    if let Some(r) = refusal(&st, &e) {
                        match driftguard::node_state::record_refusal(&opts.state_dir, &r) {
                            Ok(true) => {}
                            Ok(false) => {
                                eprintln!("{NAME}: warning: too many refusals wait for the agent; not recorded")
                            }
                            Err(w) => eprintln!(
                                "{NAME}: warning: cannot record the refusal under {}: {w}",
                                opts.state_dir.display()
                            ),
                        }
                    }
                    return Err(e.into());
                }
            };
            match &out {
                CreateOutcome::Unprotected(_) => eprintln!("{NAME}: warning: {out}"),
                _ if args.verbose => eprintln!("{NAME}: {out}"),
                _ => {}
            }
        }
        Stage::Poststop => {
            let out = poststop(&st, &opts)?;
            match &out {
                PoststopOutcome::MapsGone { .. } => eprintln!("{NAME}: warning: {out}"),
                _ if args.verbose => eprintln!("{NAME}: {out}"),
                _ => {}
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_before_or_after_the_stage() {
        let a = Cli::try_parse_from([NAME, "--pin-dir", "/p", "createRuntime", "-v"]).unwrap();
        assert_eq!(a.stage, Stage::CreateRuntime);
        assert_eq!(a.pin_dir.as_deref(), Some(std::path::Path::new("/p")));
        assert!(a.verbose);
        let b = Cli::try_parse_from([NAME, "poststop", "--state-dir", "/s", "--config", "/c"]).unwrap();
        assert_eq!(b.stage, Stage::Poststop);
        assert_eq!(b.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(b.config.as_deref(), Some(std::path::Path::new("/c")));
        assert_eq!(Cli::try_parse_from([NAME, "poststop"]).unwrap().state_dir, None);
        assert!(Cli::try_parse_from([NAME, "create-runtime", "--pin-dir", ""]).is_err());
        assert!(Cli::try_parse_from([NAME, "create-runtime", "poststop"]).is_err());
    }
}
