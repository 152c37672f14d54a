//! The command line: arguments in, one subcommand out. `serve` is the language server.

mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::lsp::{self, ServerOptions};

#[derive(Debug, Parser)]
#[command(
    name = "tierls",
    version,
    about = "A language server with a tiered team of local LLMs"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Language Server Protocol on stdin and stdout (what editors run).
    Serve,
    /// Run the server on a sample workspace and show what it does.
    Demo {
        /// The workspace to use instead of the bundled sample.
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
    /// Plan a refactor with the planner tier and carry it out with the executor tier.
    Plan {
        /// What to change, in plain words.
        instruction: String,
    },
    /// Index a workspace with tree-sitter and print statistics.
    Index {
        /// The workspace root.
        path: PathBuf,
    },
    /// Show the configured models, their memory needs and where they fit.
    Models,
    /// Run a benchmark and print its figures.
    Bench {
        /// Which benchmark.
        name: String,
    },
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Serve => serve(),
        Command::Demo { workspace } => demo::run(workspace),
        Command::Plan { .. } => not_yet("plan", "the plan issue"),
        Command::Index { .. } => not_yet("index", "the index issue"),
        Command::Models => not_yet("models", "the models issue"),
        Command::Bench { .. } => not_yet("bench", "the issues that add benchmarks"),
    }
}

fn serve() -> ExitCode {
    let options = ServerOptions {
        user_config: config::user_config_path(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::error(&format!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(lsp::serve_stdio(options));
    // Reading stdin may still block a runtime thread after `exit`: do not wait for it.
    runtime.shutdown_background();
    // LSP: exit status 0 when `shutdown` came first, 1 otherwise.
    if outcome.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Subcommands whose feature has not landed yet say so instead of pretending.
fn not_yet(command: &str, issue: &str) -> ExitCode {
    output::error(&format!(
        "`tierls {command}` is not available yet: it arrives with {issue}"
    ));
    ExitCode::from(2)
}
