//! Backend health as berth judges it: the per-backend state machine under active probes
//! ([`state`]), the active probes ([`probe`]), and ejection on failing requests ([`passive`]).
//! The driver that runs the probes over the live table is part of the control plane
//! ([`crate::control::prober`]), so nothing here depends on the table.

pub mod clock;
pub mod passive;
pub mod probe;
pub mod state;
