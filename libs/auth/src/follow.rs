//! The authentication state follows the log through the one follower every service uses.

use std::sync::{Arc, RwLock};

use corral_event_log::{EventLog, RecordedEvent};
use corral_secrets::SealingKey;
use tokio::sync::watch;

use crate::state::{self, AuthState};

/// The authentication state as a follower of the log (its own subjects only, so a replica is
/// not woken by every cluster event).
struct AuthFollower {
    key: Arc<SealingKey>,
    state: Arc<RwLock<AuthState>>,
    applied: watch::Sender<u64>,
}

impl corral_projection::Follower for AuthFollower {
    /// A broken event must not stop every login: it is reported and skipped.
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "auth"
    }

    fn last_applied(&self) -> u64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).applied
    }

    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), Self::Error> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for event in events {
            if let Err(e) = state.apply(event, &self.key) {
                tracing::error!(error = %e, seq = event.seq, "auth projection skipped an event");
            }
        }
        drop(state);
        if let Some(last) = events.last() {
            self.applied.send_replace(last.seq);
        }
        Ok(())
    }
}

/// Follows the log into `state` until nothing waits on `applied` any more.
pub(crate) async fn run_projection(
    log: Arc<dyn EventLog>,
    key: Arc<SealingKey>,
    state: Arc<RwLock<AuthState>>,
    applied: watch::Sender<u64>,
) {
    let closed = applied.clone();
    let mut follower = AuthFollower { key, state, applied };
    let _ = corral_projection::follow(log, &state::subject_filters(), &mut follower, closed.closed()).await;
}
