//! berth: a Host-routing HTTP load balancer on Pingora that discovers Docker containers by
//! label. See the README for the design; the flow is sources -> snapshot -> merge -> compiled
//! route table (swapped atomically) -> proxy.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod controller;
pub mod cookie;
pub mod demo;
pub mod docker;
pub mod health;
pub mod hostname;
pub mod logging;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod proxy;
pub mod router;
pub mod serve;
pub mod signals;
pub mod state;
pub mod upstream;
pub mod whoami;
