//! driftguard: stop container drift on Kubernetes nodes.
//!
//! - [`enforcer`]: loads the BPF programs in `bpf/`, pins them, manages per-cgroup policy
//!   and streams verdict events.
//! - [`policy`]: the policy model (mode, rules, path lists) and its kernel encoding.
//! - [`provenance`]: which filesystem a container's code may come from (its root overlay,
//!   exempted volumes), read from mountinfo before the entrypoint runs.
//! - [`check`]: `driftguard check`'s items: is this node ready, and what to change if not.
//! - [`install`]: putting one container under policy, for the agent and the OCI hook alike.
//! - [`node_state`]: what is kept outside bpffs for a pin dir, and which pin dir owns it.
//! - [`demo`]: `driftguard demo`'s image, overlay, runc container, enforcement and cleanup.
pub mod agent;
pub mod annotations;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod demo;
pub mod enforcer;
pub mod install;
pub mod node_state;
pub mod policy;
pub mod provenance;
