//! What `/healthz` and `/readyz` answer, and what gates the systemd watchdog ping.
//!
//! * **Live** (`/healthz` 200, watchdog pinged): the agent is doing everything it can. The
//!   ring-buffer reader is polling (its heartbeat is recent), and NRI is either registered with
//!   the runtime, or waiting for a runtime that is not there (no socket, or nobody listening —
//!   e.g. at boot before containerd, or while containerd restarts: restarting the agent would not
//!   help, and the pinned enforcement keeps working), or in a handshake that started less than
//!   [`HANDSHAKE_GRACE`] ago. It is **not** live when the reader stalled or died, or when the
//!   runtime's socket accepts connections but the agent has not been registered for longer than
//!   the grace period (registration refused, handshake stuck): then a restart is the remedy.
//! * **Ready** (`/readyz` 200): live *and* registered with the runtime, i.e. containers starting
//!   now get their policy. Not ready while the runtime is absent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::enforcer::ReaderHeartbeat;

/// How long the ring-buffer reader may go without a poll before the agent counts as stuck. It
/// polls every 100 ms and after every event.
pub const READER_STALL: Duration = Duration::from_secs(10);
/// How long the runtime's socket may accept connections without the agent getting registered
/// before the agent counts as stuck (the runner's own configure timeout is 30 s).
pub const HANDSHAKE_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Nri {
    /// No connection attempt has finished yet.
    Starting,
    /// The runtime's socket cannot be connected to (absent, or nobody listening).
    Unreachable { since: Instant, error: String },
    /// Connected, not registered; `since` is the first connection of this streak (it survives
    /// reconnects that never got registered).
    Handshake { since: Instant },
    /// Configured by the runtime.
    Registered { since: Instant, runtime: String },
}

/// Health of the running agent, fed by the NRI connection events and the event reader.
#[derive(Debug)]
pub struct Health {
    nri: Mutex<Nri>,
    reader: Mutex<Option<ReaderHeartbeat>>,
}

impl Default for Health {
    fn default() -> Self {
        Health { nri: Mutex::new(Nri::Starting), reader: Mutex::new(None) }
    }
}

/// A health verdict: `Ok` or `Err`, each with a human-readable body (one fact per line).
pub type Verdict = Result<String, String>;

impl Health {
    /// Watch this ring-buffer reader.
    pub fn set_reader(&self, hb: ReaderHeartbeat) {
        if let Ok(mut r) = self.reader.lock() {
            *r = Some(hb);
        }
    }

    /// A connection attempt failed (the runtime is not there).
    pub fn nri_unreachable(&self, error: &str) {
        self.set(|n| match n {
            Nri::Unreachable { since, .. } => Nri::Unreachable { since: *since, error: error.to_string() },
            _ => Nri::Unreachable { since: Instant::now(), error: error.to_string() },
        });
    }

    /// Connected to the runtime's socket.
    pub fn nri_connected(&self) {
        self.set(|n| match n {
            Nri::Handshake { since } => Nri::Handshake { since: *since },
            _ => Nri::Handshake { since: Instant::now() },
        });
    }

    /// Configured (registered) by the runtime.
    pub fn nri_registered(&self, runtime: String) {
        self.set(|_| Nri::Registered { since: Instant::now(), runtime });
    }

    /// The connection ended. After a registered session the runtime is presumably restarting;
    /// after an unregistered one the handshake streak goes on.
    pub fn nri_disconnected(&self) {
        self.set(|n| match n {
            Nri::Registered { .. } => Nri::Unreachable { since: Instant::now(), error: "connection closed".into() },
            other => other.clone(),
        });
    }

    fn set(&self, f: impl FnOnce(&Nri) -> Nri) {
        if let Ok(mut n) = self.nri.lock() {
            *n = f(&n);
        }
    }

    /// Whether NRI is registered with the runtime.
    pub fn registered(&self) -> bool {
        matches!(self.nri.lock().as_deref(), Ok(Nri::Registered { .. }))
    }

