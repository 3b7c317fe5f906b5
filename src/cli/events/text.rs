//! `--output text`: one aligned line per event, no colour.
//!
//! `TIME  ACTION  RULE  NAMESPACE/POD/CONTAINER  WORKLOAD  DETAIL`, where ACTION is the
//! verdict's action, `notice`, or `refused`; RULE the verdict's rule or the notice's/refusal's
//! reason; WORKLOAD `kind/name` when the event has one; DETAIL the path of a verdict, then its
//! command line (`$ args…`, an argument with a space quoted, `…` when cut), its parent process
//! (`parent comm[pid] exe`) and target; the message of a notice, the key and rule of a refusal.

use serde_json::Value;

/// The header line.
pub fn header() -> String {
    row("TIME", "ACTION", "RULE", "NAMESPACE/POD/CONTAINER", "WORKLOAD", "DETAIL")
}

fn row(time: &str, action: &str, rule: &str, who: &str, workload: &str, detail: &str) -> String {
    format!("{time:<20}  {action:<7}  {rule:<19}  {who:<40}  {workload:<24}  {detail}").trim_end().to_string()
}

/// One event as a line.
pub fn line(ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    let or_dash = |v: String| if v.is_empty() { "-".to_string() } else { v };
    // Seconds are enough to read; the JSON has microseconds.
    let time = match s("time") {
        t if t.len() >= 19 => format!("{}Z", &t[..19]),
        t => t.to_string(),
    };
    let who = if s("pod").is_empty() && s("namespace").is_empty() {
        "-".to_string()
    } else {
        format!("{}/{}/{}", s("namespace"), s("pod"), s("container"))
    };
    let workload = match ev.get("workload") {
        Some(w) => or_dash(format!(
            "{}/{}",
            w.get("kind").and_then(Value::as_str).unwrap_or(""),
            w.get("name").and_then(Value::as_str).unwrap_or("")
        ))
        .replace("unknown/", "?/"),
        None => "-".into(),
    };
    match s("event") {
        "verdict" => {
            let mut detail = or_dash(s("path").to_string());
            if let Some(args) = ev.get("args").and_then(Value::as_array) {
                let words: Vec<String> = args
                    .iter()
                    .map(|a| a.as_str().unwrap_or(""))
                    .map(|a| if a.is_empty() || a.contains([' ', '\t']) { format!("{a:?}") } else { a.to_string() })
                    .collect();
                let cut = if ev.get("args_truncated") == Some(&Value::Bool(true)) { "…" } else { "" };
                detail.push_str(&format!("  $ {}{cut}", words.join(" ")));
            }
            if let Some(p) = ev.get("parent") {
                let comm = p.get("comm").and_then(Value::as_str).unwrap_or("");
                let pid = p.get("pid").and_then(Value::as_u64).unwrap_or(0);
                detail.push_str(&format!("  parent {comm}[{pid}]"));
                if let Some(exe) = p.get("exe").and_then(Value::as_str).filter(|e| !e.is_empty()) {
                    detail.push_str(&format!(" {exe}"));
                }
            }
            if let Some(t) = ev.get("target") {
                let comm = t.get("comm").and_then(Value::as_str).unwrap_or("");
                let pid = t.get("pid").and_then(Value::as_u64).unwrap_or(0);
                detail.push_str(&format!("  target {comm}[{pid}]"));
            }
            if let Some(n) = ev.get("count").and_then(Value::as_u64) {
                detail.push_str(&format!("  ({n} checks)"));
            }
            row(&time, s("action"), s("rule"), &who, &workload, &detail)
        }
        "notice" => row(&time, "notice", s("reason"), &who, &workload, s("message")),
        "admission" => {
            let detail = match (s("key"), s("rule")) {
                ("", "") => s("message").to_string(),
                (k, "") => format!("{k}  by {}", s("source")),
                (k, r) => format!("{k}  rule {r}  by {}", s("source")),
            };
            row(&time, s("action"), s("reason"), &who, &workload, &detail)
        }
        other => row(&time, other, "", &who, &workload, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_on_one_aligned_line() {
        let v = json!({"event":"verdict","time":"2026-11-23T22:41:07.123456Z","namespace":"shop","pod":"web-7d9f","container":"app","rule":"drift","action":"deny","path":"/tmp/xmrig"});
        let l = line(&v);
        assert_eq!(
            l,
            "2026-11-23T22:41:07Z  deny     drift                shop/web-7d9f/app                         -                         /tmp/xmrig"
        );
        let h = header();
        // the columns line up with the header
        for col in ["ACTION", "RULE", "NAMESPACE/POD/CONTAINER", "WORKLOAD", "DETAIL"] {
            let at = h.find(col).unwrap();
            assert_ne!(l.as_bytes()[at], b' ', "{col} starts a value");
            assert_eq!(l.as_bytes()[at - 1], b' ', "{col} follows a gap");
        }
        let v = json!({"event":"verdict","time":"2026-11-23T22:41:07.1Z","namespace":"shop","pod":"p","container":"c","rule":"exec_memory","action":"alert","path":"","count":3,
                       "workload":{"kind":"Deployment","name":"web"},"parent":{"pid":7,"comm":"sh"}});
        let l = line(&v);
        assert!(l.contains("Deployment/web") && l.ends_with("-  parent sh[7]  (3 checks)"), "{l}");
        let v = json!({"event":"verdict","time":"2026-11-23T22:41:07.1Z","rule":"drift","action":"kill","path":"/tmp/x",
                       "args":["/tmp/x","-c","two words",""],"args_truncated":true,"parent":{"pid":7,"comm":"sh","exe":"/bin/busybox"}});
        let l = line(&v);
        assert!(l.ends_with(r#"/tmp/x  $ /tmp/x -c "two words" ""…  parent sh[7] /bin/busybox"#), "{l}");
        let n = json!({"event":"notice","time":"2026-11-23T22:41:07Z","namespace":"shop","pod":"p","container":"c","reason":"policy_kept","message":"kept"});
        assert!(line(&n).contains("notice   policy_kept") && line(&n).ends_with("kept"), "{}", line(&n));
        let r = json!({"event":"admission","time":"2026-11-23T22:41:07Z","namespace":"payments","pod":"p","container":"c","action":"refused","source":"oci-hook","reason":"forbidden_weakening","key":"driftguard.dev/mode","rule":"payments"});
        assert!(line(&r).ends_with("driftguard.dev/mode  rule payments  by oci-hook"), "{}", line(&r));
        assert!(!line(&r).contains('\x1b'), "no colour");
    }
}
