//! `driftguard`: the node agent binary.
use std::process::ExitCode;

use clap::Parser;

mod args;
mod cli;

pub use args::{Args, Command, EventsArgs, EventsOutput, Shell};

fn main() -> ExitCode {
    let args = Args::parse();
    // Needs no configuration: works wherever the binary runs.
    if let Command::Completions { shell } = args.command {
        print!("{}", cli::completions(shell));
        return ExitCode::SUCCESS;
    }
    let overrides = cli::Overrides { nri_socket: args.nri_socket, pin_dir: args.pin_dir };
    let json = args.command.json();
    match cli::dispatch(args.config.as_deref(), &overrides, args.command) {
        Ok(code) => code,
        Err(e) => {
            let text = cli::error_chain(&e);
            eprintln!("driftguard: error: {text}");
            // A script that asked for JSON gets JSON on stdout whatever failed (the configuration
            // included), with the same exit code.
            if json {
                println!("{}", serde_json::json!({ "state": "error", "error": text }));
            }
            ExitCode::from(1)
        }
    }
}
