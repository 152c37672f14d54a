//! The configuration sources of one server, each keeping its last good layer.

use std::path::PathBuf;

use super::{Config, ConfigError, ConfigLayer, load_file};

/// Where configuration comes from, lowest precedence first.
#[derive(Debug, Default)]
pub struct ConfigSources {
    user_file: Option<PathBuf>,
    workspace_file: Option<PathBuf>,
    user: ConfigLayer,
    workspace: ConfigLayer,
    initialization_options: ConfigLayer,
    settings: ConfigLayer,
}

impl ConfigSources {
    pub fn new(user_file: Option<PathBuf>, workspace_file: Option<PathBuf>) -> Self {
        ConfigSources {
            user_file,
            workspace_file,
            ..Default::default()
        }
    }

    pub fn workspace_file(&self) -> Option<&PathBuf> {
        self.workspace_file.as_ref()
    }

    /// Re-reads both files. A file that fails keeps its last good layer, and its error is
    /// returned; a file that disappeared stops contributing.
    pub fn reload_files(&mut self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (path, layer) in [
            (&self.user_file, &mut self.user),
            (&self.workspace_file, &mut self.workspace),
        ] {
            let Some(path) = path else { continue };
            match load_file(path) {
                Ok(loaded) => *layer = loaded.unwrap_or_default(),
                Err(err) => errors.push(err),
            }
        }
        errors
    }

    /// Replaces the layer from LSP `initializationOptions`, unless it failed to parse.
    pub fn set_initialization_options(
        &mut self,
        layer: Result<ConfigLayer, ConfigError>,
    ) -> Option<ConfigError> {
        replace_if_good(&mut self.initialization_options, layer)
    }

    /// Replaces the layer from `workspace/didChangeConfiguration`, unless it failed to parse.
    pub fn set_settings(&mut self, layer: Result<ConfigLayer, ConfigError>) -> Option<ConfigError> {
        replace_if_good(&mut self.settings, layer)
    }

    pub fn resolve(&self) -> Config {
        Config::from_layers([
            &self.user,
            &self.workspace,
            &self.initialization_options,
            &self.settings,
        ])
    }
}

fn replace_if_good(
    slot: &mut ConfigLayer,
    layer: Result<ConfigLayer, ConfigError>,
) -> Option<ConfigError> {
    match layer {
        Ok(layer) => {
            *slot = layer;
            None
        }
        Err(err) => Some(err),
    }
}
