//! Which events `driftguard events` shows: `--namespace`, `--pod`, `--container` (names or
//! globs), `--rule`, `--action`, `--since`, `--until`. Several values of one flag: any of them;
//! several flags: all of them.

use serde_json::Value;

use super::time::{self, Micros};
use driftguard::rules::selector::glob_match as glob;

/// The filters of one `driftguard events` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Pod namespaces (globs).
    pub namespaces: Vec<String>,
    /// Pod names (globs).
    pub pods: Vec<String>,
    /// Container names (globs).
    pub containers: Vec<String>,
    /// Verdict rules (`drift`, …); a notice's or admission's `reason` matches too.
    pub rules: Vec<String>,
    /// Actions (`deny`, `kill`, `alert`, `refused`).
    pub actions: Vec<String>,
    /// Events at or after this time.
    pub since: Option<Micros>,
    /// Events at or before this time.
    pub until: Option<Micros>,
}

/// The values `--rule` accepts: every rule of a verdict, and the reasons of notices and refusals.
pub fn known_rules() -> Vec<&'static str> {
    let mut v: Vec<&str> = driftguard::enforcer::Rule::ALL.iter().map(|r| r.as_str()).collect();
    v.extend(driftguard::node_state::REFUSAL_REASONS);
    v.extend(["rootfs_not_overlay", "unprotected", "policy_kept"]);
    v
}

/// The values `--action` accepts.
pub const KNOWN_ACTIONS: [&str; 4] = ["deny", "kill", "alert", "refused"];

impl Filter {
    /// Check the values against what events can carry (a typo would silently match nothing).
    pub fn validate(&self) -> Result<(), String> {
        let rules = known_rules();
        if let Some(r) = self.rules.iter().find(|r| !rules.contains(&r.as_str())) {
            return Err(format!("--rule {r:?}: expected one of {}", rules.join(", ")));
        }
        if let Some(a) = self.actions.iter().find(|a| !KNOWN_ACTIONS.contains(&a.as_str())) {
            return Err(format!("--action {a:?}: expected one of {}", KNOWN_ACTIONS.join(", ")));
        }
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s > u {
                return Err("--since is after --until: no event can match".into());
            }
        }
        Ok(())
    }

    /// Whether the event `ev` (one JSON line) passes.
    pub fn matches(&self, ev: &Value) -> bool {
        let field = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
        let any_glob = |pats: &[String], v: &str| pats.is_empty() || pats.iter().any(|p| glob(p, v));
        if !any_glob(&self.namespaces, field("namespace"))
            || !any_glob(&self.pods, field("pod"))
            || !any_glob(&self.containers, field("container"))
        {
            return false;
        }
        // A verdict names its rule; a notice and a refusal their reason.
        let rule = match field("event") {
            "verdict" => field("rule"),
            _ => field("reason"),
        };
        if !self.rules.is_empty() && !self.rules.iter().any(|r| r == rule) {
            return false;
        }
        if !self.actions.is_empty() && !self.actions.iter().any(|a| a == field("action")) {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = time::parse_rfc3339(field("time")) else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict() -> Value {
        json!({"event":"verdict","time":"2026-11-23T22:41:07.123456Z","namespace":"shop","pod":"web-7d9f","container":"app","rule":"drift","action":"deny","path":"/tmp/x"})
    }

    #[test]
    fn each_filter() {
        let v = verdict();
        let f = |f: Filter| f.matches(&v);
        assert!(f(Filter::default()));
        assert!(f(Filter { namespaces: vec!["shop".into()], ..Default::default() }));
        assert!(!f(Filter { namespaces: vec!["payments".into()], ..Default::default() }));
        assert!(f(Filter { namespaces: vec!["payments".into(), "sh*".into()], ..Default::default() }), "any of");
        assert!(f(Filter { pods: vec!["web-*".into()], ..Default::default() }));
        assert!(!f(Filter { pods: vec!["web".into()], ..Default::default() }));
        assert!(f(Filter { containers: vec!["a?p".into()], ..Default::default() }));
        assert!(!f(Filter { containers: vec!["db".into()], ..Default::default() }));
        assert!(f(Filter { rules: vec!["drift".into()], ..Default::default() }));
        assert!(!f(Filter { rules: vec!["fileless".into()], ..Default::default() }));
        assert!(f(Filter { actions: vec!["kill".into(), "deny".into()], ..Default::default() }));
        assert!(!f(Filter { actions: vec!["alert".into()], ..Default::default() }));
        let t = time::parse_rfc3339("2026-11-23T22:41:07.123456Z").unwrap();
        assert!(f(Filter { since: Some(t), until: Some(t), ..Default::default() }), "bounds are inclusive");
        assert!(!f(Filter { since: Some(t + 1), ..Default::default() }));
        assert!(!f(Filter { until: Some(t - 1), ..Default::default() }));
        // all flags together
        assert!(!f(Filter { namespaces: vec!["shop".into()], rules: vec!["fileless".into()], ..Default::default() }));
        // an event without a time does not pass a time filter
        assert!(!Filter { since: Some(0), ..Default::default() }.matches(&json!({"event":"verdict"})));
    }

    #[test]
    fn notices_and_refusals_match_by_reason() {
        let n = json!({"event":"notice","namespace":"shop","reason":"policy_kept"});
        assert!(Filter { rules: vec!["policy_kept".into()], ..Default::default() }.matches(&n));
        assert!(!Filter { actions: vec!["deny".into()], ..Default::default() }.matches(&n));
        let r = json!({"event":"admission","action":"refused","reason":"forbidden_weakening","rule":"payments"});
        assert!(Filter { actions: vec!["refused".into()], ..Default::default() }.matches(&r));
        assert!(Filter { rules: vec!["forbidden_weakening".into()], ..Default::default() }.matches(&r));
    }

    #[test]
    fn typos_are_errors() {
        let e = Filter { rules: vec!["drfit".into()], ..Default::default() }.validate().unwrap_err();
        assert!(e.starts_with("--rule \"drfit\": expected one of deny_list, drift,"), "{e}");
        let e = Filter { actions: vec!["denied".into()], ..Default::default() }.validate().unwrap_err();
        assert_eq!(e, "--action \"denied\": expected one of deny, kill, alert, refused");
        assert!(Filter { since: Some(2), until: Some(1), ..Default::default() }.validate().is_err());
        assert!(Filter { rules: vec!["exec_memory".into(), "policy_kept".into()], ..Default::default() }
            .validate()
            .is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob("*", "") && glob("a*", "abc") && glob("*c", "abc") && glob("a?c", "abc"));
        assert!(!glob("a?c", "ac") && !glob("b*", "abc") && glob("a*b*c", "aXbYc"));
    }
}
