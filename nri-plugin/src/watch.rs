//! Waiting for the runtime's socket to (re)appear: inotify on the socket's directory.
//!
//! When the runtime restarts it removes its socket and binds a new one. Instead of retrying
//! blindly on a timer, the runner watches the directory (or, while that does not exist yet, its
//! deepest existing ancestor) and tries again as soon as a new socket file is there.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Identity of a file: device, inode and change time. Filesystems reuse inode numbers at once
/// (ext4 does): a socket re-created in place can get the one of the socket it replaces, but not
/// its ctime.
pub(crate) type FileId = (u64, u64, i64, i64);

/// The identity of the file at `path`, if there is one.
pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// How [`wait_for_socket`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A file was created (or moved) at the path, or it exists while it did not before.
    Appeared,
    /// `fallback` elapsed first.
    Fallback,
}

/// Waits until a file is created at `path` (bind(2) of a unix socket creates one), or until
/// `fallback` elapses. `stale` is the file that was there when the last connection attempt
/// failed (or the connection ended), if any: a socket left by a runtime that is gone must not
/// count, only a new one created in its place (runtimes remove the old socket and bind a new
/// one). A file other than `stale` already there once the watch is in place counts as new (it
/// appeared in between; a reused inode number can hide that, and then the wait lasts until the
/// next event or the fallback). Errors only when inotify is unusable; the caller then falls back
/// to plain timed retries.
pub(crate) async fn wait_for_socket(path: &Path, stale: Option<FileId>, fallback: Duration) -> io::Result<Wake> {
    let deadline = tokio::time::Instant::now() + fallback;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no file name", path.display())))?;
    loop {
        let dir = deepest_existing_ancestor(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no ancestor of {} exists", path.display()))
        })?;
        let is_parent = path.parent().is_some_and(|p| same_dir(p, &dir));
        #[cfg(test)]
        tests::hook(path, "found");
        let watch = match Inotify::watch_dir(&dir) {
            Ok(w) => w,
            // It went away since it was found: look again from its ancestors.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The file may have appeared between the failed attempt and the watch being in place.
        if matches!(file_id(path), Some(id) if Some(id) != stale) {
            return Ok(Wake::Appeared);
        }
        // So may a directory on the way (the runtime creating /var/run/nri, then its socket in
        // it): its creation is not among this watch's events, and the socket will appear
        // below it, unseen. Watch from the deeper one.
        if !is_parent && deepest_existing_ancestor(path).is_some_and(|d| d != dir) {
            continue;
        }
        #[cfg(test)]
        tests::hook(path, "watching");
        loop {
            tokio::select! {
                res = watch.next_batch() => {
                    let batch = res?;
                    if is_parent && batch.created.iter().any(|n| n.as_os_str() == name) {
                        return Ok(Wake::Appeared);
                    }
                    // A directory on the way to the socket was created (or the watched one went
                    // away): watch from the new deepest existing ancestor.
                    if batch.dir_gone || !is_parent && !batch.created.is_empty() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(Wake::Fallback),
            }
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || a.as_os_str().is_empty() && b == Path::new(".")
}

/// The deepest existing directory among the ancestors of `path` (not `path` itself).
fn deepest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|a| a.is_dir()).map(|a| {
        if a.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            a.to_path_buf()
        }
    })
}

/// One inotify instance watching one directory for entries appearing or disappearing.
struct Inotify {
    /// `None` only while being dropped.
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Drop for Inotify {
    /// Closing an inotify descriptor waits for an SRCU grace period in the kernel (the group's
    /// marks are destroyed synchronously): ~15 ms on an idle 2-vCPU machine, seconds under load.
    /// That must not delay the connection attempt the wait was for: close it on the blocking
    /// pool.
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let owned = fd.into_inner();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(move || drop(owned))),
                Err(_) => drop(owned),
            }
        }
    }
}

impl Inotify {
    fn watch_dir(dir: &Path) -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes only flags; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c = cstring(dir.as_os_str())?;
        let mask = libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR;
        // SAFETY: valid inotify fd and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor (OwnedFd) and so closes it only after it is
        // deregistered; nothing else refers to it.
        Ok(Inotify { fd: Some(unsafe { AsyncFd::register(fd)? }) })
    }

    /// Waits for at least one event and drains the queue.
    async fn next_batch(&self) -> io::Result<Batch> {
        let Some(fd) = &self.fd else { return Err(io::Error::other("inotify closed")) };
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = fd.readable().await?;
            let mut batch = Batch::default();
            let mut got = false;
            loop {
                // SAFETY: reading into a buffer of the given length from a valid fd.
                let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                got = true;
                batch.parse(&buf[..n as usize]);
            }
            if got {
                return Ok(batch);
            }
        }
    }
}

