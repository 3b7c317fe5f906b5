//! Generates the Rust bindings for the project's NRI protocol definition (`proto/nri.proto`)
//! into `OUT_DIR` with rust-protobuf's pure-Rust parser, so no `protoc` binary is needed.
//!
//! Two things rust-protobuf does not do are added here, both derived from `proto/nri.proto`, the
//! single source of the protocol:
//!
//! * Documentation: the `//` comments right above (or at the end of the line of) a message,
//!   field, enum or enum value become its `///` doc comment in the generated code. rust-protobuf's
//!   pure parser does not keep comments, but it marks every item with a
//!   `// @@protoc_insertion_point(<kind>:<full name>)` line, where the docs are inserted.
//! * The NRI version the file matches, from its `// nri-version: vX.Y.Z` line, exported to the
//!   crate as the `NRI_API_VERSION` compile-time environment variable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PROTO: &str = "proto/nri.proto";
const VERSION_TAG: &str = "// nri-version:";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let source = std::fs::read_to_string(PROTO).unwrap_or_else(|e| panic!("reading {PROTO}: {e}"));
    println!("cargo:rustc-env=NRI_API_VERSION={}", nri_version(&source));

    let customize =
        protobuf_codegen::Customize::default().gen_mod_rs(true).generate_accessors(true).lite_runtime(false);
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input(PROTO)
        .cargo_out_dir("nri_proto")
        .customize(customize)
        .run_from_script();

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("nri_proto/nri.rs");
    let docs = proto_docs(&source);
    insert_docs(&out, &docs);
}

/// The version on the file's one `// nri-version: vX.Y.Z` line.
fn nri_version(source: &str) -> String {
    let tagged: Vec<&str> = source.lines().filter_map(|l| l.trim().strip_prefix(VERSION_TAG)).map(str::trim).collect();
    match tagged.as_slice() {
        [v] if v.starts_with('v')
            && v[1..].split('.').count() == 3
            && v[1..].split('.').all(|n| n.parse::<u32>().is_ok()) =>
        {
            v.to_string()
        }
        _ => panic!("{PROTO} must have exactly one `{VERSION_TAG} vX.Y.Z` line, found {tagged:?}"),
    }
}

/// Doc text of every commented declaration, by the full name the insertion points use
/// (`<package>.<Message>[.<field>]`, `<package>.<Enum>.<VALUE>`). A comment belongs to the
/// declaration right below it (no blank line between) or to the one on its own line.
fn proto_docs(source: &str) -> HashMap<String, Vec<String>> {
    let mut docs = HashMap::new();
    let mut package = String::new();
    // Enclosing messages, enums and services, innermost last.
    let mut scopes: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for raw in source.lines() {
        let line = raw.trim();
        if line.is_empty() {
            pending.clear();
            continue;
        }
        let (code, trailing) = match line.find("//") {
            Some(i) => (line[..i].trim(), Some(line[i + 2..].trim())),
            None => (line, None),
        };
        if code.is_empty() {
            if !line.starts_with(VERSION_TAG) {
                pending.push(trailing.unwrap_or_default().to_string());
            }
            continue;
        }
        let mut doc = std::mem::take(&mut pending);
        if let Some(t) = trailing.filter(|t| !t.is_empty()) {
            doc.push(t.to_string());
        }
        let words: Vec<&str> = code.split_whitespace().collect();
        let mut opens = code.matches('{').count();
        if let Some(p) = code.strip_prefix("package ") {
            package = p.trim_end_matches(';').trim().to_string();
        } else if matches!(words.first(), Some(&"message" | &"enum" | &"service")) && opens > 0 {
            let name = words.get(1).and_then(|w| w.split('{').next()).unwrap_or_default().to_string();
            scopes.push(name);
            opens -= 1;
            if words[0] != "service" {
                docs.insert(full_name(&package, &scopes, None), doc);
            }
        } else if let Some(eq) = code.find('=').filter(|_| code.ends_with(';') && !scopes.is_empty()) {
            // A field (`[repeated] <type> <name> = <n>;`) or an enum value (`<NAME> = <n>;`).
            let name = code[..eq].split_whitespace().last().unwrap_or_default();
            docs.insert(full_name(&package, &scopes, Some(name)), doc);
        }
        // Other braces (an rpc's `{}`) open and close unnamed scopes.
        scopes.extend(std::iter::repeat_n(String::new(), opens));
        for _ in 0..code.matches('}').count() {
            scopes.pop();
        }
    }
    docs.retain(|_, d| !d.is_empty());
    docs
}

fn full_name(package: &str, scopes: &[String], item: Option<&str>) -> String {
    let mut parts = vec![package.to_string()];
    parts.extend(scopes.iter().cloned());
    parts.extend(item.map(str::to_string));
    parts.join(".")
}

/// Puts `docs` above the matching insertion points of the generated file.
fn insert_docs(path: &Path, docs: &HashMap<String, Vec<String>>) {
    let code = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = String::with_capacity(code.len() + docs.len() * 80);
    let mut used = 0;
    for line in code.lines() {
        let marker = line.trim_start();
        if let Some(rest) = marker.strip_prefix("// @@protoc_insertion_point(") {
            let name = rest.trim_end_matches(')').split_once(':').map(|(_, n)| n);
            if let Some(doc) = name.and_then(|n| docs.get(n)) {
                let indent = &line[..line.len() - marker.len()];
                for l in doc {
                    out.push_str(indent);
                    out.push_str(if l.is_empty() { "///" } else { "/// " });
                    out.push_str(l);
                    out.push('\n');
                }
                used += 1;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    // Every documented declaration has an insertion point, unless the generator changed.
    assert!(used >= docs.len(), "only {used} of {} proto comments found a place in {}", docs.len(), path.display());
    std::fs::write(path, out).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
