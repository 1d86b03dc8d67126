//! The `citadel` binary's library: the CLI, the config file, the data
//! directory, the demo model server and `serve`, which wires the rooms
//! together. Kept as a library so integration tests run the real server
//! in-process as well as the real binary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit_cli;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod demo;
pub mod keys_cli;
pub mod machines_cli;
pub mod privacy_cli;
pub mod serve;
pub mod user_cli;
