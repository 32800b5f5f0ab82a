//! Immutable, content-addressed releases of an app.
//!
//! `berth deploy PATH` turns a directory or a `.tar.gz` into a release under
//! `<data>/apps/<app>/releases/<id>`. This crate is the part of that which touches files:
//!
//! - [`id`]: the release id, a SHA-256 over the tree's paths, exec bits, bytes and symlink
//!   targets, so the same content always gets the same id (deploys are idempotent).
//! - [`import`]: copies a directory ([`import_dir`]) or extracts a tarball
//!   ([`import_tarball`]) into a temporary directory inside the releases directory, rejects
//!   anything that could reach outside the release (absolute paths, `..`, escaping symlinks,
//!   hard links, device and fifo entries, too many bytes or entries), then renames it into
//!   place read-only. On error nothing in the releases directory changes.
//! - [`meta`]: [`Release`], the metadata written atomically as `<releases_dir>/<id>.json`.
//! - [`retain`]: which old releases to prune (pure), and [`prune`] to apply it.
//!
//! The build command itself (what to run, its timeout and log) belongs to the deployer, which
//! hands it to [`import_tarball_built`] as a [`BuildStep`].

mod error;
mod fsutil;
pub mod git;
pub mod id;
pub mod import;
pub mod meta;
pub mod pack;
pub mod retain;
mod tarball;

pub use error::{Error, Result};
pub use id::{ReleaseId, TreeSummary, hash_tree};
pub use import::{
    BuildStep, Limits, Origin, import_dir, import_dir_with, import_tarball, import_tarball_built,
    import_tarball_with,
};
pub use meta::{Release, list_releases, read_release, write_release};
pub use pack::{IGNORE_FILE, PackSummary, pack_dir, read_root_file};
pub use retain::{DEFAULT_KEEP, plan_prune, prune};
