//! Generates the Rust bindings for the project's NRI protocol definition (`proto/nri.proto`)
//! into `OUT_DIR` with rust-protobuf's pure-Rust parser, so no `protoc` binary is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/nri.proto");
    println!("cargo:rerun-if-changed=build.rs");

    let customize =
        protobuf_codegen::Customize::default().gen_mod_rs(true).generate_accessors(true).lite_runtime(false);

    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/nri.proto")
        .cargo_out_dir("nri_proto")
        .customize(customize)
        .run_from_script();
}
