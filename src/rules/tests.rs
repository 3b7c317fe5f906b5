use super::*;
use crate::annotations::FailurePolicy;
use crate::policy::{ExecMemory, ExecPath};

fn rule(toml_text: &str) -> Result<Rule, String> {
    let raw: RawRule = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    Rule::new(raw)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn node(rules: &[&str]) -> NodePolicy {
    NodePolicy { rules: rules.iter().map(|r| rule(r).unwrap()).collect(), ..NodePolicy::default() }
}

const PAYMENTS: &str = "name = \"payments\"\nnamespaces = [\"payments\", \"payments-*\"]\nmode = \"enforce\"";
const FRONT: &str = "name = \"front\"\nselector = \"tier in (front), !canary\"\nmode = \"monitor\"";

#[test]
fn first_match_wins() {
    let n = node(&[PAYMENTS, FRONT, "name = \"all\"\nmode = \"monitor\"\nnamespaces = [\"*\"]"]);
    let front = labels(&[("tier", "front")]);
    let canary = labels(&[("tier", "front"), ("canary", "")]);
    let none = labels(&[]);
    let base = |ns: &str, l: &BTreeMap<String, String>| {
        let (p, s) = n.base(&Pod { namespace: Some(ns), labels: Some(l) });
        (p.policy.mode, s.to_string())
    };
    assert_eq!(base("payments", &front), (Mode::Enforce, "rule:payments".into()), "earlier rule first");
    assert_eq!(base("payments-eu", &none), (Mode::Enforce, "rule:payments".into()));
    assert_eq!(base("shop", &front), (Mode::Monitor, "rule:front".into()));
    assert_eq!(base("shop", &canary), (Mode::Monitor, "rule:all".into()));
    assert_eq!(base("payments2", &none), (Mode::Monitor, "rule:all".into()));
    // no namespace (podman): namespace rules cannot match, selector rules can
    let (p, s) = n.base(&Pod { namespace: None, labels: Some(&front) });
    assert_eq!((p.policy.mode, s), (Mode::Monitor, PolicySource::Rule("front".into())));
    let (p, s) = node(&[PAYMENTS]).base(&Pod { namespace: None, labels: Some(&none) });
    assert_eq!((p.policy.mode, s), (Mode::Off, PolicySource::Default));
}

#[test]
fn exclusions_come_first_and_can_be_turned_off() {
    let mut n = node(&["name = \"all\"\nmode = \"enforce\""]);
    n.defaults.mode = Mode::Enforce;
    let l = labels(&[]);
    let at = |n: &NodePolicy, ns: &str| {
        let (p, s) = n.base(&Pod { namespace: Some(ns), labels: Some(&l) });
        (p.policy.mode, s.to_string())
    };
    assert_eq!(at(&n, "kube-system"), (Mode::Off, "exclusion:kube-system".into()));
    assert_eq!(at(&n, "driftguard-system"), (Mode::Off, "exclusion:driftguard-system".into()));
    assert_eq!(at(&n, "kube-public"), (Mode::Enforce, "rule:all".into()));
    n.exclusions = Exclusions { kube_system: false, own_namespace: String::new() };
    assert_eq!(at(&n, "kube-system"), (Mode::Enforce, "rule:all".into()));
    assert_eq!(at(&n, "driftguard-system"), (Mode::Enforce, "rule:all".into()));
    n.exclusions.own_namespace = "security".into();
    assert_eq!(at(&n, "security"), (Mode::Off, "exclusion:security".into()));
    assert!(Exclusions { kube_system: true, own_namespace: "Bad_ns".into() }.validate().is_err());
}

#[test]
fn annotations_refine_the_rule() {
    let n = node(&["name = \"p\"\nnamespaces = [\"p\"]\nmode = \"enforce\"\n[defaults]\nexec-memory = false\nallow = [\"/usr/bin/curl\"]"]);
    let l = labels(&[]);
    let pod = Pod { namespace: Some("p"), labels: Some(&l) };
    let none: [(&str, &str); 0] = [];
    let r = n.resolve(&pod, none, "app", none).unwrap();
    assert_eq!(r.source, PolicySource::Rule("p".into()));
    assert_eq!(r.policy.policy.mode, Mode::Enforce);
    assert_eq!(r.policy.policy.rules.exec_memory, ExecMemory::Jit);
    assert!(r.policy.policy.allow.contains(&ExecPath::new("/usr/bin/curl").unwrap()));
    // an annotation that does not set the mode keeps the rule as the source
    let r = n.resolve(&pod, [("driftguard.dev/exec-memory", "true")], "app", none).unwrap();
    assert_eq!((r.source.clone(), r.policy.policy.rules.exec_memory), (PolicySource::Rule("p".into()), ExecMemory::On));
    // a mode annotation sets the mode: the source is the annotation
    let r = n.resolve(&pod, [("driftguard.dev/mode.app", "monitor")], "app", none).unwrap();
    assert_eq!((r.source, r.policy.policy.mode), (PolicySource::Annotation, Mode::Monitor));
    // another container's override does not count
    let r = n.resolve(&pod, [("driftguard.dev/mode.db", "off")], "app", none).unwrap();
    assert_eq!(r.source, PolicySource::Rule("p".into()));
    // and a conflict between the rule's list and an annotation's names the annotation
    let e = n.resolve(&pod, [("driftguard.dev/deny", "/usr/bin/curl")], "app", none).unwrap_err().to_string();
    assert!(e.contains("driftguard.dev/deny") && e.contains("both the allow and the deny list"), "{e}");
    // outside the rule: the default, and mode annotations opt in as before
    let other = Pod { namespace: Some("q"), labels: Some(&l) };
    assert_eq!(n.resolve(&other, none, "app", none).unwrap().source, PolicySource::Default);
    assert!(!n.may_apply(&other, none));
    assert!(n.may_apply(&pod, none));
    assert!(n.may_apply(&other, [("driftguard.dev/mode", "monitor")]));
}

#[test]
fn failure_policy_is_the_nodes_unless_the_rule_sets_it() {
    let mut n = node(&[
        "name = \"a\"\nnamespaces = [\"a\"]\nmode = \"enforce\"",
        "name = \"b\"\nnamespaces = [\"b\"]\nmode = \"enforce\"\n[defaults]\nfailure-policy = \"fail\"",
    ]);
    n.defaults.failure_policy = FailurePolicy::Ignore;
    let l = labels(&[]);
    assert_eq!(n.base(&Pod { namespace: Some("a"), labels: Some(&l) }).0.failure_policy, FailurePolicy::Ignore);
    assert_eq!(n.base(&Pod { namespace: Some("b"), labels: Some(&l) }).0.failure_policy, FailurePolicy::Fail);
}

#[test]
fn unknown_labels_take_the_strictest_rule_that_could_apply() {
    let n = node(&[
        "name = \"canary\"\nnamespaces = [\"shop\"]\nselector = \"canary\"\nmode = \"monitor\"",
        "name = \"front\"\nnamespaces = [\"shop\"]\nselector = \"tier=front\"\nmode = \"enforce\"",
        "name = \"shop\"\nnamespaces = [\"shop\"]\nmode = \"monitor\"",
        "name = \"late\"\nselector = \"x\"\nmode = \"enforce\"",
    ]);
    let hook = |ns: &str| {
        let (p, s) = n.base(&Pod { namespace: Some(ns), labels: None });
        (p.policy.mode, s.to_string())
    };
    // candidates canary, front (maybe) and shop (surely): front is strictest; "late" comes
    // after the sure match and cannot apply
    assert_eq!(hook("shop"), (Mode::Enforce, "rule:front".into()));
    // elsewhere: only "late" may match, stricter than the default off
    assert_eq!(hook("other"), (Mode::Enforce, "rule:late".into()));
    let n2 = node(&[
        "name = \"m\"\nselector = \"x\"\nmode = \"monitor\"",
        "name = \"s\"\nnamespaces = [\"a\"]\nmode = \"enforce\"",
    ]);
    let (p, s) = n2.base(&Pod { namespace: Some("a"), labels: None });
    assert_eq!((p.policy.mode, s), (Mode::Enforce, PolicySource::Rule("s".into())), "a sure stricter match wins");
    // with the labels known the same pods get their real rule
    let l = labels(&[]);
    assert_eq!(n.base(&Pod { namespace: Some("shop"), labels: Some(&l) }).1, PolicySource::Rule("shop".into()));
}

#[test]
fn invalid_rules_name_the_rule() {
    for (text, want) in [
        ("name = \"Pay\"\nmode = \"enforce\"", "invalid rule name \"Pay\""),
        ("name = \"p\"\nmode = \"enforcing\"", "rule \"p\": invalid mode \"enforcing\""),
        ("name = \"p\"\nmode = \"enforce\"\nnamespaces = []", "rule \"p\": `namespaces` is empty"),
        ("name = \"p\"\nmode = \"enforce\"\nnamespaces = [\"Pay*\"]", "rule \"p\": namespace pattern \"Pay*\""),
        ("name = \"p\"\nmode = \"enforce\"\nselector = \"a in (b\"", "rule \"p\": selector: '(' without ')'"),
        ("name = \"p\"\nmode = \"enforce\"\n[defaults]\nmdoe = \"x\"", "rule \"p\": unknown key \"mdoe\" in defaults"),
        ("name = \"p\"\nmode = \"enforce\"\n[defaults]\nmode = \"off\"", "`mode` belongs to the rule itself"),
        (
            "name = \"p\"\nmode = \"enforce\"\n[defaults]\ndrift = \"yes\"",
            "rule \"p\": defaults.drift: invalid boolean \"yes\"",
        ),
        (
            "name = \"p\"\nmode = \"enforce\"\n[defaults]\nallow = [\"/a\"]\ndeny = \"/a\"",
            "rule \"p\": defaults: path \"/a\" is on both",
        ),
        (
            "name = \"p\"\nmode = \"enforce\"\n[defaults]\nexec-volumes = \"/dev\"",
            "rule \"p\": defaults: \"/dev\" is a mount",
        ),
    ] {
        let e = rule(text).unwrap_err();
        assert!(e.contains(want), "{text}:\n{e}\nwant {want}");
    }
}

#[test]
fn shadowed_rules_are_refused() {
    let check = |rules: &[&str]| node(rules).check().map_err(|e| e.to_string());
    assert!(check(&[PAYMENTS, FRONT]).is_ok());
    let e = check(&[PAYMENTS, "name = \"eu\"\nnamespaces = [\"payments-eu\"]\nmode = \"monitor\""]).unwrap_err();
    assert!(
        e.starts_with("rule \"eu\" never applies: every pod it matches is matched first by rule \"payments\""),
        "{e}"
    );
    let e = check(&[FRONT, "name = \"f2\"\nselector = \"tier=front, !canary, x\"\nmode = \"enforce\""]).unwrap_err();
    assert!(e.contains("by rule \"front\""), "{e}");
    let e = check(&["name = \"all\"\nmode = \"monitor\"", FRONT]).unwrap_err();
    assert!(e.contains("rule \"front\" never applies") && e.contains("rule \"all\""), "{e}");
    // narrower earlier rules do not shadow
    assert!(check(&[FRONT, "name = \"t\"\nselector = \"tier=front\"\nmode = \"enforce\""]).is_ok());
    assert!(check(&[PAYMENTS, "name = \"p2\"\nnamespaces = [\"payments\", \"shop\"]\nmode = \"monitor\""]).is_ok());
    let e = check(&[PAYMENTS, "name = \"payments\"\nnamespaces = [\"x\"]\nmode = \"monitor\""]).unwrap_err();
    assert!(e.contains("the earlier rule of the same name"), "{e}");
    // an exclusion shadows a rule only for the excluded namespaces
    let e = check(&["name = \"ks\"\nnamespaces = [\"kube-system\"]\nmode = \"monitor\""]).unwrap_err();
    assert!(e.contains("the exclusion of namespace \"kube-system\"") && e.contains("kube_system = false"), "{e}");
    let e = check(&["name = \"own\"\nnamespaces = [\"driftguard-system\"]\nmode = \"monitor\""]).unwrap_err();
    assert!(e.contains("own_namespace = \"\""), "{e}");
    assert!(check(&["name = \"k\"\nnamespaces = [\"kube-*\"]\nmode = \"monitor\""]).is_ok());
    let mut n = node(&["name = \"ks\"\nnamespaces = [\"kube-system\"]\nmode = \"monitor\""]);
    n.exclusions.kube_system = false;
    assert!(n.check().is_ok());
}

#[test]
fn policy_source_strings() {
    for s in [
        PolicySource::Default,
        PolicySource::Annotation,
        PolicySource::Rule("payments".into()),
        PolicySource::Exclusion("kube-system".into()),
    ] {
        let text = s.to_string();
        assert_eq!(PolicySource::try_from(text.clone()).unwrap(), s);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{text}\""));
    }
    assert!(PolicySource::try_from("x".to_string()).is_err());
}

