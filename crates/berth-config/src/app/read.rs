//! Typed reads from the spanned TOML tree.
//!
//! The edge config lets serde check the file's shape, which stops at the first unknown key or
//! wrong type. An app spec is read key by key from `toml`'s spanned tree instead, so every such
//! problem is reported together with the semantic ones. Values are handed to the same
//! [`Checker`] helpers the edge config uses, so durations, sizes and ranges read and fail alike.

use std::marker::PhantomData;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::suggest;
use crate::diagnostic::{Diagnostic, Source};
use crate::file::{DurationField, Int, Scalar, ScalarKind, SizeField};
use crate::path::key;
use crate::units::parse_size;
use crate::validate::Checker;

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects every problem found while reading.
pub(super) struct Reader<'a> {
    pub(super) c: Checker<'a>,
    text: &'a str,
}

/// One table of the file, with its dotted path; its unknown keys have been reported.
pub(super) struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    /// The keys the format knows here; `None` where the user chooses them, as in `[env]`.
    known: Option<&'static [&'static str]>,
    pub(super) span: Range<usize>,
    pub(super) field: String,
}

impl<'t, 'i> Table<'t, 'i> {
    pub(super) fn get(&self, name: &str) -> Option<&'t Value<'i>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == name)
            .map(|(_, v)| v)
    }

    /// The dotted path of `name` in this table.
    pub(super) fn at(&self, name: &str) -> String {
        key(&self.field, name)
    }

    /// Every key with its value, in key order.
    pub(super) fn entries(
        &self,
    ) -> impl Iterator<Item = (&'t Spanned<std::borrow::Cow<'i, str>>, &'t Value<'i>)> {
        self.table.iter()
    }

    /// Where the value of `name` is written, if it is.
    pub(super) fn span_of(&self, name: &str) -> Option<Range<usize>> {
        self.get(name).map(|value| value.span())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(source: &'a Source<'a>) -> Self {
        Reader {
            c: Checker::new(source),
            text: source.text,
        }
    }

    /// The text of the file at `span`, as written.
    pub(super) fn raw(&self, span: Range<usize>) -> &'a str {
        self.text.get(span).unwrap_or("")
    }

    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.c.error(span, field, message)
    }

    /// The document itself, its unknown keys reported.
    pub(super) fn root<'t, 'i>(
        &mut self,
        root: &'t Spanned<DeTable<'i>>,
        known: &'static [&'static str],
    ) -> Table<'t, 'i> {
        let table = Table {
            table: root.get_ref(),
            known: Some(known),
            span: root.span(),
            field: String::new(),
        };
        self.unknown_keys(&table);
        table
    }

    /// `value` as a table with only `known` keys; `None` (reported) if it is not a table.
    pub(super) fn table<'t, 'i>(
        &mut self,
        value: &'t Value<'i>,
        field: String,
        known: &'static [&'static str],
    ) -> Option<Table<'t, 'i>> {
        let mut table = self.open_table(value, field)?;
        table.known = Some(known);
        self.unknown_keys(&table);
        Some(table)
    }

    /// `value` as a table whose keys are names chosen by the user, such as `[env]`.
    pub(super) fn open_table<'t, 'i>(
        &mut self,
        value: &'t Value<'i>,
        field: String,
    ) -> Option<Table<'t, 'i>> {
        let DeValue::Table(inner) = value.get_ref() else {
            self.type_error(value, &field, "a table");
            return None;
        };
        Some(Table {
            table: inner,
            known: None,
            span: value.span(),
            field,
        })
    }

    /// The sub-table `name` of `t`, if present.
    pub(super) fn sub_table<'t, 'i>(
        &mut self,
        t: &Table<'t, 'i>,
        name: &str,
        known: &'static [&'static str],
    ) -> Option<Table<'t, 'i>> {
        self.table(t.get(name)?, t.at(name), known)
    }

    fn unknown_keys(&mut self, t: &Table<'_, '_>) {
        let Some(known) = t.known else {
            return;
        };
        for (name, _) in t.table.iter() {
            if known.contains(&name.get_ref().as_ref()) {
                continue;
            }
            let hint = suggest::unknown_key_hint(&t.field, name.get_ref(), known);
            self.error(
                name.span(),
                &t.at(name.get_ref()),
                format!("unknown key `{}`", name.get_ref()),
            )
            .hint(hint);
        }
    }

    /// Reports that `value` is not of the `expected` type (written with its article: "a
    /// string"). A number where a string belongs gets a hint to quote it, a quoted number or
    /// boolean one to remove the quotes.
    pub(super) fn type_error(
        &mut self,
        value: &Value<'_>,
        field: &str,
        expected: &str,
    ) -> &mut Diagnostic {
        let found = value.get_ref().type_str();
        let article = if found.starts_with(['a', 'i']) {
            "an"
        } else {
            "a"
        };
        let raw = self.raw(value.span());
        let hint = match value.get_ref() {
            DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_)
                if expected == "a string" =>
            {
                Some(format!("quote it: \"{raw}\""))
            }
            DeValue::String(text)
                if (expected == "an integer" && text.parse::<i64>().is_ok())
                    || (expected == "a number" && text.parse::<f64>().is_ok())
                    || (expected == "true or false" && (text == "true" || text == "false")) =>
            {
                Some(format!("remove the quotes: {text}"))
            }
            _ => None,
        };
        let diagnostic = self.error(
            value.span(),
            field,
            format!("expected {expected}, found {article} {found}"),
        );
        if let Some(hint) = hint {
            diagnostic.hint(hint);
        }
        diagnostic
    }

    /// Reports that `name` is missing from `t`, unless it is there misspelt: the unknown key
    /// has been reported already, with `name` as its hint.
    pub(super) fn missing(&mut self, t: &Table<'_, '_>, name: &str) -> Option<&mut Diagnostic> {
        let known = t.known.unwrap_or_default();
        let misspelt = t.table.iter().any(|(key, _)| {
            !known.contains(&key.get_ref().as_ref())
                && suggest::closest(key.get_ref(), known) == Some(name)
        });
        if misspelt {
            return None;
        }
        Some(self.error(
            t.span.clone(),
            &t.at(name),
            format!("missing required key `{name}`"),
        ))
    }

    pub(super) fn string(&mut self, t: &Table<'_, '_>, name: &str) -> Option<Spanned<String>> {
        let value = t.get(name)?;
        match value.get_ref() {
            DeValue::String(text) => Some(Spanned::new(value.span(), text.to_string())),
            _ => {
                self.type_error(value, &t.at(name), "a string");
                None
            }
        }
    }

    pub(super) fn bool(&mut self, t: &Table<'_, '_>, name: &str) -> Option<Spanned<bool>> {
        let value = t.get(name)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(value.span(), *b)),
            _ => {
                self.type_error(value, &t.at(name), "true or false");
                None
            }
        }
    }

    fn int_value(&mut self, value: &Value<'_>, field: &str) -> Option<Int> {
        let DeValue::Integer(n) = value.get_ref() else {
            self.type_error(value, field, "an integer");
            return None;
        };
        match i64::from_str_radix(n.as_str(), n.radix()) {
            Ok(n) => Some(Spanned::new(value.span(), n)),
            Err(_) => {
                self.error(value.span(), field, format!("{n} is too large"));
                None
            }
        }
    }

    /// An integer in `min..=max` (`max` of `None`: whatever `T` holds), or `default`.
    pub(super) fn int<T: TryFrom<i64>>(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
        min: i64,
        max: Option<i64>,
        default: T,
    ) -> T {
        self.optional_int(t, name, min, max).unwrap_or(default)
    }

    /// An integer in `min..=max`, or `None` when absent or wrong (reported).
    pub(super) fn optional_int<T: TryFrom<i64>>(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
        min: i64,
        max: Option<i64>,
    ) -> Option<T> {
        let field = t.at(name);
        let value = t.get(name).and_then(|v| self.int_value(v, &field));
        self.c.checked_int(&value, &field, min, max)
    }

    /// A number, integer or float.
    pub(super) fn number(&mut self, t: &Table<'_, '_>, name: &str) -> Option<Spanned<f64>> {
        let value = t.get(name)?;
        let number = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                .ok()
                // Precision loss is irrelevant at the magnitudes a sensible value has.
                .map(|n| n as f64),
            _ => {
                self.type_error(value, &t.at(name), "a number");
                return None;
            }
        };
        match number {
            Some(n) => Some(Spanned::new(value.span(), n)),
            None => {
                let raw = self.raw(value.span()).to_owned();
                self.error(
                    value.span(),
                    &t.at(name),
                    format!("`{raw}` is not a number"),
                );
                None
            }
        }
    }

    fn scalar<K: ScalarKind>(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
    ) -> Option<Spanned<Scalar<K>>> {
        let value = t.get(name)?;
        let scalar = match value.get_ref() {
            DeValue::String(text) => Scalar::Text(text.to_string(), PhantomData),
            DeValue::Integer(_) => Scalar::Integer(*self.int_value(value, &t.at(name))?.get_ref()),
            _ => {
                self.type_error(value, &t.at(name), K::EXPECTING);
                return None;
            }
        };
        Some(Spanned::new(value.span(), scalar))
    }

    /// A duration above zero, or `default`.
    pub(super) fn duration(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
        default: std::time::Duration,
    ) -> std::time::Duration {
        let value: DurationField = self.scalar(t, name);
        self.c.duration(&value, &t.at(name), default)
    }

    /// A duration that may be zero, or `default`.
    pub(super) fn duration_or_zero(
        &mut self,
        t: &Table<'_, '_>,
        name: &str,
        default: std::time::Duration,
    ) -> std::time::Duration {
        let value: DurationField = self.scalar(t, name);
        self.c.duration_or_zero(&value, &t.at(name), default)
    }

    /// A size in bytes, or `None` when absent or wrong (reported).
    pub(super) fn size(&mut self, t: &Table<'_, '_>, name: &str) -> Option<Spanned<u64>> {
        let value: SizeField = self.scalar(t, name);
        let span = value.as_ref()?.span();
        let field = t.at(name);
        // A `K`, `M` or `G` unit gets a hint of its own instead of the list of units.
        if let Some(Scalar::Text(text, _)) = value.as_ref().map(Spanned::get_ref)
            && let Some(hint) = ambiguous_size_unit(text)
            && let Err(message) = parse_size(text)
        {
            self.error(span, &field, message).hint(hint);
            return None;
        }
        let bytes = self.c.checked_size(&value, &field, 0)?;
        Some(Spanned::new(span, bytes))
    }
}

/// A hint for `"1G"`-style sizes, which some tools read as 10^9 bytes and others as 2^30.
fn ambiguous_size_unit(raw: &str) -> Option<String> {
    let unit = raw.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
    let (decimal, binary) = match unit.to_ascii_uppercase().as_str() {
        "K" => ("KB", "KiB"),
        "M" => ("MB", "MiB"),
        "G" => ("GB", "GiB"),
        _ => return None,
    };
    Some(format!(
        "`{unit}` alone is ambiguous: write {binary} (powers of 1024) or {decimal} (powers of 1000)"
    ))
}
