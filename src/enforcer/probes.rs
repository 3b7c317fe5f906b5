//! Host probes the loader and `check` need: BTF, the active LSM list (mounting securityfs when
//! missing), tracefs.
use super::*;

/// Does the kernel have BTF ([`BTF_PATH`])? Without it the programs cannot be loaded.
pub fn has_vmlinux_btf() -> bool {
    Path::new(BTF_PATH).exists()
}

/// The text of [`LSM_LIST`], mounting securityfs first when it is missing (root only). `Err`
/// says why it cannot be read.
pub fn lsm_list() -> std::result::Result<String, String> {
    if !Path::new(LSM_LIST).exists() {
        mount_securityfs();
    }
    std::fs::read_to_string(LSM_LIST).map_err(|e| format!("cannot read {LSM_LIST} ({e}); is securityfs mounted?"))
}

/// The names in the text of [`LSM_LIST`], in order.
pub fn parse_lsm_list(list: &str) -> Vec<&str> {
    list.trim().split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Is BPF LSM active? `Err` says why not.
pub fn bpf_lsm_active() -> std::result::Result<(), String> {
    let list = lsm_list()?;
    if parse_lsm_list(&list).contains(&"bpf") {
        Ok(())
    } else {
        Err(format!(
            "BPF LSM is not active (active LSMs: {}); add bpf to the kernel's lsm= boot parameter",
            list.trim()
        ))
    }
}

pub(super) fn mount_securityfs() {
    let target = c"/sys/kernel/security";
    let fstype = c"securityfs";
    // SAFETY: plain mount(2) with valid NUL-terminated strings; failure is reported via the LSM list read.
    unsafe {
        libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null());
    }
}

/// Classic tracepoints are found through tracefs: mount it where the kernel offers it and
/// nothing is mounted yet (minimal hosts, VM inits).
pub(super) fn ensure_tracefs() -> Result<()> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: mount(2) with NUL-terminated strings and no data.
    let r = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if r != 0 || !dir.join("events").exists() {
        let why = if r != 0 { std::io::Error::last_os_error().to_string() } else { "no events directory".into() };
        return Err(Error::Load {
            reason: format!(
                "fallback_mappings needs tracefs: mounting it at /sys/kernel/tracing failed ({why}); mount it, or \
                 set `[bpf] fallback_mappings = false`"
            ),
            log: String::new(),
        });
    }
    Ok(())
}
