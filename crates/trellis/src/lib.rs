//! The `trellis` binary's library half: configuration, wiring and the CLI commands, so that the
//! end-to-end tests can run a whole server in-process.

pub mod access_logs;
pub mod agent;
pub mod app;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod fetch;
pub mod instances;
pub mod logs;
pub mod memory;
pub mod net;
pub mod netmgr;
pub mod status;
pub mod vpc;
pub mod watch;

#[cfg(test)]
mod testing;
