//! The pure core: documents, positions, the index, completion prompts and plans.
//!
//! Nothing in here imports `tower_lsp`, `lsp_types`, `tokio`, `serde_json` or `std::fs`:
//! every input arrives as plain data, so the LSP shell, the CLI and the tests drive the
//! same code.

pub mod budget;
pub mod completion;
pub mod document;
pub mod draft;
pub mod explain;
pub mod generation;
pub mod heal;
pub mod hidden;
pub mod holes;
pub mod hub;
pub mod index;
pub mod plan;
pub mod position;
pub mod route;
pub mod speculate;
pub mod store;
