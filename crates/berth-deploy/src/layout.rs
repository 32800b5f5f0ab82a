//! Where an app's files live under the data directory:
//!
//! ```text
//! <data>/apps/<app>/releases/<id>/           the release tree (read-only), shared by environments
//! <data>/apps/<app>/releases/<id>.json       its metadata
//! <data>/apps/<app>/releases/<id>.build.log  its build's output
//! <data>/apps/<app>/<env>/logs/<id>/<instance>.log   each instance's output, rotated
//! <data>/apps/<app>/<env>/state/           the app's own files in the environment ($BERTH_STATE_DIR)
//! <data>/uploads/                            archives being received
//! ```
//!
//! Releases are shared by environments because they are content-addressed: the release that
//! staging verified is, byte for byte, the one production gets.

use std::path::{Path, PathBuf};

use crate::AppKey;

/// The variable naming the data directory in every instance's environment.
pub const MARKER_ENV: &str = "BERTH_DATA_DIR";

#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn releases_dir(&self, app: &str) -> PathBuf {
        self.data_dir.join("apps").join(app).join("releases")
    }

    pub fn build_log(release_dir: &Path) -> PathBuf {
        let mut name = release_dir.as_os_str().to_owned();
        name.push(".build.log");
        PathBuf::from(name)
    }

    pub fn logs_dir(&self, key: &AppKey) -> PathBuf {
        self.data_dir
            .join("apps")
            .join(&key.app)
            .join(&key.env)
            .join("logs")
    }

    /// A directory the app's instances may write to in one environment, kept across
    /// releases, restarts and berth restarts (`BERTH_STATE_DIR`).
    pub fn state_dir(&self, key: &AppKey) -> PathBuf {
        self.data_dir
            .join("apps")
            .join(&key.app)
            .join(&key.env)
            .join("state")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// The environment entry ([`MARKER_ENV`]`=<data_dir>`) every instance carries, so a berth
    /// starting over this data directory can find and kill instances a killed predecessor
    /// left behind.
    pub fn marker(&self) -> String {
        format!("{MARKER_ENV}={}", self.data_dir.display())
    }
}
