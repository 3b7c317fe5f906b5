//! The keys of `driftguard.dev/` annotations and their values: which keys exist (with their
//! per-container form), how each value is parsed, and why a value is refused.
use super::*;

/// The annotation keys (the part after [`PREFIX`], without a container suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `mode`: off | monitor | enforce.
    Mode,
    /// `allow`: comma-separated paths.
    Allow,
    /// `deny`: comma-separated paths.
    Deny,
    /// `drift`: true | false.
    Drift,
    /// `fileless`: true | false.
    Fileless,
    /// `non-overlay`: the name `non-image` had before 0.2 (deprecated alias, same meaning now:
    /// see docs/annotations.md#migration). Declared before `NonImage` so that, at one level,
    /// `non-image` wins.
    NonOverlay,
    /// `non-image`: true | false.
    NonImage,
    /// `exec-volumes`: comma-separated mount points of volumes exempt from `non-image`.
    ExecVolumes,
    /// `allowlist-only`: true | false.
    AllowlistOnly,
    /// `exec-memory`: true | false (false: the JIT opt-out).
    ExecMemory,
    /// `process-access`: true | false (false: the debug opt-out).
    ProcessAccess,
    /// `failure-policy`: fail | ignore.
    FailurePolicy,
}

impl Key {
    /// Every key.
    pub const ALL: [Key; 12] = [
        Key::Mode,
        Key::Allow,
        Key::Deny,
        Key::Drift,
        Key::Fileless,
        Key::NonOverlay,
        Key::NonImage,
        Key::ExecVolumes,
        Key::AllowlistOnly,
        Key::ExecMemory,
        Key::ProcessAccess,
        Key::FailurePolicy,
    ];

    /// The key's name after the prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Mode => "mode",
            Key::Allow => "allow",
            Key::Deny => "deny",
            Key::Drift => "drift",
            Key::Fileless => "fileless",
            Key::NonImage => "non-image",
            Key::NonOverlay => "non-overlay",
            Key::ExecVolumes => "exec-volumes",
            Key::AllowlistOnly => "allowlist-only",
            Key::ExecMemory => "exec-memory",
            Key::ProcessAccess => "process-access",
            Key::FailurePolicy => "failure-policy",
        }
    }

    /// The key named `s` (after the prefix), if there is one.
    pub fn from_name(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with an annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `mode` is not off, monitor or enforce.
    #[error(transparent)]
    Mode(PolicyError),
    /// A boolean key is not `true` or `false`.
    #[error("invalid boolean {0:?}: expected true or false")]
    Bool(String),
    /// `failure-policy` is not fail or ignore.
    #[error(transparent)]
    FailurePolicy(BadFailurePolicy),
    /// A list has an empty entry (`/a,,/b`, a trailing comma, ...).
    #[error("entry {index} of the list is empty (entries are separated by ',')")]
    EmptyListEntry {
        /// 1-based position of the entry.
        index: usize,
    },
    /// A list entry is not a valid path.
    #[error("entry {index} of the list: {error}")]
    Path {
        /// 1-based position of the entry.
        index: usize,
        /// Why the path is invalid.
        error: PolicyError,
    },
}

/// A parsed annotation value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `mode`.
    Mode(Mode),
    /// A path list.
    Paths(BTreeSet<ExecPath>),
    /// A boolean key.
    Bool(bool),
    /// `failure-policy`.
    FailurePolicy(FailurePolicy),
}

/// One setting and the annotation it came from.
#[derive(Clone, Debug)]
pub(super) struct Setting {
    pub(super) value: Value,
    pub(super) key: String,
    pub(super) raw: String,
}

/// Parse the value of `key` as given in an annotation (or a node policy rule).
pub fn parse_value(key: Key, raw: &str) -> Result<Value, ValueError> {
    let s = raw.trim();
    match key {
        Key::Mode => s.parse::<Mode>().map(Value::Mode).map_err(ValueError::Mode),
        Key::FailurePolicy => s.parse::<FailurePolicy>().map(Value::FailurePolicy).map_err(ValueError::FailurePolicy),
        Key::Drift
        | Key::Fileless
        | Key::NonImage
        | Key::NonOverlay
        | Key::AllowlistOnly
        | Key::ExecMemory
        | Key::ProcessAccess => match s {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(ValueError::Bool(other.to_string())),
        },
        Key::Allow | Key::Deny | Key::ExecVolumes => parse_paths(s).map(Value::Paths),
    }
}

/// Parse a comma-separated path list. An empty (or all-whitespace) value is the empty
/// list; otherwise every entry must be a non-empty valid [`ExecPath`].
pub(super) fn parse_paths(s: &str) -> Result<BTreeSet<ExecPath>, ValueError> {
    let mut set = BTreeSet::new();
    if s.trim().is_empty() {
        return Ok(set);
    }
    for (i, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(ValueError::EmptyListEntry { index: i + 1 });
        }
        let p = ExecPath::new(entry).map_err(|error| ValueError::Path { index: i + 1, error })?;
        set.insert(p);
    }
    Ok(set)
}

/// Why `s` is not a DNS-1123 label (a valid Kubernetes container name), if it is not.
pub fn dns_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("is empty");
    }
    if s.len() > 63 {
        return Some("is longer than 63 characters");
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some("may contain only lower-case letters, digits and '-' (a DNS-1123 label)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit (a DNS-1123 label)");
    }
    None
}
