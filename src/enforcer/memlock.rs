//! `RLIMIT_MEMLOCK` and BPF memory. Kernels before 5.11 charge BPF maps and programs to the
//! loading process's locked-memory limit; 5.11 and later charge the memory cgroup and ignore
//! the limit. The loader lifts the limit when it can (root with `CAP_SYS_RESOURCE`, or systemd's
//! `LimitMEMLOCK=infinity` already did). When it cannot, on a kernel that needs it, loading
//! fails with EPERM at the first large map: [`advice`] says so at start, before that happens,
//! and names the fix.

/// The first kernel that charges BPF memory to the memory cgroup instead of `RLIMIT_MEMLOCK`.
pub const MEMCG_ACCOUNTING_SINCE: (u32, u32) = (5, 11);

/// Below this a kernel that needs the limit cannot hold driftguard's maps (the policy, path and
/// ring-buffer maps are several MiB; the default limit is 64 KiB or 8 MiB).
pub const ENOUGH: u64 = 64 << 20;

/// `(major, minor)` of a kernel release string (`6.1.0-28-cloud-amd64`).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Lift `RLIMIT_MEMLOCK` to unlimited; `Err(errno text)` when not permitted.
pub fn raise() -> Result<(), String> {
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// The current soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited or unreadable).
pub fn current() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid struct pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// What to tell the operator, if anything: the kernel needs the limit (before 5.11), the loader
/// could not raise it (`raise_error`), and what is left (`limit`, bytes; `None` = unlimited) is
/// below [`ENOUGH`]. An unparsable release is treated as needing it.
pub fn advice(release: &str, raise_error: Option<&str>, limit: Option<u64>) -> Option<String> {
    let needs = kernel_version(release).is_none_or(|v| v < MEMCG_ACCOUNTING_SINCE);
    let (Some(err), Some(limit)) = (raise_error, limit) else { return None };
    if !needs || limit >= ENOUGH {
        return None;
    }
    Some(format!(
        "kernel {release} charges BPF maps to RLIMIT_MEMLOCK (kernels before 5.11 do), which is {} KiB \
         here, and the agent could not raise it ({err}): loading will fail with EPERM. Give the agent \
         CAP_SYS_RESOURCE (Helm: securityContext.memlock=true; kustomize: overlays/kernel-before-5.11) \
         or start it with the limit raised (systemd: LimitMEMLOCK=infinity, which the shipped unit sets)",
        limit / 1024
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_kernels_without_the_limit_raised_get_advice() {
        let eperm = Some("Operation not permitted (os error 1)");
        let low = Some(8 << 20);
        let a = advice("5.10.0-32-cloud-amd64", eperm, low).expect("5.10 with 8 MiB and no way to raise it");
        assert!(a.contains("kernel 5.10.0-32-cloud-amd64") && a.contains("8192 KiB") && a.contains("CAP_SYS_RESOURCE"));
        assert!(a.contains("securityContext.memlock=true") && a.contains("overlays/kernel-before-5.11"), "{a}");
        // Raised, unlimited, or large enough: nothing to say.
        assert_eq!(advice("5.10.0", None, low), None);
        assert_eq!(advice("5.10.0", eperm, None), None);
        assert_eq!(advice("5.10.0", eperm, Some(ENOUGH)), None);
        // 5.11 and later ignore the limit.
        assert_eq!(advice("5.11.0", eperm, low), None);
        assert_eq!(advice("6.18.44-fc-v1272", eperm, Some(64 << 10)), None);
        // Unparsable: assume the worst.
        assert!(advice("garbage", eperm, low).is_some());
    }

    #[test]
    fn versions() {
        assert_eq!(kernel_version("6.1.0-28-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("x"), None);
    }
}
