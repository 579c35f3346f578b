//! The end-to-end tests: one binary, modules per area. `support` runs a whole server in-process
//! on 127.0.0.1:0 with its store in a temp dir; `process` runs the real binary.

// A test binary: an unwrap that fails is a test that fails, with its location.
#![allow(clippy::unwrap_used)]

mod support;

mod api;
mod process;
