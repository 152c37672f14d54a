//! One integration-test binary: every test drives the same library the CLI uses.
// Tests that run a model hold `support::one_model_at_a_time` across awaits on purpose: each
// test has a runtime and a thread of its own, and the guard only orders whole tests.
#![allow(clippy::await_holding_lock)]
// Tests report seeds and figures on stderr, where cargo test shows them on failure.
#![allow(clippy::print_stderr)]

mod agent_edits;
mod budget;
mod checks;
mod cli;
mod completion;
mod config;
mod consistency;
mod context;
mod documents;
mod drafting;
mod editors;
mod fake_node;
mod fuzz;
mod heal;
mod hostile;
mod hub;
mod index;
mod index_cache;
mod models;
mod nodes;
mod plan_lsp;
mod plans;
mod positions;
mod protocol;
mod queries;
mod reload;
mod rounds;
mod routing;
mod support;
mod tiers;
mod vscode;
mod workers;
mod workspace;
