//! `tierls pull MODEL`: a model from Hugging Face into the model cache, with a progress bar;
//! and the same for the tiers a command is about to run.

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::output;
use crate::config::{ModelSource, Tier, Tiers};
use crate::core::budget::human_bytes;
use crate::core::hub::HubModel;
use crate::models::hub::{FetchProgress, Hub, model_cache};

pub fn run(model: &str) -> ExitCode {
    let model = match HubModel::parse(model) {
        Ok(model) => model,
        Err(err) => {
            output::error(&err);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::error(&format!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let hub = Hub::from_env(model_cache());
    match runtime.block_on(fetch_with_bar(&hub, &model)) {
        Ok(path) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            output::line(&format!(
                "{model}: {} ({})",
                path.display(),
                human_bytes(size)
            ));
            ExitCode::SUCCESS
        }
        Err(err) => {
            output::error(&err.to_string());
            ExitCode::FAILURE
        }
    }
}

/// Fetches every tier's Hugging Face model that is not in the cache yet; a failure is
/// reported and leaves that tier unconfigured (the caller's `configure_all` names it).
pub async fn fetch_configured(tiers: &Tiers) {
    let hub = Hub::from_env(model_cache());
    for tier in Tier::ALL {
        let Some(ModelSource::HuggingFace(model)) = &tiers.get(tier).model else {
            continue;
        };
        if hub.cached(model).is_some() {
            continue;
        }
        if let Err(err) = fetch_with_bar(&hub, model).await {
            output::error(&format!("the {tier} tier (tiers.{tier}.model): {err}"));
        }
    }
}

async fn fetch_with_bar(
    hub: &Hub,
    model: &HubModel,
) -> Result<std::path::PathBuf, crate::models::hub::HubError> {
    let mut bar = Bar::new();
    let fetched = hub.fetch(model, &mut bar).await;
    bar.0.finish_and_clear();
    fetched
}

/// A progress bar on stderr (stdout is for results).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("asking the hub");
        Bar(bar)
    }
}

impl FetchProgress for Bar {
    fn file(&mut self, name: &str, total: u64, done: u64) {
        self.0.set_style(
            ProgressStyle::with_template(
                "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.set_message(if done > 0 {
            format!("{name} (resumed)")
        } else {
            name.to_owned()
        });
    }

    fn advance(&mut self, done: u64) {
        self.0.set_position(done);
    }

    fn waiting(&mut self, name: &str) {
        self.0
            .set_message(format!("{name}: another tierls is downloading it; waiting"));
    }
}
