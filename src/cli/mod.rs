//! The commands that talk to a running berth from outside it: `berth healthcheck` and
//! `berth routes`, over the admin listener.

pub mod admin_client;
pub mod routes_report;