/// What a batch of inotify events says.
#[derive(Debug, Default)]
struct Batch {
    /// Names created in (or moved into) the watched directory.
    created: Vec<std::ffi::OsString>,
    /// The watched directory itself went away (deleted, moved, or unmounted).
    dir_gone: bool,
}

impl Batch {
    /// Folds in a buffer of `struct inotify_event`s (each followed by a NUL-padded name).
    fn parse(&mut self, mut buf: &[u8]) {
        const HDR: usize = std::mem::size_of::<libc::inotify_event>();
        while buf.len() >= HDR {
            // SAFETY: at least HDR bytes are there; read_unaligned copes with any alignment.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            let end = HDR + ev.len as usize;
            if end > buf.len() {
                break;
            }
            if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0 {
                self.dir_gone = true;
            }
            if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                let raw = &buf[HDR..end];
                let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                self.created.push(OsStr::from_bytes(name).to_os_string());
            }
            buf = &buf[end..];
        }
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    type Hook = Box<dyn FnOnce() + Send>;
    /// What to do once, for a path, at a stage of [`wait_for_socket`]: `found` (the directory to
    /// watch was chosen, the watch is not in place yet), `watching` (it is, and was checked).
    static HOOKS: std::sync::Mutex<Vec<(PathBuf, &'static str, Hook)>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn hook(path: &Path, stage: &str) {
        let hook = {
            let mut hooks = HOOKS.lock().unwrap();
            hooks.iter().position(|(p, s, _)| p == path && *s == stage).map(|i| hooks.remove(i).2)
        };
        if let Some(h) = hook {
            h();
        }
    }

    /// The runtime creates the socket's directory just before the watch on its parent is in
    /// place (so that watch never hears of it), and binds the socket in it once the waiter
    /// watches: the waiter must have moved its watch to the new directory.
    #[tokio::test]
    async fn a_directory_created_before_the_watch_is_not_missed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("nri");
        let sock = sub.join("nri.sock");
        let (mkdir, bind) = (sub.clone(), sock.clone());
        HOOKS.lock().unwrap().extend([
            (sock.clone(), "found", Box::new(move || std::fs::create_dir(&mkdir).unwrap()) as Hook),
            (sock.clone(), "watching", Box::new(move || std::fs::write(&bind, b"").unwrap()) as Hook),
        ]);
        let path = sock.clone();
        let waiter = tokio::spawn(async move { wait_for_socket(&path, None, LONG).await });
        expect_appeared(waiter).await;
    }

    async fn expect_appeared(waiter: tokio::task::JoinHandle<io::Result<Wake>>) {
        let r = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken by the watch");
        assert_eq!(r.unwrap().unwrap(), Wake::Appeared);
    }

    #[tokio::test]
    async fn wakes_when_the_file_appears_in_a_directory_created_later() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/deeper/nri.sock");
        // The fallback is far away: only the watch can wake the waiter.
        let path = sock.clone();
        let waiter = tokio::spawn(async move { wait_for_socket(&path, None, LONG).await });
        tokio::task::yield_now().await;
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/unrelated"), b"").unwrap();
        std::fs::write(&sock, b"").unwrap();
        expect_appeared(waiter).await;
    }

    #[tokio::test]
    async fn a_stale_file_does_not_count_its_replacement_does() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nri.sock");
        std::fs::write(&sock, b"").unwrap();
        let stale = file_id(&sock);
        let path = sock.clone();
        let waiter = tokio::spawn(async move { wait_for_socket(&path, stale, LONG).await });
        tokio::task::yield_now().await;
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::remove_file(&sock).unwrap();
        assert!(!waiter.is_finished());
        std::fs::write(&sock, b"").unwrap();
        expect_appeared(waiter).await;
    }

    #[tokio::test]
    async fn falls_back_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nri.sock");
        let w = wait_for_socket(&sock, None, Duration::from_millis(20)).await.unwrap();
        assert_eq!(w, Wake::Fallback);
    }
}
