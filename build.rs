//! Compiles the CO-RE BPF programs in bpf/ into a libbpf-rs skeleton in OUT_DIR.
use std::env;
use std::path::PathBuf;

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

    for f in ["driftguard.bpf.c", "driftguard.h", "decision.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed=bpf/{f}");
    }
}
