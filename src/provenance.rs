//! Image provenance: which filesystem a container's code may come from.
//!
//! In enforce mode a container may execute (or map executable) only files whose data comes
//! from an image layer of **its own** root filesystem: the overlay the runtime mounted as the
//! container's root. The kernel tells files apart by their superblock, so the policy carries
//! that superblock's device number ([`Provenance::rootfs_dev`], `super_block->s_dev` in the
//! kernel's encoding) and, for volumes the pod exempted (`driftguard.dev/exec-volumes`), the
//! ids of the mounts the runtime made for them ([`Provenance::exec_mounts`]). A tmpfs or bind
//! mount made later over the same path from inside the container is another mount with another
//! id, so it is not exempt.
//!
//! Both are read from `/proc/<pid>/mountinfo` of the container's init process before its
//! entrypoint runs (NRI `StartContainer`, OCI `createRuntime`). mountinfo is readable without
//! ptrace access, which the agent does not have under its unit's capabilities.

use std::path::{Path, PathBuf};

pub use crate::mountinfo::{
    kernel_dev, kernel_dev_of_st_dev, parse_mountinfo, top_mount_at, unescape_mountinfo, MountEntry,
};
use crate::policy::{ExecPath, Policy};

/// Filesystem type name overlayfs reports in mountinfo.
pub const OVERLAY_FSTYPE: &str = "overlay";

/// Where a container's code may come from, as the kernel checks it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// `s_dev` of the container's root filesystem (kernel encoding: `MAJOR << 20 | MINOR`).
    /// 0 means unknown: no file counts as image (fail closed).
    pub rootfs_dev: u64,
    /// Filesystem type of the root (`overlay` normally).
    pub rootfs_type: String,
    /// Volume mounts exempt from the non-image rule.
    pub exec_mounts: Vec<ExecMount>,
}

/// A volume mount exempt from the non-image rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecMount {
    /// Where the container sees it.
    pub path: ExecPath,
    /// The kernel's mount id (`mnt_id`, first field of mountinfo).
    pub mount_id: u32,
}

impl Provenance {
    /// Unknown root: nothing counts as image. For tests and tools that only need a policy
    /// entry (full-map checks); a real container always gets its own.
    pub fn unknown() -> Self {
        Provenance::default()
    }

    /// Whether the root is an overlay (the drift rule can tell written files from shipped ones).
    pub fn is_overlay(&self) -> bool {
        self.rootfs_type == OVERLAY_FSTYPE
    }

    /// Mount ids of the exempt volumes, in the order of [`Provenance::exec_mounts`].
    pub fn mount_ids(&self) -> Vec<u32> {
        self.exec_mounts.iter().map(|m| m.mount_id).collect()
    }
}

/// Why a container's provenance could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// mountinfo of the container's process could not be read.
    #[error("reading {path}: {source} (is the container's process gone?)")]
    Mountinfo {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing is mounted at the container's root.
    #[error("no mount at the container's root {root} in {mountinfo}")]
    NoRoot {
        /// The root looked for.
        root: PathBuf,
        /// The mountinfo file.
        mountinfo: PathBuf,
    },
    /// An exempt volume path is not a mount point of the container.
    #[error(
        "exec volume {path}: no mount at this path in the container (driftguard.dev/exec-volumes names the \
         mount points of volumes the pod declares)"
    )]
    NotAMount {
        /// The path as the container sees it.
        path: ExecPath,
    },
    /// The root is not an overlay, so no file can be told to be image.
    #[error(
        "root filesystem is {fstype:?}, not overlayfs: driftguard can tell image files only on overlay roots, \
         so with the non-image rule on nothing in this container could run; use the overlayfs snapshotter, \
         or set driftguard.dev/non-image: \"false\" for it (deny lists and the fileless rule still apply)"
    )]
    RootNotOverlay {
        /// What it is.
        fstype: String,
    },
    /// The runtime gave no pid and the container's cgroup does not hold exactly one process, so
    /// the process whose mounts are the container's cannot be told.
    #[error(
        "the runtime gave no pid for the container and its cgroup {cgroup} holds {count} processes, not the \
         one init process that waits to be started"
    )]
    NoInitProcess {
        /// The container's cgroup directory.
        cgroup: PathBuf,
        /// How many processes it holds.
        count: usize,
    },
    /// The runtime gave no pid and the container's cgroup could not be read.
    #[error("the runtime gave no pid for the container and its cgroup cannot be read: {source}")]
    CgroupProcs {
        /// Why.
        source: crate::cgroup::CgroupError,
    },
    /// An exempt volume is the root filesystem itself, or on it.
    #[error("exec volume {path}: the mount is the container's root filesystem, not a volume")]
    RootfsVolume {
        /// The path as the container sees it.
        path: ExecPath,
    },
}

