//! State shared by every request: the switches and the bodies built once at start.

use bytes::Bytes;

use crate::settings::Settings;
use crate::switches::Switches;

#[derive(Debug)]
pub struct App {
    pub switches: Switches,
    pub release: String,
    /// Prebuilt because `GET /` is what proxy benchmarks hammer.
    pub root_body: Bytes,
    pub health_version_ok: Bytes,
    pub health_version_failing: Bytes,
    /// `DEMO_FAIL_EVERY`: the period and the requests counted towards it.
    pub fail_every: Option<(u64, std::sync::atomic::AtomicU64)>,
}

impl App {
    /// True for every `fail_every`th request outside `/health*`.
    pub fn partial_failure(&self, path: &str) -> bool {
        match &self.fail_every {
            Some((every, count)) if !path.starts_with("/health") => {
                (count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1) % every == 0
            }
            _ => false,
        }
    }
}

impl App {
    pub fn new(settings: &Settings) -> Self {
        let health_version = |status: &str| {
            Bytes::from(
                serde_json::json!({
                    "status": status,
                    "version": settings.version,
                    "release": settings.release,
                })
                .to_string(),
            )
        };
        App {
            switches: Switches::new(
                settings.fail,
                settings.delay_ms,
                settings.crash_after,
                settings.crash_code,
            ),
            release: settings.release.clone(),
            fail_every: settings
                .fail_every
                .map(|n| (n, std::sync::atomic::AtomicU64::new(0))),
            root_body: Bytes::from(
                serde_json::json!({
                    "app": "berth-demo",
                    "release": settings.release,
                    "version": settings.version,
                })
                .to_string(),
            ),
            health_version_ok: health_version("ok"),
            health_version_failing: health_version("failing"),
        }
    }
}
