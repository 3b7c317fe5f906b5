//! `driftguard demo` (in progress).
use std::process::ExitCode;

use driftguard::config::Config;

pub fn run(_cfg: &Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
