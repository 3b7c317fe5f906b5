//! The systemd notification protocol (`sd_notify(3)`): one datagram of `KEY=value` lines to the
//! unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Used for `Type=notify` (`READY=1`), the watchdog (`WATCHDOG=1` at most every
//! `$WATCHDOG_USEC / 2`), `STATUS=` lines shown by `systemctl status`, and `STOPPING=1`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when not run by a service manager that listens (or the
    /// variable is unusable, which is logged).
    pub fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::open(&raw) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(notify_socket = %raw.to_string_lossy(), error = %e, "cannot use NOTIFY_SOCKET; no readiness or watchdog notifications");
                None
            }
        }
    }

    fn open(raw: &std::ffi::OsStr) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = raw.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(raw))?,
            _ => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither an absolute path nor @abstract"));
            }
        };
        Ok(Notifier { sock: UnixDatagram::unbound()?, addr })
    }

    /// Sends one notification (`"READY=1"`, `"WATCHDOG=1"`, `"STATUS=..."`, several separated by
    /// newlines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock.send_to_addr(state.as_bytes(), &self.addr).map(|_| ())
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, if it is set for this process
/// (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::open(path.as_os_str()).unwrap();
        n.notify("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("driftguard-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::open(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");

        assert!(Notifier::open(std::ffi::OsStr::new("relative")).is_err());
    }
}
