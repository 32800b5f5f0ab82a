//! An app's edge policies: `[edge]` for the app's whole route and `[[edge.paths]]` for parts
//! of it, with the same keys and the same checks as a route of the server's config.
//!
//! These tables are read with serde from the whole document (the rest of the app spec is
//! read key by key, see `read.rs`), so their keys and errors are exactly the server config's.
//! A static directory is relative to the release: it is checked when a release is deployed,
//! and served from every release taking traffic.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use berth_edge::spec::{RateLimitKind, RateLimitSpec, RoutePolicies};
use serde::{Deserialize, Serialize};

use crate::diagnostic::Source;
use crate::file::{AuthRateLimitFile, CompressionFile, RateLimitFile, StaticFile, Text, Toggle};
use crate::locate;
use crate::path::{index, key};
use crate::validate::Checker;
use crate::validate::policies::{PolicyKeys, check_policies, static_options};
use crate::validate::route::is_path_prefix;

/// The app's edge policies; the default has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppEdge {
    /// For every request to the app's hosts (static files never: see `paths`).
    pub policies: RoutePolicies,
    /// Longer path prefixes with their own policies, in file order.
    pub paths: Vec<AppPath>,
}

/// `[[edge.paths]]`: a path prefix of the app's hosts. Keys it does not set are taken from
/// `[edge]`, so `/admin` can add an allow list and keep the app's rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPath {
    /// Starts with `/`; never `/` itself (that is `[edge]`).
    pub prefix: String,
    /// Inherited keys already filled in; `static_files` is always `None` here.
    pub policies: RoutePolicies,
    pub static_files: Option<AppStatic>,
}

/// Files the edge serves from a directory of each release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatic {
    /// Relative to the release directory, without `..`.
    pub dir: PathBuf,
    pub index: Option<String>,
    pub fallback: bool,
    pub max_age: Duration,
}

/// Only `edge` is read here; the key-by-key reader owns (and checks) every other key.
#[derive(Deserialize)]
struct Document {
    edge: Option<EdgeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFile {
    allow: Option<Vec<Text>>,
    deny: Option<Vec<Text>>,
    rate_limit: Option<RateLimitFile>,
    auth_rate_limit: Option<AuthRateLimitFile>,
    compression: Option<Toggle<CompressionFile>>,
    paths: Option<Vec<PathFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathFile {
    prefix: Text,
    allow: Option<Vec<Text>>,
    deny: Option<Vec<Text>>,
    rate_limit: Option<RateLimitFile>,
    auth_rate_limit: Option<AuthRateLimitFile>,
    compression: Option<Toggle<CompressionFile>>,
    #[serde(rename = "static")]
    static_files: Option<toml::Spanned<StaticFile>>,
}

pub(super) fn check_edge(c: &mut Checker<'_>, source: &Source<'_>) -> AppEdge {
    let edge = match toml::from_str::<Document>(source.text) {
        Ok(Document { edge: Some(edge) }) => edge,
        Ok(Document { edge: None }) => return AppEdge::default(),
        Err(err) => {
            c.push(locate::toml_error(source, &err));
            return AppEdge::default();
        }
    };
    let base = PolicyKeys {
        allow: edge.allow.as_deref(),
        deny: edge.deny.as_deref(),
        rate_limit: edge.rate_limit.as_ref(),
        auth_rate_limit: edge.auth_rate_limit.as_ref(),
        compression: edge.compression.as_ref(),
    };
    let policies = check_policies(c, &base, "edge", "/");
    let mut paths: Vec<AppPath> = Vec::new();
    for (i, file) in edge.paths.iter().flatten().enumerate() {
        let field = index("edge.paths", i);
        let prefix = check_prefix(c, &file.prefix, &key(&field, "prefix"));
        if let Some(prefix) = &prefix
            && paths.iter().any(|p| &p.prefix == prefix)
        {
            c.error(
                file.prefix.span(),
                &key(&field, "prefix"),
                format!("path `{prefix}` is given twice"),
            )
            .hint("merge the two [[edge.paths]] tables into one");
        }
        // Unset keys inherit [edge]'s; the auth limit below, once checked.
        let keys = PolicyKeys {
            allow: file.allow.as_deref().or(base.allow),
            deny: file.deny.as_deref().or(base.deny),
            rate_limit: file.rate_limit.as_ref().or(base.rate_limit),
            auth_rate_limit: file.auth_rate_limit.as_ref(),
            compression: file.compression.as_ref().or(base.compression),
        };
        let within = prefix.as_deref().unwrap_or("/");
        let mut path_policies = check_policies(c, &keys, &field, within);
        if file.auth_rate_limit.is_none() {
            path_policies
                .rate_limits
                .extend(inherited_auth_limit(&policies, within));
        }
        let static_files = file
            .static_files
            .as_ref()
            .and_then(|s| check_static(c, s.get_ref(), &key(&field, "static")));
        if let Some(prefix) = prefix {
            paths.push(AppPath {
                prefix,
                policies: path_policies,
                static_files,
            });
        }
    }
    AppEdge { policies, paths }
}

/// `[edge]`'s auth limit for the paths of it under `prefix`, if any are.
fn inherited_auth_limit(base: &RoutePolicies, prefix: &str) -> Option<RateLimitSpec> {
    let auth = base
        .rate_limits
        .iter()
        .find(|l| l.kind == RateLimitKind::Auth)?;
    let paths: Vec<String> = auth
        .paths
        .iter()
        .filter(|p| berth_edge::prefix_matches(prefix, p))
        .cloned()
        .collect();
    (!paths.is_empty()).then(|| RateLimitSpec {
        paths,
        ..auth.clone()
    })
}

fn check_prefix(c: &mut Checker<'_>, prefix: &Text, field: &str) -> Option<String> {
    let text = prefix.get_ref();
    if text != "/" && is_path_prefix(text) {
        return Some(text.clone());
    }
    let d = c.error(
        prefix.span(),
        field,
        format!("`{text}` is not a path under `/`"),
    );
    if text == "/" {
        d.hint("policies for every path go in [edge] itself");
    } else {
        d.hint("a path prefix starts with `/` and has no query string, e.g. \"/static\"");
    }
    None
}

fn check_static(c: &mut Checker<'_>, file: &StaticFile, field: &str) -> Option<AppStatic> {
    let given = file.dir.get_ref();
    let dir = Path::new(given);
    let inside_release = !given.is_empty()
        && dir
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir));
    let (index, max_age) = static_options(c, file, field);
    if !inside_release {
        c.error(
            file.dir.span(),
            &key(field, "dir"),
            format!("`{given}` is not a directory inside the release"),
        )
        .hint(
            "give it relative to the app's root, e.g. \"staticfiles\" (where Django's \
             collectstatic writes); absolute paths and `..` are refused",
        );
        return None;
    }
    Some(AppStatic {
        dir: dir.to_path_buf(),
        index,
        fallback: file.fallback.unwrap_or(false),
        max_age,
    })
}
