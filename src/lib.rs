//! tierls: a language server that puts a tiered team of local LLMs into any LSP editor.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod completion;
pub mod config;
pub mod core;
pub mod disk;
pub mod logging;
pub mod lsp;
pub mod models;
pub mod refactor;
pub mod route_log;
pub mod scan;
pub mod sync;
pub mod workspace;
