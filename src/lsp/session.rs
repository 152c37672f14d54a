//! The state of one editor session. Handlers lock it briefly and never across an `.await`.

use std::path::PathBuf;

use crate::config::{Config, ConfigSources};
use crate::core::position::PositionEncoding;
use crate::core::store::DocumentStore;

#[derive(Debug, Default)]
pub struct Session {
    pub documents: DocumentStore,
    pub encoding: PositionEncoding,
    pub root: Option<PathBuf>,
    pub config_sources: ConfigSources,
    pub config: Config,
}
