//! Turns a TOML syntax or type error into a diagnostic that names the field.
//!
//! toml's errors carry a byte span but no key path, so the document is parsed again into its
//! spanned tree and the narrowest key or value covering the span gives the path.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Source};
use crate::path::{index, key};

pub(crate) fn toml_error(source: &Source<'_>, error: &toml::de::Error) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim_end().to_owned();
    let mut field = DeTable::parse(source.text)
        .ok()
        .and_then(|root| narrowest(root.get_ref(), &span))
        .map(|(path, _)| path)
        .unwrap_or_default();
    // serde reports a missing key at its table; naming the key itself reads better.
    if let Some(missing) = missing_field(&message) {
        field = key(&field, missing);
    }
    source.at(span, field, message)
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The path and span length of the narrowest node covering `target`.
type Best = Option<(String, usize)>;

fn narrowest(table: &DeTable<'_>, target: &Range<usize>) -> Best {
    let mut best = None;
    walk_table(table, target, "", &mut best);
    best
}

fn walk_table(table: &DeTable<'_>, target: &Range<usize>, prefix: &str, best: &mut Best) {
    for (name, value) in table.iter() {
        let path = key(prefix, name.get_ref());
        consider(best, &path, &name.span(), target);
        walk_value(value, target, &path, best);
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, target: &Range<usize>, path: &str, best: &mut Best) {
    consider(best, path, &value.span(), target);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, target, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, target, &index(path, i), best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` if its span covers `target` at least as tightly as the best so far. Ties go to
/// the later candidate, which is the deeper one because children are visited after parents.
fn consider(best: &mut Best, path: &str, span: &Range<usize>, target: &Range<usize>) {
    // An empty target (a key missing from the top level) lies inside nothing.
    let covers = !target.is_empty() && span.start <= target.start && target.end <= span.end;
    let len = span.len();
    if covers && best.as_ref().is_none_or(|(_, best_len)| len <= *best_len) {
        *best = Some((path.to_owned(), len));
    }
}
