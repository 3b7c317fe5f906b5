//! `driftguard run`: the systemd service's command.
use std::process::ExitCode;

use anyhow::Context;
use driftguard::agent;
use driftguard::config::Config;
use driftguard::enforcer::{Enforcer, EnforcerOptions};

pub fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("driftguard")
        .build()
        .context("starting the async runtime")?;
    let enforcer = Enforcer::load(&EnforcerOptions {
        pin_dir: Some(cfg.bpf.pin_dir.clone()),
        force_fallback: cfg.bpf.force_fallback,
        fallback_mappings: cfg.bpf.fallback_mappings,
    })
    .context("loading BPF enforcement")?;
    match enforcer.fallback_reason() {
        None => tracing::info!("enforcement path: BPF LSM (exec and PROT_EXEC mappings denied with EPERM)"),
        // Once, with the reason and what to change (the loader's details are at debug level).
        Some(why) => tracing::warn!(
            mappings = enforcer.mapping_checks().as_str(),
            "enforcement path: exec tracepoint + SIGKILL fallback (dropped binaries are killed right after exec, \
             not denied; {}; `#!` scripts seen as their interpreter) because {why}",
            match enforcer.mapping_checks() {
                driftguard::enforcer::MappingChecks::Tracepoints { .. } =>
                    "mappings and writes into process memory checked at the syscall, their process killed (fallback_mappings)",
                _ => "no mmap or process-memory checks (see fallback_mappings)",
            }
        ),
    }
    // What this kernel cannot guarantee, said once at start (docs/bpf.md, "Kernels").
    for limit in enforcer.kernel_limits() {
        tracing::warn!(limit = %limit, "kernel limit");
    }
    // Fail closed, loudly: the programs run, judging every root-overlay file as drift.
    if let Some(limit) = enforcer.overlay_failure() {
        tracing::error!(limit = %limit, "kernel limit");
    }
    let state_dir = agent::state_dir();
    rt.block_on(agent::run(cfg, enforcer, state_dir, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
