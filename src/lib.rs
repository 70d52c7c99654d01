//! berth: a Host-routing HTTP load balancer on Pingora that discovers Docker containers by
//! label.
//!
//! # The pipeline
//!
//! ```text
//!  sources ──► Snapshot ──► merge ──► compile ──► RouteTable ──(swap)──► proxy (per request)
//!  (file,        spec        control    table         table::live          proxy
//!   swarm,                      │
//!   docker)                     │
//!                               └── prober: probes every backend of the live table
//! ```
//!
//! 1. **Sources** ([`sources`]) turn the config file, the Docker engine and a Swarm manager into
//!    [`spec::Snapshot`]s of services with unresolved policy; they know nothing of the control
//!    plane.
//! 2. The **control plane** ([`control`]) merges every source's latest snapshot in precedence
//!    order, lays each service's policy over the file's `defaults:`, compiles a
//!    [`table::RouteTable`] (reusing unchanged upstreams) and publishes it with one atomic swap.
//! 3. The **proxy** ([`proxy`]) reads the live table once per request, picks a backend and
//!    records metrics with handles resolved at compile time. In front of it, one
//!    [`proxy::guard::Guarded`] per listener bounds connections and request heads before
//!    Pingora reads them.
//!
//! # Module dependencies (one direction, no cycles)
//!
//! ```text
//!  app ─► proxy ─► ops ─► tls ─► table ─► health ─► spec
//!   │              │       ▲       │        │        ▲
//!   ├─► control ───┼───────┼───────┘        │        │
//!   │     └─► sources ─────┴────────────────┼────────┤
//!   └─► config ─────────────────────────────┴────────┘      metrics (a leaf, used by all above)
//! ```
//!
//! `spec` (the source-neutral language) is the leaf; `health` holds per-backend state and the
//! probes, and knows no table; `table` holds what is compiled; `sources` never import `control`;
//! `tls` holds the certificates (the file source reloads them, the ACME manager reads the live
//! table for its domains); `ops` (admin, signals, logs) and `proxy` read the live table and
//! the certificates; `app` wires everything.

pub mod app;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod sources;
pub mod spec;
pub mod table;
pub mod tls;
pub mod whoami;
