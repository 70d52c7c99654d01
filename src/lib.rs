//! berth: a Host-routing HTTP load balancer on Pingora that discovers Docker containers by
//! label.
//!
//! # The pipeline
//!
//! ```text
//!  sources ──► Snapshot ──► merge ──► compile ──► RouteTable ──(swap)──► proxy (per request)
//!  (file,        model      control    table         table::live          proxy
//!   swarm,                      │
//!   docker)                     │
//!                               └── prober: probes every backend of the live table
//! ```
//!
//! 1. **Sources** ([`sources`]) turn the config file, the Docker engine and a Swarm manager into
//!    [`model::Snapshot`]s of services with unresolved policy; they know nothing of the control
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
//! Each module uses only modules of the layers below its own (and `metrics`, a leaf every
//! layer records into). `tests/architecture.rs` reads this table and fails when the code
//! disagrees with it, or when any two files depend on each other in a cycle.
//!
//! ```text
//!  layer  modules
//!  1      demo
//!  2      app                  wiring: listeners, sources, control plane, admin
//!  3      cli control proxy    the admin client; merge + compile; the ProxyHttp phases
//!  4      admin sources        the admin listener; file, Docker and Swarm -> Snapshot
//!  5      runtime tls          lifecycle, signals, logs; certificates and ACME
//!  6      table                compiled routes, upstreams, members (read by the proxy)
//!  7      config health        the file's restart-bound sections; probes and health state
//!  8      model whoami         the source-neutral language (Snapshot, policy); a test backend
//!  leaf   metrics
//! ```
//!
//! `model` (the source-neutral language) is the leaf the rest is written in; `health` holds
//! per-backend state and the probes, and knows no table; `table` holds what is compiled;
//! `sources` never import `control`; `tls` holds the certificates (the file source reloads
//! them, the ACME manager reads the live table for its domains); `runtime` (lifecycle,
//! signals, logs) is what the proxy and the control plane run on; `admin` and `proxy` read the
//! live table and the certificates; `app` wires everything.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod runtime;
pub mod sources;
pub mod table;
pub mod tls;
pub mod whoami;
