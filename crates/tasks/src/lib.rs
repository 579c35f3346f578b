//! ECS tasks as processes: the built-in images (`images`), and running one task's containers
//! (`process`). The scheduling of tasks for services, and their registration into Lattice
//! target groups, is the `trellis` binary's (it owns the store and the APIs).

pub mod images;
pub mod plan;
pub mod process;
