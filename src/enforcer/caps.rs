//! What the running kernel lets the BPF programs guarantee. One place for the facts that
//! `driftguard check` prints in its `capabilities` table and the agent states at start
//! ([`super::Enforcer::kernel_limits`]); docs/bpf.md's kernel table lists them per tested kernel.

use std::path::Path;

use libbpf_rs::btf::types::{Composite, Enum};
use libbpf_rs::btf::Btf;

use super::{EnforcementPath, MappingChecks};

/// Module BTF of overlayfs, present when overlay is a module, loaded, and the kernel has
/// `CONFIG_DEBUG_INFO_BTF_MODULES` (5.11+).
const OVERLAY_MODULE_BTF: &str = "/sys/kernel/btf/overlay";

/// Environment variable, for tests only, that makes the programs read overlay's upper dentry at
/// the layout offset even where a BTF describes `struct ovl_inode`: `layout` (the real
/// offset, so the fallback and its proof run on every kernel) or `layout+N` / `layout-N` (N bytes
/// off: a wrong layout, which must fail closed). See docs/bpf.md, "Overlay upper layer".
pub const TEST_OVL_LAYOUT_ENV: &str = "DRIFTGUARD_TEST_OVL_LAYOUT";

/// Where the BPF programs find an overlay inode's upper dentry: `dg_ovl_upper()` in
/// bpf/driftguard.bpf.c, whose CO-RE guard libbpf resolves with the BTF this looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayUpper {
    /// CO-RE relocation against `struct ovl_inode` in the kernel's BTF (overlay built in).
    VmlinuxBtf,
    /// CO-RE relocation against the overlay module's BTF.
    ModuleBtf,
    /// No BTF describes `struct ovl_inode` (5.10 has no module BTF; or overlay was loaded after
    /// the programs): the pointer right after `struct inode`, the layout of 4.19 to 6.18, proved
    /// at start ([`LayoutProof`]) and checked on every read.
    Layout,
    /// The layout read forced by [`TEST_OVL_LAYOUT_ENV`] (tests only), `skew` bytes off.
    ForcedLayout {
        /// Bytes added to the layout offset (0: the real layout).
        skew: i32,
    },
}

impl OverlayUpper {
    /// One line for `driftguard check` and logs.
    pub fn describe(self) -> String {
        match self {
            OverlayUpper::VmlinuxBtf => "CO-RE: struct ovl_inode from the kernel's BTF (overlay built in)".into(),
            OverlayUpper::ModuleBtf => "CO-RE: struct ovl_inode from the overlay module's BTF".into(),
            OverlayUpper::Layout => "no BTF has struct ovl_inode (module BTF needs 5.11 and overlay loaded first): \
                                     the pointer after struct inode, the layout of kernels 4.19 to 6.18"
                .into(),
            OverlayUpper::ForcedLayout { skew } => format!(
                "the pointer after struct inode{}, forced by {TEST_OVL_LAYOUT_ENV} (tests only)",
                if skew == 0 { String::new() } else { format!(" {skew:+} bytes") }
            ),
        }
    }

    /// Whether the programs read the upper dentry at the layout offset (then it is proved at
    /// start and checked on every read).
    pub fn is_layout(self) -> bool {
        matches!(self, OverlayUpper::Layout | OverlayUpper::ForcedLayout { .. })
    }

    /// Bytes the programs add to the layout offset (non-zero only under the test knob).
    pub fn skew(self) -> i32 {
        match self {
            OverlayUpper::ForcedLayout { skew } => skew,
            _ => 0,
        }
    }

    /// Name for metrics: `core_vmlinux`, `core_module`, `layout`, `layout_forced`.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlayUpper::VmlinuxBtf => "core_vmlinux",
            OverlayUpper::ModuleBtf => "core_module",
            OverlayUpper::Layout => "layout",
            OverlayUpper::ForcedLayout { .. } => "layout_forced",
        }
    }
}

/// The test knob's value: `layout`, `layout+N`, `layout-N`. `Err`: anything else (the loader
/// refuses to start rather than guess).
pub fn parse_test_ovl_layout(v: &str) -> Result<OverlayUpper, String> {
    let bad = || format!("{TEST_OVL_LAYOUT_ENV}={v:?}: expected `layout`, `layout+N` or `layout-N`");
    let rest = v.trim().strip_prefix("layout").ok_or_else(bad)?;
    if rest.is_empty() {
        return Ok(OverlayUpper::ForcedLayout { skew: 0 });
    }
    let skew = match rest.strip_prefix('+') {
        Some(n) => n.parse::<i32>().map_err(|_| bad())?,
        None => rest.strip_prefix('-').and_then(|n| n.parse::<i32>().ok()).map(|n| -n).ok_or_else(bad)?,
    };
    Ok(OverlayUpper::ForcedLayout { skew })
}

