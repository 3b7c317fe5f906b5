//! `driftguard-oci-hook create-runtime|poststop [--pin-dir DIR] [--config FILE] [--state-dir DIR]`
//!
//! OCI runtime hook; reads the container state JSON on stdin. Exit codes: 0 installed /
//! nothing to do / unprotected under `failure-policy: ignore` (warning on stderr);
//! 1 policy not installed and failure policy `fail` (container refused); 2 invalid input.
//! See docs/oci-hooks.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use driftguard_oci_hook::{
    create_runtime, poststop, read_state, CreateOutcome, HookError, Options, PoststopOutcome, EXIT_INVALID_INPUT,
    EXIT_OK,
};

const NAME: &str = "driftguard-oci-hook";
const USAGE: &str =
    "usage: driftguard-oci-hook <create-runtime|poststop> [--pin-dir DIR] [--config FILE] [--state-dir DIR]

OCI runtime hook (reads the container state JSON on stdin).
  create-runtime   install the container's driftguard policy (createRuntime stage)
  poststop         remove it again (poststop stage)
  --pin-dir DIR    pinned BPF maps (default: bpf.pin_dir of the config, /sys/fs/bpf/driftguard)
  --config FILE    driftguard config (default: /etc/driftguard/config.toml, defaults if absent)
  --state-dir DIR  per-container records (default: /run/driftguard/oci)
  -v, --verbose    print what was done on stderr

exit codes: 0 ok (or started unprotected under failure-policy ignore, with a warning),
            1 policy not installed, container refused (failure-policy fail),
            2 invalid input (usage, state JSON, bundle, config.json, annotations, config)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    CreateRuntime,
    Poststop,
}

struct Args {
    stage: Stage,
    opts: Options,
    verbose: bool,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut it = std::env::args_os().skip(1);
    let mut stage = None;
    let mut opts = Options::default();
    let mut verbose = false;
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { bail!("argument {a:?} is not UTF-8") };
        let mut value = |flag: &str| -> anyhow::Result<PathBuf> {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            if v.is_empty() {
                bail!("{flag} needs a non-empty value");
            }
            Ok(PathBuf::from(v))
        };
        match s {
            "-h" | "--help" => return Ok(None),
            "-V" | "--version" => {
                println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "create-runtime" | "createRuntime" if stage.is_none() => stage = Some(Stage::CreateRuntime),
            "poststop" if stage.is_none() => stage = Some(Stage::Poststop),
            "--pin-dir" => opts.pin_dir = Some(value(s)?),
            "--config" => opts.config = Some(value(s)?),
            "--state-dir" => opts.state_dir = value(s)?,
            "-v" | "--verbose" => verbose = true,
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let Some(stage) = stage else { bail!("missing stage: create-runtime or poststop") };
    Ok(Some(Args { stage, opts, verbose }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{NAME}: error: {e:#}\n{USAGE}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.downcast_ref::<HookError>().map_or(EXIT_INVALID_INPUT, HookError::exit_code);
            // HookError's text already includes its cause.
            eprintln!("{NAME}: error: {e}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<u8> {
    let st = read_state(std::io::stdin().lock())?;
    match args.stage {
        Stage::CreateRuntime => {
            let out = create_runtime(&st, &args.opts)?;
            match &out {
                CreateOutcome::Unprotected(_) => eprintln!("{NAME}: warning: {out}"),
                _ if args.verbose => eprintln!("{NAME}: {out}"),
                _ => {}
            }
        }
        Stage::Poststop => {
            let out = poststop(&st, &args.opts)?;
            match &out {
                PoststopOutcome::MapsGone { .. } => eprintln!("{NAME}: warning: {out}"),
                _ if args.verbose => eprintln!("{NAME}: {out}"),
                _ => {}
            }
        }
    }
    Ok(EXIT_OK)
}
