//! Feeds arbitrary pod and container annotation maps to `driftguard::annotations::resolve`.
//!
//! Input format (so that the fuzzer reaches the interesting code quickly): the first line is the
//! container name; every further line is one annotation `<sel><key>\t<value>`. The selector byte
//! picks the map (pod or container: bit 0) and whether the key is built from the known key table
//! (bit 1: `driftguard.dev/<known key>` plus the rest of the line as an optional suffix, such as
//! `.app`) or taken verbatim.
//!
//! Properties:
//! * never panics;
//! * deterministic, and independent of the map type / iteration order (HashMap vs BTreeMap);
//! * an accepted policy passes `Policy::validate`, and every list entry is a valid `ExecPath`
//!   (absolute, normalized, at most 255 bytes) that the kernel can compare;
//! * maps without any `driftguard.dev/` key give exactly the node defaults;
//! * an error message is never empty.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use driftguard::annotations::{resolve, Defaults, FailurePolicy};
use driftguard::policy::{ExecPath, Mode, Policy};
use libfuzzer_sys::fuzz_target;

const KEYS: &[&str] = &[
    "mode",
    "failure-policy",
    "drift",
    "fileless",
    "non-overlay",
    "non-image",
    "exec-volumes",
    "allowlist-only",
    "allow",
    "deny",
    "Mode",
    "",
];
const PREFIX: &str = "driftguard.dev/";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or("");
    let defaults = match name.len() % 3 {
        0 => Defaults::default(),
        1 => Defaults { mode: Mode::Monitor, failure_policy: FailurePolicy::default() },
        _ => Defaults { mode: Mode::Enforce, failure_policy: FailurePolicy::default() },
    };
    let mut pod = BTreeMap::new();
    let mut ctr = BTreeMap::new();
    for line in lines {
        let mut chars = line.chars();
        let Some(sel) = chars.next() else { continue };
        let rest = chars.as_str();
        let (k, v) = rest.split_once('\t').unwrap_or((rest, ""));
        let sel = sel as u32;
        let key = if sel & 2 != 0 {
            let known = KEYS[(sel as usize >> 2) % KEYS.len()];
            format!("{PREFIX}{known}{k}")
        } else {
            k.to_string()
        };
        if sel & 1 == 0 {
            pod.insert(key, v.to_string());
        } else {
            ctr.insert(key, v.to_string());
        }
    }

    let a = resolve(&defaults, &pod, name, &ctr);
    let b = resolve(&defaults, &pod, name, &ctr);
    assert_eq!(a, b, "resolve is not deterministic");
    let pod_h: HashMap<_, _> = pod.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let ctr_h: HashMap<_, _> = ctr.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let c = resolve(&defaults, &pod_h, name, &ctr_h);
    assert_eq!(a, c, "result depends on the map's iteration order");

    match a {
        Ok(cp) => {
            cp.policy.validate().expect("accepted policy fails validate()");
            for (p, _) in cp.policy.path_entries() {
                let again = ExecPath::new(p.as_str()).expect("accepted list entry is not a valid ExecPath");
                assert_eq!(&again, p);
                assert!(p.as_str().len() < 256, "list entry longer than the kernel compares");
            }
            let ours = |m: &BTreeMap<String, String>| m.keys().any(|k| k.starts_with(PREFIX));
            if !ours(&pod) && !ours(&ctr) {
                assert_eq!(cp.policy, Policy::with_mode(defaults.mode), "no driftguard keys, yet not the defaults");
                assert_eq!(cp.failure_policy, defaults.failure_policy);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
