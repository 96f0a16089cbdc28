//! The accounts configuration, read again within a second of a change: a TOML file, or a folder of
//! one file per key (a mounted ConfigMap, which Kubernetes updates by swapping a link, so what is
//! compared is what the files say, not their times).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::read_flat;
use crate::{Auth, AuthConfig};

impl Auth {
    pub fn watch_config_file(self: &Arc<Self>, path: PathBuf) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = read_flat(&path).map_err(|e| e.to_string());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(auth) = weak.upgrade() else { return };
                let now = read_flat(&path).map_err(|e| e.to_string());
                if now == last {
                    continue;
                }
                last = now.clone();
                let loaded = now.and_then(|flat| AuthConfig::from_flat_at(&path, &flat).map_err(|e| e.to_string()));
                match loaded {
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
