//! Errors that point at a place in the config file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
///
/// `line` and `column` are 1-based; both are 0 when the problem concerns the file as a whole
/// (it cannot be read). `field` is the dotted path of the offending value, such as
/// `route[1].group` or `group.web.pool[0].weight`; it is empty for TOML syntax errors and
/// I/O errors, where there is no field to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub(crate) fn hint(&mut self, hint: impl Into<String>) {
        self.hint = Some(hint.into());
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The text of a config file and its name, for turning byte offsets into positions.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// A diagnostic for the whole file: no position, no field.
    pub(crate) fn whole_file(&self, message: String) -> Diagnostic {
        Diagnostic {
            file: self.path.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message,
            hint: None,
        }
    }

    pub(crate) fn at(&self, span: Range<usize>, field: String, message: String) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            file: self.path.to_owned(),
            line,
            column,
            field,
            message,
            hint: None,
        }
    }

    /// 1-based line and column; the column counts characters, not bytes, so it matches what an
    /// editor shows for non-ASCII lines.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source<'_> {
        Source {
            path: Path::new("berth.toml"),
            text,
        }
    }

    #[test]
    fn positions_are_one_based() {
        let src = source("ab\ncd\n");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(1), (1, 2));
        assert_eq!(src.position(3), (2, 1));
        assert_eq!(src.position(6), (3, 1));
        assert_eq!(src.position(600), (3, 1));
    }

    #[test]
    fn columns_count_characters() {
        let src = source("é = \"x\"");
        assert_eq!(src.position(3), (1, 3));
        // Inside a multi-byte character: reported at that character.
        assert_eq!(src.position(1), (1, 1));
    }

    #[test]
    fn display_includes_position_field_and_hint() {
        let mut d = source("x").at(0..1, "route[0].group".into(), "unknown group".into());
        d.hint("known groups: web");
        assert_eq!(
            d.to_string(),
            "berth.toml:1:1: route[0].group: unknown group\n  hint: known groups: web"
        );
        let whole = source("").whole_file("cannot read".into());
        assert_eq!(whole.to_string(), "berth.toml: cannot read");
    }

    #[test]
    fn config_error_lists_every_diagnostic() {
        let src = source("a\nb");
        let err = ConfigError {
            diagnostics: vec![
                src.at(0..1, "a".into(), "first".into()),
                src.at(2..3, "b".into(), "second".into()),
            ],
        };
        assert_eq!(
            err.to_string(),
            "berth.toml:1:1: a: first\nberth.toml:2:1: b: second"
        );
    }
}
