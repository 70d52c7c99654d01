//! Running berth and looking at it: the admin listener (with the status page and the traffic
//! sampler behind it), the `berth routes` command, signals, the process lifecycle, the access log
//! and operational logging.

pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod exposition;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod present;
pub mod readiness;
pub mod routes_api;
pub mod routes_report;
pub mod signals;
pub mod status_page;
pub mod systemd;
pub mod traffic;
