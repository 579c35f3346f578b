//! The end-to-end tests: one binary, modules per area. `support` runs a whole server in-process
//! on 127.0.0.1:0 with its store in a temp dir; `process` runs the real binary.

mod support;

mod api;
mod process;
