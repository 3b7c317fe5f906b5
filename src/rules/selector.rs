//! Kubernetes label selectors (the string form of `kubectl get -l`), parsed and matched with
//! Kubernetes semantics, and namespace globs.
//!
//! Selector grammar: requirements separated by `,`, each one of `key`, `!key`, `key=value`,
//! `key==value`, `key!=value`, `key in (v1, v2)`, `key notin (v1, v2)`. All must hold. As in
//! Kubernetes, `!=` and `notin` also match a pod without the key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A pod's labels, in whatever map the caller has (NRI gives a `HashMap`): matched in place.
pub trait Labels {
    /// The value of label `key`, if set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requirement {
    /// `key`: the label is set.
    Exists(String),
    /// `!key`: the label is not set.
    DoesNotExist(String),
    /// `key=v` (same as `key in (v)`), `key in (v1, v2)`: set to one of the values.
    In(String, BTreeSet<String>),
    /// `key!=v` (same as `key notin (v)`), `key notin (v1, v2)`: not set, or set to none of them.
    NotIn(String, BTreeSet<String>),
}

impl Requirement {
    fn matches(&self, labels: &dyn Labels) -> bool {
        match self {
            Requirement::Exists(k) => labels.label(k).is_some(),
            Requirement::DoesNotExist(k) => labels.label(k).is_none(),
            Requirement::In(k, vs) => labels.label(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.label(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(", ");
        match self {
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", list(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", list(vs)),
        }
    }
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, sorted and without duplicates.
    pub requirements: BTreeSet<Requirement>,
}

impl Selector {
    /// Parse the string form. An empty selector is refused (it would match every pod: leave the
    /// key out instead).
    pub fn parse(s: &str) -> Result<Selector, String> {
        if s.trim().is_empty() {
            return Err("empty selector (it would match every pod; leave `selector` out instead)".into());
        }
        let mut requirements = BTreeSet::new();
        for part in split_top(s)? {
            requirements.insert(parse_requirement(part.trim())?);
        }
        Ok(Selector { requirements })
    }

    /// Whether a pod with `labels` matches.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether every pod this selector matches is also matched by `other` (sufficient test:
    /// `other`'s requirements are a subset of ours).
    pub fn implies(&self, other: &Selector) -> bool {
        other.requirements.is_subset(&self.requirements)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Split at the commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("nested '(' at byte {i}")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("')' without '(' at byte {i}")),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'(' without ')'".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(r: &str) -> Result<Requirement, String> {
    if r.is_empty() {
        return Err("empty requirement (a stray ',')".into());
    }
    if let Some(k) = r.strip_prefix('!') {
        let k = k.trim();
        check_key(k)?;
        return Ok(Requirement::DoesNotExist(k.to_string()));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = r.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(v)?;
            let vs = BTreeSet::from([v.to_string()]);
            return Ok(if negate { Requirement::NotIn(k.to_string(), vs) } else { Requirement::In(k.to_string(), vs) });
        }
    }
    if let Some(open) = r.find('(') {
        let head = r[..open].trim();
        let (k, negate) = if let Some(k) = head.strip_suffix(" notin") {
            (k.trim(), true)
        } else if let Some(k) = head.strip_suffix(" in") {
            (k.trim(), false)
        } else {
            return Err(format!("requirement {r:?}: expected `key in (…)` or `key notin (…)`"));
        };
        check_key(k)?;
        let body = r[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("requirement {r:?}: nothing may follow the closing ')'"))?;
        let mut vs = BTreeSet::new();
        for v in body.split(',') {
            let v = v.trim();
            check_value(v)?;
            vs.insert(v.to_string());
        }
        return Ok(if negate { Requirement::NotIn(k.to_string(), vs) } else { Requirement::In(k.to_string(), vs) });
    }
    if r.contains(['<', '>']) {
        return Err(format!("requirement {r:?}: the numeric operators < and > are not supported"));
    }
    check_key(r)?;
    Ok(Requirement::Exists(r.to_string()))
}

/// A label name part or value: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.`
/// between.
fn name_problem(s: &str) -> Option<&'static str> {
    if s.len() > 63 {
        return Some("is longer than 63 characters");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Some("may contain only letters, digits, '-', '_' and '.'");
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("empty label key".into());
    }
    let name = match k.split_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| super::dns_label_problem(l).is_none());
            if !ok {
                return Err(format!("label key {k:?}: prefix {prefix:?} is not a DNS subdomain"));
            }
            name
        }
        None => k,
    };
    if name.is_empty() {
        return Err(format!("label key {k:?}: empty name"));
    }
    match name_problem(name) {
        Some(p) => Err(format!("label key {k:?}: name {name:?} {p}")),
        None => Ok(()),
    }
}

fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    match name_problem(v) {
        Some(p) => Err(format!("label value {v:?} {p}")),
        None => Ok(()),
    }
}

/// A namespace name or glob: `*` any run of characters, `?` one character; otherwise the
/// characters of a namespace name (lower-case letters, digits, `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceGlob(String);

