//! Typed TOML configuration files whose every error names the file, the line and the reason.
//!
//! Every configuration the project reads (gateway config, device profiles, ingest config,
//! alert rules) goes through here, so an operator who breaks one gets the same kind of
//! message wherever it is: `gateway.toml:14:9: unknown field 'adress', expected one of ...`.
//!
//! Loading is two steps, as in Vector: serde parses into types (`deny_unknown_fields` on
//! every struct), then the caller's validation reports every problem at once, each at the
//! line of the value it is about. Values that validation refers to are wrapped in
//! [`Spanned`] so that their position survives parsing.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
pub use serde_spanned::Spanned;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or a name for text that did not come from a file, such as an MQTT topic).
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column, when the problem has a position.
    pub column: Option<usize>,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The text of a configuration file and its name, for parsing and for locating errors.
#[derive(Debug, Clone)]
pub struct Source {
    name: PathBuf,
    text: String,
}

impl Source {
    /// Reads a file; an unreadable file is an error naming it.
    pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                reason: format!("cannot read: {e}"),
            }])
        })?;
        Ok(Source { name: path.to_path_buf(), text })
    }

    /// Text that did not come from a file (built-in profiles, a config received over MQTT).
    pub fn from_text(name: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source { name: name.into(), text: text.into() }
    }

    /// The file name.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Parses the text into `T`; a syntax or type error is located.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigErrors> {
        toml::from_str(&self.text).map_err(|e| {
            let reason = e.message().trim().to_string();
            ConfigErrors(vec![self.error_at(e.span(), reason)])
        })
    }

    /// An error at a byte span of the text (`None`: the file as a whole).
    pub fn error_at(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = self.line_col(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError { file: self.name.clone(), line, column, reason: reason.into() }
    }

    /// An error at the position of a spanned value.
    pub fn error<T>(&self, at: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
        self.error_at(Some(at.span()), reason)
    }

    /// 1-based line and column of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Collects validation problems so that all of them are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Problems {
        Problems(Vec::new())
    }

    /// Records a problem.
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` if nothing was recorded, otherwise every problem.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(ConfigErrors(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        port: Spanned<u16>,
    }

    #[test]
    fn a_misspelt_key_is_reported_at_its_line_and_column() {
        let src = Source::from_text("gw.toml", "name = \"a\"\n\nprot = 5\n");
        let err = src.parse::<Cfg>().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("gw.toml:3:1: unknown field `prot`"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_line_of_the_value() {
        let src = Source::from_text("gw.toml", "name = \"a\"\nport = \"x\"\n");
        let err = src.parse::<Cfg>().unwrap_err().0.remove(0);
        assert_eq!((err.line, err.column), (Some(2), Some(8)));
        assert!(err.reason.contains("invalid type"), "{}", err.reason);
    }

    #[test]
    fn validation_errors_point_at_the_spanned_value() {
        let src = Source::from_text("gw.toml", "name = \"é\"\nport = 0\n");
        let cfg: Cfg = src.parse().unwrap();
        let e = src.error(&cfg.port, "port 0 is not allowed");
        assert_eq!(e.to_string(), "gw.toml:2:8: port 0 is not allowed");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = Source::read(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/x.toml: cannot read"), "{err}");
    }
}
