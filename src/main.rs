//! `driftguard`: the node agent binary.
use std::process::ExitCode;

use clap::Parser;

mod args;
mod cli;

pub use args::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = cli::Overrides { nri_socket: args.nri_socket, pin_dir: args.pin_dir };
    match cli::dispatch(args.config.as_deref(), &overrides, args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftguard: error: {}", cli::error_chain(&e));
            ExitCode::from(1)
        }
    }
}
