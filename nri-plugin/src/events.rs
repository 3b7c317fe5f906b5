//! NRI events and the subscription mask.

use std::fmt;

use crate::api::Event;
use crate::error::Error;

/// Set of NRI events a plugin subscribes to; bit `n - 1` stands for the event numbered `n`
/// (`RUN_POD_SANDBOX` = 1 ... `VALIDATE_CONTAINER_ADJUSTMENT` = 14), as in the `events` field of
/// `ConfigureResponse`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventMask(u32);

/// What an NRI event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A pod sandbox (the request carries a pod).
    Pod,
    /// A container of a pod (the request carries a pod and a container).
    Container,
}

/// One NRI event: its number, its method name on the `Plugin` service, and its scope.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventInfo {
    pub(crate) event: Event,
    pub(crate) name: &'static str,
    pub(crate) scope: Scope,
}

/// Defines [`EVENTS`] and [`PLUGIN_METHODS`](crate::plugin::PLUGIN_METHODS) from one list.
macro_rules! nri_events {
    ($($event:ident => $name:literal, $scope:ident;)*) => {
        /// Every event this crate knows, in protocol order (event number `n` at index `n - 1`):
        /// the one list the mask, the names, the method table and the dispatch use (a request is
        /// routed by the event whose method it names, see [`event_of_method`]).
        pub(crate) const EVENTS: &[EventInfo] =
            &[$(EventInfo { event: Event::$event, name: $name, scope: Scope::$scope }),*];
        /// Methods of the `Plugin` service: the session methods and one per event.
        pub(crate) const PLUGIN_METHODS: &[&str] =
            &["Configure", "Synchronize", "Shutdown", "StateChange", $($name),*];
    };
}

nri_events! {
    RUN_POD_SANDBOX => "RunPodSandbox", Pod;
    STOP_POD_SANDBOX => "StopPodSandbox", Pod;
    REMOVE_POD_SANDBOX => "RemovePodSandbox", Pod;
    CREATE_CONTAINER => "CreateContainer", Container;
    POST_CREATE_CONTAINER => "PostCreateContainer", Container;
    START_CONTAINER => "StartContainer", Container;
    POST_START_CONTAINER => "PostStartContainer", Container;
    UPDATE_CONTAINER => "UpdateContainer", Container;
    POST_UPDATE_CONTAINER => "PostUpdateContainer", Container;
    STOP_CONTAINER => "StopContainer", Container;
    REMOVE_CONTAINER => "RemoveContainer", Container;
    UPDATE_POD_SANDBOX => "UpdatePodSandbox", Pod;
    POST_UPDATE_POD_SANDBOX => "PostUpdatePodSandbox", Pod;
    VALIDATE_CONTAINER_ADJUSTMENT => "ValidateContainerAdjustment", Container;
}

/// Number of the last event this crate knows.
const LAST_EVENT: i32 = EVENTS.len() as i32;

/// The entry of a known event (`None` for `UNKNOWN` and `LAST`).
pub(crate) fn info(event: Event) -> Option<&'static EventInfo> {
    EVENTS.iter().find(|i| i.event == event)
}

/// The event whose request is the `Plugin` method `method` (`None` for session methods).
pub(crate) fn event_of_method(method: &str) -> Option<Event> {
    EVENTS.iter().find(|i| i.name == method).map(|i| i.event)
}

impl EventMask {
    /// No event. (On the wire an empty mask means "all events" to the runtime; the runner never
    /// sends it unless asked to with [`EventMask::from_bits`]`(0)`.)
    pub const EMPTY: EventMask = EventMask(0);

    /// The eleven pod and container lifecycle events every NRI runtime knows (events 1-11:
    /// RunPodSandbox, StopPodSandbox, RemovePodSandbox, CreateContainer, PostCreateContainer,
    /// StartContainer, PostStartContainer, UpdateContainer, PostUpdateContainer, StopContainer,
    /// RemoveContainer). This is the default subscription: runtimes before NRI v0.10
    /// (containerd < 2.2) reject bits they do not know.
    pub const LIFECYCLE: EventMask = EventMask((1 << 11) - 1);

    /// Every event up to NRI v0.12, including UpdatePodSandbox, PostUpdatePodSandbox and
    /// ValidateContainerAdjustment (needs a runtime with NRI v0.10 or later).
    pub const ALL: EventMask = EventMask((1 << LAST_EVENT) - 1);

    /// A mask from raw bits; errors on bits of no known event.
    pub fn from_bits(bits: u32) -> Result<EventMask, Error> {
        if bits & !Self::ALL.0 != 0 {
            return Err(Error::InvalidEventMask(bits));
        }
        Ok(EventMask(bits))
    }

    /// A mask of the given events.
    pub fn of(events: &[Event]) -> EventMask {
        events.iter().fold(Self::EMPTY, |m, e| m.with(*e))
    }

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// This mask plus `event` (`UNKNOWN` and `LAST` are ignored).
    pub const fn with(self, event: Event) -> EventMask {
        let n = event as i32;
        if n >= 1 && n <= LAST_EVENT {
            EventMask(self.0 | 1 << (n - 1))
        } else {
            self
        }
    }

    /// This mask without `event`.
    pub const fn without(self, event: Event) -> EventMask {
        let n = event as i32;
        if n >= 1 && n <= LAST_EVENT {
            EventMask(self.0 & !(1 << (n - 1)))
        } else {
            self
        }
    }

    /// Whether `event` is in the mask.
    pub fn contains(self, event: Event) -> bool {
        let n = event as i32;
        (1..=LAST_EVENT).contains(&n) && self.0 & (1 << (n - 1)) != 0
    }

    /// Whether the mask is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The events in the mask, in protocol order.
    pub fn iter(self) -> impl Iterator<Item = Event> {
        EVENTS.iter().map(|i| i.event).filter(move |e| self.contains(*e))
    }
}

impl std::ops::BitOr for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventMask) -> EventMask {
        EventMask(self.0 | rhs.0)
    }
}

impl std::ops::BitOr<Event> for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: Event) -> EventMask {
        self.with(rhs)
    }
}

impl FromIterator<Event> for EventMask {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, |m, e| m.with(e))
    }
}

impl fmt::Debug for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventMask({:#x}: {})", self.0, self)
    }
}

impl fmt::Display for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(event_name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// The CamelCase name of an event, as used by the NRI method names (`"StartContainer"`).
pub fn event_name(event: Event) -> &'static str {
    match info(event) {
        Some(i) => i.name,
        None if event == Event::UNKNOWN => "Unknown",
        None => "Last",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_protocol() {
        assert_eq!(EventMask::EMPTY.with(Event::RUN_POD_SANDBOX).bits(), 1);
        assert_eq!(EventMask::EMPTY.with(Event::START_CONTAINER).bits(), 1 << 5);
        assert_eq!(EventMask::LIFECYCLE.bits(), 0x7ff);
        assert_eq!(EventMask::ALL.bits(), 0x3fff);
        assert!(EventMask::from_bits(1 << 14).is_err());
        assert_eq!(EventMask::ALL.iter().count(), 14);
        let m = EventMask::of(&[Event::START_CONTAINER, Event::REMOVE_CONTAINER]);
        assert!(m.contains(Event::START_CONTAINER));
        assert!(!m.contains(Event::CREATE_CONTAINER));
        assert_eq!(m.to_string(), "StartContainer,RemoveContainer");
        assert_eq!(m.without(Event::START_CONTAINER).bits(), 1 << 10);
        assert!(!EventMask::ALL.contains(Event::LAST));
    }
}
