//! driftguard: stop container drift on Kubernetes nodes.
//!
//! - [`enforcer`]: loads the BPF programs in `bpf/`, pins them, manages per-cgroup policy
//!   and streams verdict events.
//! - [`policy`]: the policy model (mode, rules, path lists) and its kernel encoding.
//! - [`provenance`]: which filesystem a container's code may come from (its root overlay,
//!   exempted volumes), read from mountinfo before the entrypoint runs.
//! - [`check`]: `driftguard check`'s items: is this node ready, and what to change if not.
//! - [`install`]: putting one container under policy, for the agent and the OCI hook alike.
//! - [`node_state`]: what is kept outside bpffs for a pin dir, and which pin dir owns it.
//! - [`rules`]: node policy rules: policy for namespaces and label selectors, exclusions.
//! - [`demo`]: `driftguard demo`'s image, overlay, runc container, enforcement and cleanup.
pub mod abi;
pub mod agent;
pub mod annotations;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod demo;
pub mod enforcer;
pub mod host;
pub mod install;
pub mod mountinfo;
pub mod node_state;
pub mod policy;
pub mod provenance;
pub mod rules;

/// The layers of the library, lowest first: a module may import only modules listed before it
/// (docs/architecture.md). No circle can form, and nothing low reaches up.
pub const LAYERS: [&str; 15] = [
    "abi",
    "node_state",
    "mountinfo",
    "host",
    "policy",
    "cgroup",
    "provenance",
    "annotations",
    "rules",
    "enforcer",
    "config",
    "install",
    "check",
    "demo",
    "agent",
];

#[cfg(test)]
mod layering {
    use super::LAYERS;
    use std::path::Path;

    /// The top-level module a file of `src/` belongs to (`src/agent/plugin.rs` -> `agent`).
    fn module_of(rel: &Path) -> String {
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        first.trim_end_matches(".rs").to_string()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `crate::<module>` a file names outside comments, and whether it uses the grouped
    /// form `crate::{…}` (not allowed: the check reads one module per path).
    fn imports(text: &str) -> (Vec<String>, bool) {
        let mut found = Vec::new();
        let mut grouped = false;
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                if i > 0 && line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                    continue; // `driftguard::crate::…` does not exist; `$crate::` is a macro's
                }
                let rest = &line[i + "crate::".len()..];
                if rest.starts_with('{') {
                    grouped = true;
                }
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
        (found, grouped)
    }

    #[test]
    fn layers_point_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
        let mut broken = Vec::new();
        for f in &all {
            let rel = f.strip_prefix(&src).unwrap();
            let from = module_of(rel);
            // The binary (main.rs, args.rs, cli/) is another crate on top, using this one as
            // `driftguard::`; the crate root only declares the modules.
            if ["main", "args", "cli", "lib"].contains(&from.as_str()) {
                continue;
            }
            let Some(from_rank) = rank(&from) else {
                broken.push(format!("{}: module {from} is not in LAYERS", rel.display()));
                continue;
            };
            let (names, grouped) = imports(&std::fs::read_to_string(f).unwrap());
            if grouped {
                broken.push(format!("{}: `crate::{{…}}` (name each module on its own path)", rel.display()));
            }
            for to in names {
                match rank(&to) {
                    Some(r) if r < from_rank || to == from => {}
                    Some(_) => broken.push(format!("{}: {from} imports {to}, which is not below it", rel.display())),
                    None => broken.push(format!("{}: {from} imports {to}, which is not in LAYERS", rel.display())),
                }
            }
        }
        // Every module of the crate has its place.
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            let m = e.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
            if !["main", "args", "cli", "lib"].contains(&m.as_str()) && rank(&m).is_none() {
                broken.push(format!("src/{m} is not in LAYERS"));
            }
        }
        assert!(broken.is_empty(), "imports against the layers (docs/architecture.md):\n{}", broken.join("\n"));
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        let (names, grouped) =
            imports("use crate::agent::state_dir;\n// crate::demo in a comment\nlet x = crate::{a};");
        assert_eq!(names, ["agent"]);
        assert!(grouped);
    }
}
