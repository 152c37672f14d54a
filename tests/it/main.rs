//! One integration-test binary: every test drives the same library the CLI uses.

mod budget;
mod cli;
mod completion;
mod config;
mod documents;
mod editors;
mod fake_node;
mod index;
mod models;
mod nodes;
mod plan_lsp;
mod plans;
mod positions;
mod protocol;
mod queries;
mod support;
mod tiers;
mod workers;
