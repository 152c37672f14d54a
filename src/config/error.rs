use std::fmt;

/// A configuration source that could not be used, with where and which key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file path, or the name of the editor setting the layer came from.
    pub source_name: String,
    /// One-based line and column, when the source is a file.
    pub location: Option<(usize, usize)>,
    /// The dotted key, such as `log.level`, when the error belongs to one.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}