const GUARDED: &str = "name = \"payments\"\nnamespaces = [\"payments\"]\nmode = \"enforce\"\nforbid_weakening = true\n[defaults]\nallow = [\"/usr/bin/curl\"]\ndeny = [\"/usr/bin/nc\"]\nexec-volumes = [\"/data\"]";

#[test]
fn forbid_weakening_refuses_each_kind_and_names_rule_and_annotation() {
    let n = node(&[GUARDED]);
    let l = labels(&[]);
    let pod = Pod { namespace: Some("payments"), labels: Some(&l) };
    let none: [(&str, &str); 0] = [];
    for (key, value, want) in [
        ("driftguard.dev/mode", "off", "lowers the mode from enforce to off"),
        ("driftguard.dev/mode.app", "monitor", "lowers the mode from enforce to monitor"),
        ("driftguard.dev/drift", "false", "turns the drift rule off"),
        ("driftguard.dev/fileless", "false", "turns the fileless rule off"),
        ("driftguard.dev/non-image", "false", "turns the non-image rule off"),
        ("driftguard.dev/non-overlay", "false", "turns the non-image rule off"),
        ("driftguard.dev/exec-memory", "false", "the JIT opt-out"),
        ("driftguard.dev/process-access", "false", "the debug opt-out"),
        ("driftguard.dev/allow", "/usr/bin/curl,/bin/wget", "adds /bin/wget to the allow list"),
        ("driftguard.dev/deny", "", "removes /usr/bin/nc from the deny list"),
        ("driftguard.dev/exec-volumes", "/data,/scratch", "exempts the volume /scratch"),
        ("driftguard.dev/failure-policy", "ignore", "failure-policy ignore"),
    ] {
        let e = n.resolve(&pod, [(key, value)], "app", none).unwrap_err();
        assert!(
            matches!(&e, AnnotationError::Forbidden { rule, key: k, .. } if rule == "payments" && k == key),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("annotation {key:?} = {value:?}: forbidden by rule \"payments\""))
                && text.contains(want),
            "{key}: {text}"
        );
    }
    // the same, set in the container's own annotations
    let e = n.resolve(&pod, none, "app", [("driftguard.dev/mode", "off")]).unwrap_err();
    assert!(matches!(e, AnnotationError::Forbidden { .. }));
    // stronger or equal is fine, and keeps the rule as the source unless the mode changed
    for (key, value) in [
        ("driftguard.dev/mode", "enforce"),
        ("driftguard.dev/allowlist-only", "true"),
        ("driftguard.dev/deny", "/usr/bin/nc,/bin/sh"),
        ("driftguard.dev/allow", ""),
        ("driftguard.dev/exec-volumes", ""),
        ("driftguard.dev/mode.other", "off"),
    ] {
        let r = n.resolve(&pod, [(key, value)], "app", none).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(r.policy.policy.mode, Mode::Enforce, "{key}");
    }
    // without forbid_weakening the same annotations are allowed
    let open = node(&[&GUARDED.replace("forbid_weakening = true\n", "")]);
    assert_eq!(
        open.resolve(&pod, [("driftguard.dev/mode", "off")], "app", none).unwrap().policy.policy.mode,
        Mode::Off
    );
    // and outside the rule they are too
    let other = Pod { namespace: Some("shop"), labels: Some(&l) };
    assert!(n.resolve(&other, [("driftguard.dev/mode", "off")], "app", none).is_ok());
}

