//! The agent's answer for an NRI request whose handler missed its deadline
//! ([`nri_plugin::Plugin::on_deadline`]).

use nri_plugin::api::{Container, Event, PodSandbox};
use nri_plugin::{Overrun, OverrunAnswer};

use crate::policy::Mode;

/// CreateContainer / StartContainer (dedicated or as `StateChange`) of a container that is opted
/// in — or whose annotations cannot be read — is refused: it must not start without its policy.
/// A container with mode `off` may start (the handler would not have installed anything).
/// Everything else proceeds: Synchronize's reconciliation, and the policy removal of Stop/
/// RemoveContainer, finish in the background (a running container cannot be refused anyway),
/// and the vanished-cgroup collector catches what is left.
pub fn answer<E>(o: &Overrun<'_>, mode_of: impl FnOnce(&PodSandbox, &Container) -> Result<Mode, E>) -> OverrunAnswer {
    match o.event {
        Some(Event::CREATE_CONTAINER | Event::START_CONTAINER) => match (o.pod, o.container) {
            (Some(pod), Some(ctr)) => match mode_of(pod, ctr) {
                Ok(Mode::Off) => OverrunAnswer::Proceed,
                _ => OverrunAnswer::Error,
            },
            _ => OverrunAnswer::Error,
        },
        _ => OverrunAnswer::Proceed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nri_plugin::DeadlinePolicy;

    #[test]
    fn opted_in_containers_are_refused_others_proceed() {
        let d = DeadlinePolicy::default().deadline(std::time::Duration::from_secs(2));
        let (pod, ctr) = (PodSandbox::new(), Container::new());
        let on =
            |ev, mode: Result<Mode, ()>| answer(&Overrun::new("X", Some(ev), Some(&pod), Some(&ctr), d), |_, _| mode);
        for ev in [Event::CREATE_CONTAINER, Event::START_CONTAINER] {
            assert_eq!(on(ev, Ok(Mode::Enforce)), OverrunAnswer::Error);
            assert_eq!(on(ev, Ok(Mode::Monitor)), OverrunAnswer::Error);
            assert_eq!(on(ev, Err(())), OverrunAnswer::Error, "bad annotations");
            assert_eq!(on(ev, Ok(Mode::Off)), OverrunAnswer::Proceed);
        }
        assert_eq!(on(Event::STOP_CONTAINER, Ok(Mode::Enforce)), OverrunAnswer::Proceed);
        assert_eq!(on(Event::REMOVE_CONTAINER, Ok(Mode::Enforce)), OverrunAnswer::Proceed);
        let sync = Overrun::new("Synchronize", None, None, None, d);
        assert_eq!(answer(&sync, |_, _| Ok::<_, ()>(Mode::Enforce)), OverrunAnswer::Proceed);
        let no_ctr = Overrun::new("StartContainer", Some(Event::START_CONTAINER), Some(&pod), None, d);
        assert_eq!(answer(&no_ctr, |_, _| Ok::<_, ()>(Mode::Off)), OverrunAnswer::Error);
    }
}
