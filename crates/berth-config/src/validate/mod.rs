//! Semantic checks that turn the file's shape into the edge's validated spec.
//!
//! Every check reports into one [`Checker`] and carries on with a default, so a single run lists
//! every problem in the file instead of one per edit-and-retry cycle.

mod group;
mod headers;
pub(crate) mod health;
pub(crate) mod host;
mod maintenance;
pub(crate) mod policies;
mod pool;
pub(crate) mod route;
mod server;
mod tls;

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use berth_edge::spec::EdgeSpec;

use crate::Config;
use crate::diagnostic::{ConfigError, Diagnostic, Source};
use crate::file::{DurationField, FileConfig, Int, Scalar, SizeField};
use crate::path::key;
use crate::units::{parse_duration, parse_size};

/// The development CA's directory inside the data directory.
pub const DEV_CA_DIR: &str = "tls/dev-ca";

pub(crate) fn validate(file: &FileConfig, source: &Source<'_>) -> Result<Config, ConfigError> {
    let mut checker = Checker::new(source);
    let (server, listeners, client) = server::check(&mut checker, &file.server);
    let trusted_proxies = policies::check_trusted_proxies(&mut checker, &file.server);
    let groups = group::check_all(&mut checker, &file.group);
    let routes = route::check_all(&mut checker, &file.route, &groups);
    let tls = tls::check(&mut checker, file, &server, &listeners);
    checker.finish(Config {
        server,
        edge: EdgeSpec {
            listeners,
            tls,
            client,
            trusted_proxies,
            routes,
            groups,
        },
    })
}

/// Collects diagnostics and knows where relative paths in the file start from.
pub(crate) struct Checker<'a> {
    source: &'a Source<'a>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(source: &'a Source<'a>) -> Self {
        Checker {
            source,
            diagnostics: Vec::new(),
        }
    }
}

impl Checker<'_> {
    pub(crate) fn finish<T>(mut self, config: T) -> Result<T, ConfigError> {
        if self.diagnostics.is_empty() {
            return Ok(config);
        }
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError {
            diagnostics: self.diagnostics,
        })
    }

    /// The directory the config file is in; relative paths in the file are resolved from it so
    /// the file means the same thing whatever the working directory.
    fn dir(&self) -> &Path {
        self.source.path.parent().unwrap_or(Path::new(""))
    }

    /// A diagnostic made elsewhere, e.g. from a serde error.
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let diagnostic = self.source.at(span, field.to_owned(), message.into());
        self.diagnostics.push(diagnostic);
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// A duration that must be above zero.
    pub(crate) fn duration(
        &mut self,
        value: &DurationField,
        field: &str,
        default: Duration,
    ) -> Duration {
        let parsed = self.duration_or_zero(value, field, default);
        if let Some(value) = value
            && parsed.is_zero()
        {
            self.error(value.span(), field, "must be longer than zero");
            return default;
        }
        parsed
    }

    pub(crate) fn duration_or_zero(
        &mut self,
        value: &DurationField,
        field: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let result = match value.get_ref() {
            Scalar::Text(text, _) => parse_duration(text),
            Scalar::Integer(n) => Err(format!("`{n}` has no unit")),
        };
        result.unwrap_or_else(|message| {
            self.error(value.span(), field, message)
                .hint("write a number with a unit: ms, s, m, h or d, e.g. \"30s\" or \"1m30s\"");
            default
        })
    }

    pub(crate) fn size(&mut self, value: &SizeField, field: &str, default: u64, min: u64) -> u64 {
        self.checked_size(value, field, min).unwrap_or(default)
    }

    /// A size of at least `min` bytes; `None` when it is absent or was reported.
    pub(crate) fn checked_size(&mut self, value: &SizeField, field: &str, min: u64) -> Option<u64> {
        let value = value.as_ref()?;
        let result = match value.get_ref() {
            Scalar::Text(text, _) => parse_size(text),
            Scalar::Integer(n) => u64::try_from(*n).map_err(|_| format!("`{n}` is negative")),
        };
        match result {
            Ok(bytes) if bytes >= min => Some(bytes),
            Ok(bytes) => {
                self.error(
                    value.span(),
                    field,
                    format!("{bytes} bytes is below the minimum of {min}"),
                );
                None
            }
            Err(message) => {
                self.error(value.span(), field, message).hint(
                    "write a number of bytes or a string with a unit: B, KB, KiB, MB, MiB, GB, GiB",
                );
                None
            }
        }
    }

    /// Reports two values of the table at `table` that contradict each other, at the first of
    /// `given` the file writes. Every pair's defaults agree, so when they contradict at least one
    /// of the two was given.
    pub(crate) fn conflict(
        &mut self,
        table: &str,
        given: [(&str, Option<Range<usize>>); 2],
        message: String,
        hint: &str,
    ) {
        if let Some((name, span)) = given
            .into_iter()
            .find_map(|(name, span)| Some((name, span?)))
        {
            self.error(span, &key(table, name), message).hint(hint);
        }
    }

    /// An integer within `min..=max`; `max` of `None` means whatever `T` holds.
    pub(crate) fn int<T: TryFrom<i64>>(
        &mut self,
        value: &Option<Int>,
        field: &str,
        min: i64,
        max: Option<i64>,
        default: T,
    ) -> T {
        self.checked_int(value, field, min, max).unwrap_or(default)
    }

    /// An integer within `min..=max`; `None` when it is absent or was reported.
    pub(crate) fn checked_int<T: TryFrom<i64>>(
        &mut self,
        value: &Option<Int>,
        field: &str,
        min: i64,
        max: Option<i64>,
    ) -> Option<T> {
        let value = value.as_ref()?;
        let n = *value.get_ref();
        let in_range = n >= min && max.is_none_or(|max| n <= max);
        match T::try_from(n) {
            Ok(n) if in_range => Some(n),
            _ => {
                let message = match max {
                    Some(max) => format!("{n} is out of range: must be between {min} and {max}"),
                    None if n < min => format!("{n} is too small: must be at least {min}"),
                    None => format!("{n} is too large"),
                };
                self.error(value.span(), field, message);
                None
            }
        }
    }
}

/// Names of routes and groups: safe in metrics labels, logs and URLs without escaping.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const NAME_HINT: &str = "use lower-case letters, digits, `_` and `-`";
