//! Reading configuration sources into layers, with errors that name the file, line and key.

use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigLayer};

pub const CONFIG_FILE_NAME: &str = "tierls.toml";

/// The user's configuration file: `$TIERLS_CONFIG_DIR/tierls.toml`, or `tierls/tierls.toml`
/// in the platform's configuration directory.
pub fn user_config_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("TIERLS_CONFIG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::config_dir()?.join("tierls"),
    };
    Some(dir.join(CONFIG_FILE_NAME))
}

/// The largest `tierls.toml` read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads one `tierls.toml`; `Ok(None)` when the file does not exist.
pub fn load_file(path: &Path) -> Result<Option<ConfigLayer>, ConfigError> {
    // A regular file of a sane size only: a FIFO or a device named tierls.toml must not
    // freeze the server at start or on save.
    let bytes = match crate::disk::read_regular(path, MAX_CONFIG_BYTES) {
        Ok(bytes) => bytes,
        Err(crate::disk::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(err) => {
            let message = match err {
                crate::disk::ReadError::Io { source, .. } => source.to_string(),
                crate::disk::ReadError::TooLarge { size, .. } => {
                    format!("{size} bytes is over the {MAX_CONFIG_BYTES} a configuration may have")
                }
                crate::disk::ReadError::NotRegular { kind, .. } => {
                    format!("{kind}, not a regular file")
                }
                other => other.to_string(),
            };
            return Err(whole_file_error(
                path,
                format!("cannot read the file: {message}"),
            ));
        }
    };
    let text = String::from_utf8(bytes).map_err(|err| {
        whole_file_error(
            path,
            format!(
                "the file is not valid UTF-8 (at byte {})",
                err.utf8_error().valid_up_to()
            ),
        )
    })?;
    parse_toml(&text, &path.display().to_string()).map(Some)
}

/// Parses TOML text into a layer; `source_name` is what errors call the source.
pub fn parse_toml(text: &str, source_name: &str) -> Result<ConfigLayer, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|err| toml_error(text, source_name, &err, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        toml_error(text, source_name, err.inner(), Some(path))
    })
}

fn whole_file_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        source_name: path.display().to_string(),
        location: None,
        key: None,
        message,
    }
}

fn toml_error(
    text: &str,
    source_name: &str,
    err: &toml::de::Error,
    path: Option<String>,
) -> ConfigError {
    let location = err.span().map(|span| line_and_column(text, span.start));
    ConfigError {
        source_name: source_name.to_owned(),
        location,
        key: path.and_then(|path| key_of(&path, err.message())),
        message: err.message().trim().to_owned(),
    }
}

/// The dotted key an error belongs to: the path serde reached (which ends with the field
/// itself when the field is unknown), or the unknown field at the top level.
pub(super) fn key_of(path: &str, message: &str) -> Option<String> {
    if path != "." {
        return Some(path.to_owned());
    }
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// Parses editor settings (already deserialized from JSON by the caller) into a layer.
pub fn parse_settings<'de, D>(settings: D, source_name: &str) -> Result<ConfigLayer, ConfigError>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(settings).map_err(|err| {
        let message = err.inner().to_string();
        ConfigError {
            source_name: source_name.to_owned(),
            location: None,
            key: key_of(&err.path().to_string(), &message),
            message,
        }
    })
}