/// Which source [`OverlayUpper`] libbpf will use on this kernel, now (or what the test knob
/// forces).
pub fn overlay_upper() -> Result<OverlayUpper, String> {
    if let Some(v) = std::env::var_os(TEST_OVL_LAYOUT_ENV) {
        return parse_test_ovl_layout(&v.to_string_lossy());
    }
    let vmlinux = Btf::from_vmlinux().ok();
    Ok(if vmlinux.as_ref().is_some_and(|b| b.type_by_name::<Composite<'_>>("ovl_inode").is_some()) {
        OverlayUpper::VmlinuxBtf
    } else if Path::new(OVERLAY_MODULE_BTF).exists() {
        OverlayUpper::ModuleBtf
    } else {
        OverlayUpper::Layout
    })
}

/// Whether the layout read of the upper dentry was proved on this kernel at start
/// (`ovlproof` in src/enforcer: a lower-only and a written file of a test overlay, classified
/// by the loaded programs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutProof {
    /// CO-RE is used: nothing to prove.
    NotNeeded,
    /// The lower-only file came out image and the written one upper.
    Proven,
    /// The proof failed or could not run (why): the programs treat every file of a policied
    /// container's root overlay as of unknown layer, i.e. drift (fail closed).
    Failed(String),
}

impl LayoutProof {
    /// Name for metrics and status: `not_needed`, `proven`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LayoutProof::NotNeeded => "not_needed",
            LayoutProof::Proven => "proven",
            LayoutProof::Failed(_) => "failed",
        }
    }

    /// One sentence: what was checked and what happens.
    pub fn describe(&self) -> String {
        match self {
            LayoutProof::NotNeeded => "CO-RE field access; no proof needed".into(),
            LayoutProof::Proven => "proved at start on a test overlay (lower-only file: image, written file: \
                                    upper); each read is checked (a dentry of a non-overlay filesystem with the \
                                    overlay inode's file type, else drift)"
                .into(),
            LayoutProof::Failed(why) => format!(
                "proof FAILED ({why}): every file of a policied container's root overlay counts as drift \
                 (denied in enforce mode, alerted in monitor mode) until the agent proves the layout"
            ),
        }
    }
}

/// Whether the overlay module's BTF is loaded (`/sys/kernel/btf/overlay`).
pub fn overlay_module_btf() -> bool {
    Path::new(OVERLAY_MODULE_BTF).exists()
}

/// Does the running kernel's BTF (`/sys/kernel/btf/vmlinux`) list `func` (e.g. `BPF_FUNC_loop`)
/// in `enum bpf_func_id`, i.e. does the kernel have that BPF helper? `None`: no readable BTF.
pub fn kernel_has_bpf_helper(func: &str) -> Option<bool> {
    kernel_enum_has("bpf_func_id", func)
}

/// Size in bytes of `struct name` in the running kernel's BTF (`None`: no readable BTF or no such
/// struct). The trials use `inode` to aim the layout read at a known wrong place.
pub fn kernel_struct_size(name: &str) -> Option<usize> {
    use libbpf_rs::btf::types::Struct;
    use libbpf_rs::btf::HasSize;
    let btf = Btf::from_vmlinux().ok()?;
    let s: Struct<'_> = btf.type_by_name(name)?;
    Some(s.size())
}

/// Does the running kernel's BTF have the enumerator `value` in `enum name` (e.g.
/// `bpf_prog_type`, `BPF_PROG_TYPE_SYSCALL`)? `None`: no readable BTF or no such enum.
pub fn kernel_enum_has(name: &str, value: &str) -> Option<bool> {
    let btf = Btf::from_vmlinux().ok()?;
    let e: Enum<'_> = btf.type_by_name(name)?;
    let found = e.iter().any(|m| m.name.is_some_and(|n| n == value));
    Some(found)
}