#[test]
fn forbid_weakening_of_a_rule_that_only_may_apply_keeps_the_stricter_value() {
    let n = node(&["name = \"canary\"\nselector = \"track=canary\"\nmode = \"enforce\"\nforbid_weakening = true\n[defaults]\ndeny = \"/usr/bin/nc\""]);
    let none: [(&str, &str); 0] = [];
    let hook = Pod { namespace: Some("shop"), labels: None };
    let ann =
        [("driftguard.dev/mode", "off"), ("driftguard.dev/exec-memory", "false"), ("driftguard.dev/deny", "/bin/sh")];
    let r = n.resolve(&hook, ann, "app", none).unwrap();
    assert_eq!(r.policy.policy.mode, Mode::Enforce);
    assert_eq!(r.policy.policy.rules.exec_memory, ExecMemory::On);
    let deny: Vec<&str> = r.policy.policy.deny.iter().map(|p| p.as_str()).collect();
    assert_eq!(deny, ["/bin/sh", "/usr/bin/nc"], "the annotation's stricter entries stay");
    assert_eq!(r.source, PolicySource::Rule("canary".into()), "the undone mode annotation did not set the mode");
    // with the labels known: refused when it applies, allowed when it does not
    let canary = labels(&[("track", "canary")]);
    let stable = labels(&[("track", "stable")]);
    assert!(n.resolve(&Pod { namespace: Some("shop"), labels: Some(&canary) }, ann, "app", none).is_err());
    let r = n.resolve(&Pod { namespace: Some("shop"), labels: Some(&stable) }, ann, "app", none).unwrap();
    assert_eq!((r.policy.policy.mode, r.source), (Mode::Off, PolicySource::Annotation));
}
