//! Backend health as berth judges it: the per-backend state machine ([`state`]) and the
//! active probes ([`probe`]). The driver that runs the probes over the live table is part of
//! the control plane ([`crate::control::prober`]), so nothing here depends on the table.

pub mod probe;
pub mod state;