/// What the kernel cannot guarantee with these programs, one sentence each; empty when the
/// full set of checks runs.
pub fn limits(
    path: EnforcementPath,
    mappings: MappingChecks,
    d_path: bool,
    ovl: OverlayUpper,
    proof: &LayoutProof,
) -> Vec<String> {
    let mut out = Vec::new();
    match path {
        EnforcementPath::TracepointKill => {
            match mappings {
                MappingChecks::Lsm | MappingChecks::Off => out.push(
                    "no BPF LSM: PROT_EXEC mappings are not checked (ld.so /dropped, LD_PRELOAD and dlopen of \
                     drifted files run, and so does anonymous or writable executable memory: no W^X), nor are \
                     writes into process memory (/proc/<pid>/mem, ptrace, process_vm_writev); \
                     `[bpf] fallback_mappings = true` checks both at a cost to every syscall on the node"
                        .to_string(),
                ),
                MappingChecks::Tracepoints { find_vma, pinned } => {
                    out.push(
                        "no BPF LSM: mappings are checked at the syscall (fallback_mappings): a refused mapping \
                         is made and its process killed before it returns, but another process sharing the \
                         memory (CLONE_VM, vfork) keeps it, 32-bit (compat) syscalls are not seen, and brk under \
                         READ_IMPLIES_EXEC is not seen"
                            .to_string(),
                    );
                    out.push(
                        "no BPF LSM: writes into process memory are checked at the syscall (fallback_mappings): \
                         ptrace attach, process_vm_readv/writev, pidfd_getfd and a mem file opened for writing \
                         kill their caller, but a process sharing the opener's fd table (CLONE_FILES) keeps the \
                         fd, and io_uring's opens, received fds, 32-bit syscalls and attaches from another \
                         container into this one are not seen"
                            .to_string(),
                    );
                    if !find_vma {
                        out.push(
                            "no bpf_find_vma (before 5.17): an mprotect to PROT_EXEC under the memory rule is \
                             killed whatever the mapping (fail closed), and a sibling thread's dup2 during an mmap \
                             is seen only while the fd still holds the other file"
                                .to_string(),
                        );
                    }
                    if !pinned {
                        out.push(
                            "syscall tracepoint links cannot be pinned before 5.15 (perf-event links): the mapping \
                             checks hold only while the agent runs"
                                .to_string(),
                        );
                    }
                }
            }
            out.push(
                "no BPF LSM: a drifted binary is killed (SIGKILL, exit 137) right after exec instead of being \
                 refused, and a `#!` script is judged by its interpreter"
                    .to_string(),
            );
        }
        EnforcementPath::Lsm if !d_path => out.push(
            "bpf_d_path is refused in BPF LSM hooks (before 5.11): event paths of files outside the \
             container's root come from the dentry walk (at most 32 components; verdicts are unchanged)"
                .to_string(),
        ),
        EnforcementPath::Lsm => {}
    }
    if ovl.is_layout() && !matches!(proof, LayoutProof::Failed(_)) {
        out.push(format!("overlay upper layer: {}; {}", ovl.describe(), proof.describe()));
    }
    out
}

/// The one error line of a failed layout proof (the agent logs it as a `kernel limit` at error
/// level; [`limits`] leaves it out so it is said once).
pub fn proof_failure(ovl: OverlayUpper, proof: &LayoutProof) -> Option<String> {
    match proof {
        LayoutProof::Failed(_) => Some(format!("overlay upper layer: {}; {}", ovl.describe(), proof.describe())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_knob_parses_layout_and_skew_and_refuses_the_rest() {
        assert_eq!(parse_test_ovl_layout("layout"), Ok(OverlayUpper::ForcedLayout { skew: 0 }));
        assert_eq!(parse_test_ovl_layout("layout+8"), Ok(OverlayUpper::ForcedLayout { skew: 8 }));
        assert_eq!(parse_test_ovl_layout("layout-16"), Ok(OverlayUpper::ForcedLayout { skew: -16 }));
        for bad in ["", "core", "layout8", "layout+x", "layout-"] {
            let e = parse_test_ovl_layout(bad).unwrap_err();
            assert!(e.contains(TEST_OVL_LAYOUT_ENV), "{e}");
        }
        assert!(OverlayUpper::ForcedLayout { skew: 8 }.describe().contains("+8 bytes"));
        assert!(!OverlayUpper::ModuleBtf.is_layout() && OverlayUpper::Layout.is_layout());
    }

    #[test]
    fn limits_name_what_each_path_lacks() {
        assert!(limits(
            EnforcementPath::Lsm,
            MappingChecks::Lsm,
            true,
            OverlayUpper::ModuleBtf,
            &LayoutProof::NotNeeded
        )
        .is_empty());
        let l = limits(EnforcementPath::Lsm, MappingChecks::Lsm, false, OverlayUpper::Layout, &LayoutProof::Proven);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].contains("bpf_d_path") && l[1].contains("struct inode") && l[1].contains("proved"), "{l:?}");
        let failed = LayoutProof::Failed("x".into());
        assert!(limits(EnforcementPath::Lsm, MappingChecks::Lsm, true, OverlayUpper::Layout, &failed).is_empty());
        let e = proof_failure(OverlayUpper::Layout, &failed).unwrap();
        assert!(e.contains("proof FAILED (x)") && e.contains("counts as drift"), "{e}");
        assert_eq!(proof_failure(OverlayUpper::Layout, &LayoutProof::Proven), None);
        let l = limits(
            EnforcementPath::TracepointKill,
            MappingChecks::Off,
            false,
            OverlayUpper::VmlinuxBtf,
            &LayoutProof::NotNeeded,
        );
        assert!(l.iter().any(|x| x.contains("PROT_EXEC")) && l.iter().any(|x| x.contains("SIGKILL")), "{l:?}");
    }
}
