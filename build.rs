//! Compiles the CO-RE BPF programs in bpf/ into a libbpf-rs skeleton in OUT_DIR, checks that
//! src/abi.rs agrees with bpf/driftguard.h (see `check_abi`), and generates the man
//! pages (OUT_DIR/man/) and shell completions (OUT_DIR/completions/) from the command line's
//! definition in src/args.rs; packaging/build.sh ships them.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
mod args {
    include!("src/args.rs");
}

use libbpf_cargo::SkeletonBuilder;

/// The hand-written Rust mirror of the C ABI; it only uses `std`, so the build script can
/// compile it too and turn its tables into C static assertions.
#[allow(dead_code)]
#[path = "src/abi.rs"]
mod abi;

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

    check_abi(&out, &bpf_dir);
    println!("cargo:rerun-if-changed=src/abi.rs");

    generate_docs(&out).unwrap_or_else(|e| panic!("generating man pages and completions failed: {e}"));
    println!("cargo:rerun-if-changed=src/args.rs");

    for f in [
        "driftguard.bpf.c",
        "driftguard.h",
        "decision.h",
        "memory.h",
        "memory_fallback.h",
        "process_memory_fallback.h",
        "process_memory.h",
        "vmlinux.h",
    ] {
        println!("cargo:rerun-if-changed=bpf/{f}");
    }
}

/// Compiles `abi::c_static_asserts()` against bpf/driftguard.h with the same clang and target as
/// the BPF programs: a constant, struct size, member offset or member size that differs between
/// the header and src/abi.rs (or a member abi.rs does not list) fails the build with the
/// name of the fact. `clang -fsyntax-only` parses only; no object is written.
fn check_abi(out: &Path, bpf_dir: &Path) {
    let check = out.join("abi_check.c");
    let src = format!("#include \"vmlinux.h\"\n#include \"driftguard.h\"\n{}", abi::c_static_asserts());
    std::fs::write(&check, src).unwrap_or_else(|e| panic!("writing {}: {e}", check.display()));
    let clang = "clang"; // what SkeletonBuilder runs by default
    let output = Command::new(clang)
        .args(["-target", "bpf", "-fsyntax-only", "-I"])
        .arg(bpf_dir)
        .arg(&check)
        .output()
        .unwrap_or_else(|e| panic!("running {} for the ABI check: {e}", clang));
    if !output.status.success() {
        panic!(
            "src/abi.rs does not match bpf/driftguard.h (checked by {}):\n{}",
            check.display(),
            String::from_utf8_lossy(&output.stderr)
        );
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
