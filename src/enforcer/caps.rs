//! What the running kernel lets the BPF programs guarantee. One place for the facts that
//! `driftguard check` prints in its `capabilities` table and the agent states at start
//! ([`super::Enforcer::kernel_limits`]); docs/bpf.md's kernel table lists them per tested kernel.

use std::path::Path;

use libbpf_rs::btf::types::{Composite, Enum};
use libbpf_rs::btf::Btf;

use super::EnforcementPath;

/// Module BTF of overlayfs, present when overlay is a module, loaded, and the kernel has
/// `CONFIG_DEBUG_INFO_BTF_MODULES` (5.11+).
const OVERLAY_MODULE_BTF: &str = "/sys/kernel/btf/overlay";

/// Where the BPF programs find an overlay inode's upper dentry: `ovl_upper()` in
/// bpf/driftguard.bpf.c, whose CO-RE guard libbpf resolves with the BTF this looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayUpper {
    /// CO-RE relocation against `struct ovl_inode` in the kernel's BTF (overlay built in).
    VmlinuxBtf,
    /// CO-RE relocation against the overlay module's BTF.
    ModuleBtf,
    /// No BTF describes `struct ovl_inode` (5.10 has no module BTF; or overlay was loaded after
    /// the programs): the pointer right after `struct inode`, the layout of 4.19 to 6.18.
    Layout,
}

impl OverlayUpper {
    /// One line for `driftguard check` and logs.
    pub fn describe(self) -> &'static str {
        match self {
            OverlayUpper::VmlinuxBtf => "CO-RE: struct ovl_inode from the kernel's BTF (overlay built in)",
            OverlayUpper::ModuleBtf => "CO-RE: struct ovl_inode from the overlay module's BTF",
            OverlayUpper::Layout => {
                "no BTF has struct ovl_inode (module BTF needs 5.11 and overlay loaded first): \
                 the pointer after struct inode, the layout of kernels 4.19 to 6.18"
            }
        }
    }
}

/// Which source [`OverlayUpper`] libbpf will use on this kernel, now.
pub fn overlay_upper() -> OverlayUpper {
    let vmlinux = Btf::from_vmlinux().ok();
    if vmlinux.as_ref().is_some_and(|b| b.type_by_name::<Composite<'_>>("ovl_inode").is_some()) {
        OverlayUpper::VmlinuxBtf
    } else if Path::new(OVERLAY_MODULE_BTF).exists() {
        OverlayUpper::ModuleBtf
    } else {
        OverlayUpper::Layout
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
pub fn limits(path: EnforcementPath, d_path: bool, ovl: OverlayUpper) -> Vec<String> {
    let mut out = Vec::new();
    match path {
        EnforcementPath::TracepointKill => {
            out.push(
                "no BPF LSM: PROT_EXEC mappings are not checked (ld.so /dropped, LD_PRELOAD and dlopen of \
                 drifted files run)"
                    .to_string(),
            );
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
    if ovl == OverlayUpper::Layout {
        out.push(format!("overlay upper layer: {}", ovl.describe()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_what_each_path_lacks() {
        assert!(limits(EnforcementPath::Lsm, true, OverlayUpper::ModuleBtf).is_empty());
        let l = limits(EnforcementPath::Lsm, false, OverlayUpper::Layout);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].contains("bpf_d_path") && l[1].contains("struct inode"), "{l:?}");
        let l = limits(EnforcementPath::TracepointKill, false, OverlayUpper::VmlinuxBtf);
        assert!(l.iter().any(|x| x.contains("PROT_EXEC")) && l.iter().any(|x| x.contains("SIGKILL")), "{l:?}");
    }
}
