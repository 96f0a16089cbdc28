//! The accounts file, read again within a second of a change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Auth, AuthConfig};

impl Auth {
    pub fn watch_config_file(self: &Arc<Self>, path: PathBuf) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last: Option<SystemTime> = modified(&path);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(auth) = weak.upgrade() else { return };
                let now = modified(&path);
                if now == last {
                    continue;
                }
                last = now;
                match AuthConfig::load(&path) {
                    Ok(cfg) => {
                        auth.set_config(cfg);
                        tracing::info!(path = %path.display(), "accounts configuration reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "accounts configuration not reloaded; keeping the previous one")
                    }
                }
            }
        });
    }
}
