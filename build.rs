//! Compiles the CO-RE BPF programs in bpf/ into a libbpf-rs skeleton in OUT_DIR, and generates
//! the man pages (OUT_DIR/man/) and shell completions (OUT_DIR/completions/) from the command
//! line's definition in src/args.rs; packaging/build.sh ships them.
use std::env;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod args {
    include!("src/args.rs");
}

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/driftguard.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"));
    let bpf_dir = manifest_dir.join("bpf");

    SkeletonBuilder::new()
        .source(SRC)
        .obj(out.join("driftguard.bpf.o"))
        .clang_args([
            "-I".into(),
            bpf_dir.clone().into_os_string(),
            "-Wall".into(),
            "-Wno-unused-function".into(),
            "-Wno-compare-distinct-pointer-types".into(),
        ])
        .build_and_generate(out.join("driftguard.skel.rs"))
        .unwrap_or_else(|e| panic!("building BPF skeleton from {SRC} failed: {e:#}"));

    generate_docs(&out).unwrap_or_else(|e| panic!("generating man pages and completions failed: {e}"));
    println!("cargo:rerun-if-changed=src/args.rs");

    for f in ["driftguard.bpf.c", "driftguard.h", "decision.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed=bpf/{f}");
    }
}

/// `driftguard.1` and `driftguard-<command>.1`; completions for bash, zsh and fish.
fn generate_docs(out: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    let cmd = args::Args::command();
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "driftguard", &comp)?;
    }
    Ok(())
}
