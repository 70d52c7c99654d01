//! The process facilities the data path and the control plane run on: the lifecycle (requests
//! in flight, shutting down), signals, systemd notifications, readiness, operational and
//! access logging, and handing freed memory back to the system.

pub mod access_log;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod readiness;
pub mod signals;
pub mod systemd;
