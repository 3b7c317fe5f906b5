//! `driftguard events`: follow verdict events as JSON lines.
//!
//! With an agent running, lines come from its events socket (the agent owns the ring
//! buffer). Without one, the pinned ring buffer is read directly.
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::Context;
use driftguard::agent::{self, output, Registry};
use driftguard::config::Config;
use driftguard::enforcer;

pub fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let state = agent::state_dir();
    let sock = agent::events_socket(&state);
    if let Ok(stream) = std::os::unix::net::UnixStream::connect(&sock) {
        eprintln!("following the agent's events ({})", sock.display());
        let mut out = std::io::stdout().lock();
        for line in BufReader::new(stream).lines() {
            let line = line.context("reading the events socket")?;
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        eprintln!("the agent closed the events socket");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("no agent running: reading the pinned ring buffer under {}", cfg.bpf.pin_dir.display());
    let mut stream = enforcer::open_pinned_events(&cfg.bpf.pin_dir).context("opening pinned events")?;
    let registry = Registry::load(agent::registry_file(&state));
    let clock = output::BootClock::now();
    let node = cfg.node_name();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut out = std::io::stdout().lock();
        while let Some(ev) = stream.next().await {
            let v = output::enrich(&ev, &node, &registry, &clock);
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
            out.flush()?;
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
