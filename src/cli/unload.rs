//! `driftguard unload`: the pins of one pin dir, then the state that belongs to it
//! ([`driftguard::node_state::release`]); another pin dir's state stays, listed as kept.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use driftguard::config::Config;
use driftguard::node_state::{self, Kept};
use driftguard::{agent, enforcer};
use serde::Serialize;

#[derive(Serialize)]
struct Unloaded {
    pin_dir: PathBuf,
    /// Was any enforcement pinned there (links or maps)?
    was_pinned: bool,
    /// Pins, then state files and directories, in the order they were removed.
    removed: Vec<PathBuf>,
    /// What stayed, and why (another pin dir's state, or a file that could not be removed).
    kept: Vec<Kept>,
}

pub fn run(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let pin_dir = &cfg.bpf.pin_dir;
    let pins = enforcer::unload(pin_dir).with_context(|| format!("unloading {}", pin_dir.display()))?;
    let state = node_state::release(&agent::state_dir(), pin_dir);
    let out = Unloaded {
        pin_dir: pin_dir.clone(),
        was_pinned: pins.removed.iter().any(|p| p != pin_dir),
        removed: pins.removed.into_iter().chain(state.removed).collect(),
        kept: state.kept,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for p in &out.removed {
        println!("removed {}", p.display());
    }
    for k in &out.kept {
        println!("kept {}: {}", k.path.display(), k.reason);
    }
    if out.was_pinned {
        println!(
            "driftguard enforcement of {} is unloaded: no container it protected is protected until an agent \
             loads it again",
            pin_dir.display()
        );
    } else {
        println!("nothing pinned under {}", pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
