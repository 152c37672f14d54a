//! The command line: arguments in, one subcommand out. `serve` is the language server.

mod bench;
mod bench_completion;
mod bench_fan_out;
mod bench_index;
mod bench_nodes;
mod bench_plan;
mod bench_pull;
mod bench_quality;
mod bench_rounds;
mod bench_routing;
mod bench_server;
mod demo;
mod index;
mod models;
mod output;
mod plan;
mod pull;
mod route;
mod scripted;
mod status;

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
    Serve {
        /// Serve tiers with scripted models instead (a JSON file: for each tier, a list of
        /// `{"needle": …, "answers": […]}`): for deterministic editor tests only.
        #[arg(long, hide = true, value_name = "FILE")]
        scripted_models: Option<PathBuf>,
    },
    /// Run the server on a sample workspace and show what it does.
    Demo {
        /// The workspace to use instead of the bundled sample.
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
    /// Plan a refactor with the planner tier and carry it out with the executor tier.
    /// Prints the plan and a unified diff; `--apply` writes the files.
    Plan {
        /// What to change, in plain words.
        instruction: String,
        /// The workspace root (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// What the plan is about: a file, or `FILE:SYMBOL` (a qualified path such as
        /// `src/geometry.rs:Circle::area`). Repeatable.
        #[arg(long, value_name = "PATH[:SYMBOL]")]
        focus: Vec<String>,
        /// Write the changed files (all or none).
        #[arg(long, conflicts_with = "dry_run")]
        apply: bool,
        /// Only print the plan and the diff (the default).
        #[arg(long)]
        dry_run: bool,
        /// With `--apply`: write the files even when `plan.check` fails on them.
        #[arg(long, requires = "apply")]
        apply_failing: bool,
    },
    /// Print where the routing rule sends a refactor and its step's answers, and why,
    /// without running a model (for tuning `[routing]`).
    Route {
        /// What to change, in plain words.
        instruction: String,
        /// The workspace root (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// What the refactor is about: a file, or `FILE:SYMBOL`. Repeatable.
        #[arg(long, value_name = "PATH[:SYMBOL]")]
        focus: Vec<String>,
    },
    /// Index a workspace with tree-sitter and print statistics, or its repo map.
    Index {
        /// The workspace root.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Print the repo map focused on these files (relative to PATH) instead.
        #[arg(long = "map", value_name = "FILE")]
        map: Vec<String>,
        /// The repo map's budget, in tokens.
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        /// Index from scratch: neither read nor write the persisted index.
        #[arg(long)]
        no_cache: bool,
    },
    /// Show each tier's model, its memory needs and where it fits on this machine, and the
    /// models in the cache.
    Models {
        /// The workspace whose `tierls.toml` names the models (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download a model from Hugging Face into the model cache (`hf://owner/repo/file.gguf`
    /// or `owner/repo:QUANT`), resuming a partial download; `HF_ENDPOINT` and `HF_TOKEN`
    /// are honoured. Prints the model's local path.
    Pull {
        /// The model: `hf://owner/repo/path/file.gguf`, `hf://owner/repo:Q4_K_M`, or either
        /// without `hf://`.
        model: String,
    },
    /// Probe the worker nodes and show their health, load and latency, and what serves
    /// each tier. Exit status 1 when some node is not healthy.
    Status {
        /// The workspace whose `tierls.toml` names the nodes (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a benchmark and print its figures: `models` (the embedded llama.cpp backend),
    /// `index PATH` (the workspace index against ctags), `completion [TRACE]` (a recorded
    /// typing session replayed through the server), `quality [REPO]` (completions on holes
    /// cut in a repository: context recall, exact lines with the index and without, token
    /// healing, the prompt build's time), `plan` (fixture refactors: planner
    /// against executor tokens, one executor against two, answers right the first time, then
    /// the fan-out cases, which `fan-out` runs alone, and the check rounds, which `rounds`
    /// runs alone), `routing` (the routing rule against always planning, and its cost per
    /// decision),
    /// `nodes` (llama-server worker nodes on loopback through the router) or `server`
    /// (completion latency idle against during a 2,000-file reindex; memory over 20,000
    /// completions) or `pull` (a model downloaded from a hub on loopback against the bare
    /// transfer, and a resume after a cut).
    Bench {
        /// Which benchmark.
        name: String,
        /// The GGUF model to measure (default: the test model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// `index`: the tree to index (default: the current directory); `completion`: the
        /// trace to replay (default: tests/fixtures/traces/typing-shapes.json); `quality`:
        /// the repository to cut holes in (default: tests/fixtures/quality).
        path: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    crate::logging::init();
    match args.command {
        Command::Serve { scripted_models } => serve(scripted_models),
        Command::Demo { workspace } => demo::run(workspace),
        Command::Plan {
            instruction,
            workspace,
            focus,
            apply,
            dry_run: _,
            apply_failing,
        } => plan::run(plan::PlanArgs {
            instruction,
            workspace,
            focus,
            apply,
            apply_failing,
        }),
        Command::Route {
            instruction,
            workspace,
            focus,
        } => route::run(route::RouteArgs {
            instruction,
            workspace,
            focus,
        }),
        Command::Index {
            path,
            json,
            map,
            tokens,
            no_cache,
        } => index::run(path, json, map, tokens, !no_cache),
        Command::Models { workspace, json } => models::run(workspace, json),
        Command::Pull { model } => pull::run(&model),
        Command::Status { workspace, json } => status::run(workspace, json),
        Command::Bench { name, model, path } => bench::run(&name, model, path),
    }
}

fn serve(scripted_models: Option<PathBuf>) -> ExitCode {
    let provided_models = match scripted_models.map(|path| scripted::load(&path)) {
        None => Vec::new(),
        Some(Ok(models)) => models,
        Some(Err(err)) => {
            output::error(&err);
            return ExitCode::from(2);
        }
    };
    let options = ServerOptions {
        user_config: config::user_config_path(),
        provided_models,
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
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

/// The configuration a command runs with in `workspace`: the user's `tierls.toml`, then the
/// workspace's. Every file error, when there are any.
fn workspace_config(
    workspace: &std::path::Path,
) -> Result<config::Config, Vec<config::ConfigError>> {
    let not_a_folder = |message: String| {
        vec![config::ConfigError {
            source_name: "--workspace".into(),
            location: None,
            key: None,
            message,
        }]
    };
    match std::fs::metadata(workspace) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(not_a_folder(format!(
                "{} is a file; give the workspace's folder",
                workspace.display()
            )));
        }
        Err(err) => return Err(not_a_folder(format!("{}: {err}", workspace.display()))),
    }
    let mut sources = config::ConfigSources::new(
        config::user_config_path(),
        Some(workspace.join(config::CONFIG_FILE_NAME)),
    );
    let errors = sources.reload_files();
    if errors.is_empty() {
        Ok(sources.resolve())
    } else {
        Err(errors)
    }
}

/// Prints each configuration error; the exit status for them.
fn config_errors(errors: Vec<config::ConfigError>) -> ExitCode {
    for error in errors {
        output::error(&error.to_string());
    }
    ExitCode::from(2)
}

/// Builds a tokio runtime, saying why when it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|err| output::error(&format!("cannot start the async runtime: {err}")))
        .ok()
}
