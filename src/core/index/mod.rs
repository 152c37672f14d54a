//! The codebase index: tree-sitter parsing, definitions and references, the repo map.

pub mod cache_format;
pub mod extract;
pub mod language;
pub mod live;
mod packed_references;
pub mod repo_graph;
pub mod repo_map;
pub mod table;
pub mod tag_patterns;