    fn reader_line(&self) -> (bool, String) {
        let hb = self.reader.lock().ok().and_then(|r| r.clone());
        match hb {
            None => (false, "ring buffer reader: not started".into()),
            Some(hb) if hb.stopped() => (false, "ring buffer reader: stopped".into()),
            Some(hb) => {
                let age = hb.age();
                if age > READER_STALL {
                    (false, format!("ring buffer reader: stalled, last poll {}s ago", age.as_secs()))
                } else {
                    (true, "ring buffer reader: polling".into())
                }
            }
        }
    }

    fn nri_line(&self) -> (bool, bool, String) {
        let nri = self.nri.lock().map(|n| n.clone()).unwrap_or(Nri::Starting);
        match nri {
            Nri::Starting => (true, false, "nri: connecting".into()),
            Nri::Unreachable { since, error } => (
                true,
                false,
                format!(
                    "nri: runtime not reachable for {}s, waiting for its socket ({error})",
                    since.elapsed().as_secs()
                ),
            ),
            Nri::Handshake { since } => {
                let s = since.elapsed();
                if s > HANDSHAKE_GRACE {
                    (false, false, format!("nri: connected but not registered for {}s", s.as_secs()))
                } else {
                    (true, false, format!("nri: registering ({}s)", s.as_secs()))
                }
            }
            Nri::Registered { since, runtime } => {
                (true, true, format!("nri: registered with {runtime} for {}s", since.elapsed().as_secs()))
            }
        }
    }

    /// `/healthz`: live (see the module documentation).
    pub fn liveness(&self) -> Verdict {
        let (reader_ok, reader) = self.reader_line();
        let (nri_ok, _, nri) = self.nri_line();
        if reader_ok && nri_ok {
            Ok(format!("ok\n{reader}\n{nri}\n"))
        } else {
            Err(format!("unhealthy\n{reader}\n{nri}\n"))
        }
    }

    /// `/readyz`: live and registered with the runtime.
    pub fn readiness(&self) -> Verdict {
        let (reader_ok, reader) = self.reader_line();
        let (nri_ok, registered, nri) = self.nri_line();
        if reader_ok && nri_ok && registered {
            Ok(format!("ready\n{reader}\n{nri}\n"))
        } else {
            Err(format!("not ready\n{reader}\n{nri}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_absent_is_live_not_ready() {
        let h = Health::default();
        assert!(h.liveness().unwrap_err().contains("ring buffer reader: not started"));
        h.set_reader(ReaderHeartbeat::beating());
        h.nri_unreachable("No such file or directory");
        let live = h.liveness().unwrap();
        assert!(live.contains("waiting for its socket (No such file or directory)"), "{live}");
        assert!(h.readiness().unwrap_err().starts_with("not ready\n"));
        h.nri_connected();
        assert!(h.liveness().is_ok());
        h.nri_registered("containerd v2.1.0".into());
        assert!(h.readiness().unwrap().contains("registered with containerd v2.1.0"));
        h.nri_disconnected();
        assert!(h.liveness().is_ok() && h.readiness().is_err() && !h.registered());
    }

    #[test]
    fn stuck_handshake_and_stopped_reader_are_not_live() {
        let h = Health::default();
        let hb = ReaderHeartbeat::beating();
        h.set_reader(hb.clone());
        *h.nri.lock().unwrap() = Nri::Handshake { since: Instant::now() - HANDSHAKE_GRACE - Duration::from_secs(1) };
        assert!(h.liveness().unwrap_err().contains("connected but not registered"));
        // Reconnects that never register do not restart the grace period.
        h.nri_disconnected();
        h.nri_connected();
        assert!(h.liveness().is_err());
        h.nri_registered("containerd".into());
        assert!(h.liveness().is_ok());
        hb.stop();
        assert!(h.liveness().unwrap_err().contains("ring buffer reader: stopped"));
    }
}
