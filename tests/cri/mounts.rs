//! The runtime-made mounts: /dev, /etc/hostname and every writable mount a container sees.
use super::*;

/// runc's `/dev` is a writable tmpfs without noexec in every container.
pub(super) fn runtime_mount_dev_tmpfs_exec_is_denied() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("devtmpfs", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, "cp /bin/busybox /dev/x && /dev/x true")?;
        env.assert_stopped(&e, "exec of a binary copied to /dev (runtime-made tmpfs) in an enforce pod").map_err(|m| {
            format!("{m} (exit 127 \"x: applet not found\" means the copied busybox RAN and printed that)")
        })
    })
}

/// The attacker's next step after `/dev` and `/etc/hostname`: every mount point the runtime gives
/// the container (from the container's own `/proc/self/mounts`: `/dev`, `/dev/shm`, `/dev/mqueue`,
/// `/dev/pts`, the `/etc/hosts|hostname|resolv.conf` binds, the root's upper layer, whatever a
/// newer runtime adds) gets a copy of busybox written into it (a file named `echo` in a directory,
/// the file itself for a file mount) and run. Not one may run: exit 126 (EPERM, or the mount's own
/// `noexec`) or 137 (killed) for every mount the container can write. procfs and sysfs hold no
/// regular files a process can create and are left out.
pub(super) fn every_writable_mount_refuses_a_written_binary() -> R {
    const PROBE: &str = r#"
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*) continue;; esac
  if [ -d "$m" ]; then t="${m%/}/echo"; else t="$m"; fi
  if cat /bin/busybox > "$t" 2>/dev/null && chmod 755 "$t" 2>/dev/null; then
    "$t" DG-RAN >/dev/null 2>&1
    rc=$?
    case $rc in 126|137) echo "STOPPED $m $rc";; *) echo "RAN $m $rc";; esac
  else
    echo "READONLY $m"
  fi
done
"#;
    with_env(|env| {
        let (_, id) = env.pod_with("allmounts", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, PROBE)?;
        println!("{}", e.stdout.trim_end());
        let lines: Vec<(&str, &str)> = e.stdout.lines().filter_map(|l| l.split_once(' ')).collect();
        let ran: Vec<&str> = lines.iter().filter(|(v, _)| *v == "RAN").map(|(_, m)| *m).collect();
        if !ran.is_empty() {
            return Err(format!("a binary written into these mounts RAN in an enforce pod: {ran:?}\n{e}"));
        }
        let tried: Vec<&str> =
            lines.iter().filter(|(v, _)| *v == "STOPPED").filter_map(|(_, m)| m.split(' ').next()).collect();
        for must in ["/", "/dev", "/dev/shm", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            if !tried.contains(&must) {
                return Err(format!("the probe could not write {must}, so it proves nothing there: {e}"));
            }
        }
        let ok = env.ctd.sh(&id, "/bin/echo image-ok")?;
        if ok.code != 0 || !ok.stdout.contains("image-ok") {
            return Err(format!("control: the image's /bin/echo must still run after the probe: {ok}"));
        }
        Ok(())
    })
}

/// `/etc/hostname` is a writable bind mount of a file in containerd's sandbox directory.
pub(super) fn runtime_mount_etc_hostname_exec_is_denied() -> R {
    with_env(|env| {
        let (_, id) = env.pod_with("hostnamefile", &[ENFORCE], "app")?;
        let e = env.ctd.sh(&id, "cat /bin/busybox > /etc/hostname && chmod 755 /etc/hostname && /etc/hostname true")?;
        env.assert_stopped(&e, "exec of a binary written over /etc/hostname (runtime bind mount) in an enforce pod")
            .map_err(|m| format!("{m} (busybox ran as its `hostname` applet: the exec was not stopped)"))
    })
}