impl NamespaceGlob {
    /// Validate a pattern.
    pub fn new(s: &str) -> Result<NamespaceGlob, String> {
        if s.is_empty() {
            return Err("empty namespace pattern".into());
        }
        if s.len() > 63 {
            return Err(format!("namespace pattern {s:?} is longer than 63 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*' || b == b'?') {
            return Err(format!(
                "namespace pattern {s:?} may contain only lower-case letters, digits, '-' and the wildcards '*' and '?'"
            ));
        }
        Ok(NamespaceGlob(s.to_string()))
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_literal(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    /// Whether `ns` matches.
    pub fn matches(&self, ns: &str) -> bool {
        glob_match(&self.0, ns)
    }

    /// Whether every namespace `other` matches is matched by `self` (sufficient test: the same
    /// pattern, `*`, a literal `other` this matches, or a `prefix*` that `other` starts with).
    pub fn covers(&self, other: &NamespaceGlob) -> bool {
        if self.0 == other.0 || self.0 == "*" || (other.is_literal() && self.matches(&other.0)) {
            return true;
        }
        match self.0.strip_suffix('*') {
            Some(prefix) if !prefix.contains(['*', '?']) => other.0.starts_with(prefix),
            _ => false,
        }
    }
}

impl fmt::Display for NamespaceGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` matches `pattern`: `*` any run of bytes, `?` one, everything else literal
/// (namespace globs here, `driftguard events` filters). Names are ASCII.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    glob(pattern.as_bytes(), s.as_bytes())
}

/// Glob match with `*` and `?` (iterative, with backtracking to the last `*`).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_operator() {
        let pod = labels(&[("app", "web"), ("tier", "front"), ("example.com/team", "pay")]);
        let m = |s: &str| Selector::parse(s).unwrap().matches(&pod);
        assert!(m("app"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("app=web") && m("app==web") && m("app = web"));
        assert!(!m("app=db"));
        assert!(m("app!=db") && !m("app!=web"));
        assert!(m("missing!=x"), "!= matches a pod without the key");
        assert!(m("tier in (front, back)") && !m("tier in (back)"));
        assert!(!m("missing in (x)"));
        assert!(m("tier notin (back)") && !m("tier notin (front,back)"));
        assert!(m("missing notin (x)"), "notin matches a pod without the key");
        assert!(m("example.com/team=pay, app in (web,api), !canary"));
        assert!(!m("example.com/team=pay,app in (db)"));
        assert!(!m("app="));
        assert!(Selector::parse("app=").unwrap().matches(&labels(&[("app", "")])));
    }

    #[test]
    fn equality_and_set_forms_are_one_requirement() {
        assert_eq!(Selector::parse("a=b").unwrap(), Selector::parse("a in (b)").unwrap());
        assert_eq!(Selector::parse("a!=b").unwrap(), Selector::parse("a notin (b)").unwrap());
        assert_eq!(Selector::parse("x, a==b").unwrap(), Selector::parse("a = b,x,x").unwrap());
        assert_eq!(Selector::parse("a in (c,b), !d").unwrap().to_string(), "!d, a in (b, c)");
    }

    #[test]
    fn implication() {
        let s = |x: &str| Selector::parse(x).unwrap();
        assert!(s("a=b, c").implies(&s("a=b")));
        assert!(!s("a=b").implies(&s("a=b, c")));
        assert!(s("a in (b)").implies(&s("a=b")));
    }

    #[test]
    fn bad_selectors() {
        for (bad, want) in [
            ("", "empty selector"),
            ("a=b,", "empty requirement"),
            ("a in (b", "'(' without ')'"),
            ("a in b)", "')' without '('"),
            ("a in ((b))", "nested '('"),
            ("a within (b)", "expected `key in (…)`"),
            ("a in (b) x", "nothing may follow"),
            ("a>1", "not supported"),
            ("-a", "must start and end"),
            ("a b", "may contain only"),
            ("a=b c", "label value \"b c\""),
            ("/a", "prefix \"\" is not a DNS subdomain"),
            ("Ex_ample.com/a", "is not a DNS subdomain"),
            ("x/", "empty name"),
            ("a in (b,,c)", ""),
        ] {
            let r = Selector::parse(bad);
            if want.is_empty() {
                // an empty value inside a set is a value ("")
                assert!(r.is_ok(), "{bad}: {r:?}");
                continue;
            }
            let e = r.unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(Selector::parse(&"a".repeat(64)).unwrap_err().contains("longer than 63"));
    }

    #[test]
    fn namespace_globs() {
        let g = |s: &str| NamespaceGlob::new(s).unwrap();
        assert!(g("payments").matches("payments") && !g("payments").matches("payments-eu"));
        assert!(g("payments-*").matches("payments-eu") && !g("payments-*").matches("payments"));
        assert!(g("*").matches("anything") && g("team-?").matches("team-a") && !g("team-?").matches("team-ab"));
        assert!(g("*-prod").matches("shop-prod") && !g("*-prod").matches("shop-dev"));
        assert!(g("a*b*c").matches("axxbyyc") && !g("a*b*c").matches("axxbyy"));
        for (bad, want) in [("", "empty"), ("Pay", "lower-case"), ("a/b", "lower-case"), ("[a]", "wildcards")] {
            assert!(NamespaceGlob::new(bad).unwrap_err().contains(want), "{bad}");
        }
        assert!(g("*").covers(&g("a-*")) && g("a-*").covers(&g("a-b")) && g("a-*").covers(&g("a-b*")));
        assert!(g("a").covers(&g("a")) && !g("a").covers(&g("a*")) && !g("a-b*").covers(&g("a-*")));
        assert!(g("?").covers(&g("a")) && !g("?").covers(&g("ab")) && !g("*x").covers(&g("a*x")));
    }
}
