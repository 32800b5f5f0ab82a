//! The edge's routing table as the file's routes plus every app's: the deployer publishes an
//! app's route here, a reload replaces the file's part, and each change re-applies the whole
//! composition (an atomic table swap; nothing is re-bound, nothing in flight is dropped).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use berth_deploy::routes::{compose, group_name, host_conflict};
use berth_deploy::{AppKey, AppRoute, Publisher};
use berth_edge::ApplyReport;
use berth_edge::spec::EdgeSpec;

use crate::serve::Server;

/// The two halves of the routing table.
pub struct Routes {
    file: Mutex<EdgeSpec>,
    apps: Mutex<BTreeMap<AppKey, AppRoute>>,
}

impl Routes {
    pub fn new(file: EdgeSpec) -> Self {
        Routes {
            file: Mutex::new(file),
            apps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The composed spec (the file's routes first: on a shared host and path they win).
    pub fn composed(&self) -> EdgeSpec {
        let apps = self.apps.lock().map(|a| a.clone()).unwrap_or_default();
        let file = self.file.lock().map(|f| f.clone());
        match file {
            Ok(file) => compose(&file, &apps),
            Err(poisoned) => compose(&poisoned.into_inner().clone(), &apps),
        }
    }

    /// Replaces the file's part (a reload); returns warnings about app hosts it now hides.
    pub fn set_file(&self, spec: EdgeSpec) -> Vec<String> {
        let apps = self.apps.lock().map(|a| a.clone()).unwrap_or_default();
        let mut warnings = Vec::new();
        for (key, route) in &apps {
            if let Some(why) = host_conflict(&spec, &BTreeMap::new(), key, route) {
                warnings.push(format!("app {key}: {why}; the file's route wins"));
            }
        }
        if let Ok(mut f) = self.file.lock() {
            *f = spec;
        }
        warnings
    }
}

/// The deployer's [`Publisher`]: changes the app half and applies the whole.
pub struct EdgePublisher(pub Arc<Server>);

impl EdgePublisher {
    fn apply(&self) -> ApplyReport {
        self.0.edge.apply(&self.0.routes.composed())
    }
}

impl Publisher for EdgePublisher {
    fn check(&self, key: &AppKey, route: &AppRoute) -> Option<String> {
        let apps = self
            .0
            .routes
            .apps
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let file = self.0.routes.file.lock().ok()?.clone();
        host_conflict(&file, &apps, key, route)
    }

    fn publish(&self, key: &AppKey, route: Option<AppRoute>) {
        if let Ok(mut apps) = self.0.routes.apps.lock() {
            match route {
                Some(r) => {
                    apps.insert(key.clone(), r);
                }
                None => {
                    apps.remove(key);
                }
            }
        }
        self.apply();
    }

    fn in_flight(&self, key: &AppKey, release: &str) -> usize {
        self.0.edge.in_flight(&group_name(key), release)
    }
}