/// Resolve the provenance of a container from its process's mountinfo text.
///
/// `root` is where the container's root is in that text: `/` once the runtime has pivoted
/// into it (NRI `StartContainer`), the bundle's rootfs path before (OCI `createRuntime`).
/// Every `exec_volumes` entry of `policy` must be a mount point in the container.
pub fn resolve(
    mountinfo: &str,
    mountinfo_path: &Path,
    root: &Path,
    policy: &Policy,
) -> Result<Provenance, ProvenanceError> {
    let entries = parse_mountinfo(mountinfo);
    let rootfs = top_mount_at(&entries, root)
        .ok_or_else(|| ProvenanceError::NoRoot { root: root.to_path_buf(), mountinfo: mountinfo_path.to_path_buf() })?;
    let mut exec_mounts = Vec::new();
    for path in &policy.exec_volumes {
        let at = root.join(path.as_str().trim_start_matches('/'));
        let m = top_mount_at(&entries, &at).ok_or_else(|| ProvenanceError::NotAMount { path: path.clone() })?;
        if m.dev == rootfs.dev {
            return Err(ProvenanceError::RootfsVolume { path: path.clone() });
        }
        exec_mounts.push(ExecMount { path: path.clone(), mount_id: m.mount_id });
    }
    Ok(Provenance { rootfs_dev: rootfs.dev, rootfs_type: rootfs.fstype.clone(), exec_mounts })
}

/// [`resolve`] for process `pid`, reading `/proc/<pid>/mountinfo`.
pub fn of_pid(pid: u32, root: &Path, policy: &Policy) -> Result<Provenance, ProvenanceError> {
    of_pid_in(Path::new("/proc"), pid, root, policy)
}

/// [`of_pid`] with another procfs mount (tests).
pub fn of_pid_in(proc_root: &Path, pid: u32, root: &Path, policy: &Policy) -> Result<Provenance, ProvenanceError> {
    let path = proc_root.join(pid.to_string()).join("mountinfo");
    let text =
        std::fs::read_to_string(&path).map_err(|source| ProvenanceError::Mountinfo { path: path.clone(), source })?;
    resolve(&text, &path, root, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
1200 1100 0:95 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
1201 1200 0:96 / /dev rw,nosuid - tmpfs tmpfs rw,mode=755
1202 1200 254:1 /var/lib/containerd/sandboxes/x/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
1203 1200 254:1 /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/tools /opt/my\\040tools rw - ext4 /dev/vda1 rw
1204 1200 0:97 / /data rw - tmpfs tmpfs rw
1205 1200 0:98 / /data rw - tmpfs tmpfs rw
";

    fn policy(vols: &[&str]) -> Policy {
        let mut p = Policy::default();
        for v in vols {
            p.exec_volumes.insert(ExecPath::new(v).unwrap());
        }
        p
    }

    #[test]
    fn parses_devices_ids_and_escapes() {
        let e = parse_mountinfo(MI);
        assert_eq!(e.len(), 7);
        assert_eq!(e[1].mount_id, 1200);
        assert_eq!(e[1].dev, 95);
        assert_eq!(e[1].fstype, "overlay");
        assert_eq!(e[3].dev, (254 << 20) | 1);
        assert_eq!(e[3].root, "/var/lib/containerd/sandboxes/x/hostname");
        assert_eq!(e[4].mount_point, PathBuf::from("/opt/my tools"));
        assert!(parse_mountinfo("garbage\n1 2 x:y / / - tmpfs\n").is_empty());
    }

    #[test]
    fn root_and_volumes_resolve_to_the_topmost_mount() {
        let p = resolve(MI, Path::new("mi"), Path::new("/"), &policy(&["/data", "/opt/my tools"])).unwrap();
        assert_eq!(p.rootfs_dev, 95);
        assert!(p.is_overlay());
        // /data has two stacked tmpfs mounts: the visible one is the later.
        assert_eq!(p.mount_ids(), vec![1205, 1203]);
    }

    #[test]
    fn a_path_that_is_not_a_mount_is_refused() {
        let e = resolve(MI, Path::new("mi"), Path::new("/"), &policy(&["/opt"])).unwrap_err();
        assert!(matches!(e, ProvenanceError::NotAMount { .. }), "{e}");
        assert!(e.to_string().contains("/opt"));
    }

    #[test]
    fn before_pivot_the_root_is_the_bundle_path() {
        let mi = "\
10 1 0:50 / /run/bundle/rootfs rw - overlay overlay rw
11 10 0:51 / /run/bundle/rootfs/data rw - tmpfs tmpfs rw
";
        let p = resolve(mi, Path::new("mi"), Path::new("/run/bundle/rootfs"), &policy(&["/data"])).unwrap();
        assert_eq!(p.rootfs_dev, 50);
        assert_eq!(p.mount_ids(), vec![11]);
        assert!(matches!(
            resolve(mi, Path::new("mi"), Path::new("/elsewhere"), &Policy::default()),
            Err(ProvenanceError::NoRoot { .. })
        ));
    }

    #[test]
    fn a_bind_of_the_rootfs_is_not_a_volume() {
        let mi = "\
10 1 0:50 / / rw - overlay overlay rw
11 10 0:50 /usr /mnt rw - overlay overlay rw
";
        assert!(matches!(
            resolve(mi, Path::new("mi"), Path::new("/"), &policy(&["/mnt"])),
            Err(ProvenanceError::RootfsVolume { .. })
        ));
    }

    #[test]
    fn kernel_encoding() {
        assert_eq!(kernel_dev(0, 95), 95);
        assert_eq!(kernel_dev(8, 1), (8 << 20) | 1);
        assert_eq!(kernel_dev_of_st_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev_of_st_dev(libc::makedev(0, 300)), 300);
    }

    #[test]
    fn reads_this_process() {
        let p = of_pid(std::process::id(), Path::new("/"), &Policy::default()).unwrap();
        assert_ne!(p.rootfs_dev, 0);
        assert!(matches!(of_pid(u32::MAX, Path::new("/"), &Policy::default()), Err(ProvenanceError::Mountinfo { .. })));
    }
}
