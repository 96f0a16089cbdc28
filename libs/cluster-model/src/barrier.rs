//! Linearizable reads at the cost of one log round trip per batch of readers: each reader waits
//! for a fetch of the log's last sequence that started after it arrived (etcd's ReadIndex idea),
//! and concurrent readers share that fetch.

use std::sync::{Arc, Mutex};

use corral_event_log::EventLog;
use tokio::sync::{Notify, oneshot};

type Waiter = oneshot::Sender<Result<u64, String>>;

pub struct ReadBarrier {
    waiters: Arc<Mutex<Vec<Waiter>>>,
    wake: Arc<Notify>,
}

impl ReadBarrier {
    pub fn start(log: Arc<dyn EventLog>) -> ReadBarrier {
        let waiters: Arc<Mutex<Vec<Waiter>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let (w, n) = (waiters.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                n.notified().await;
                loop {
                    // Take the readers that arrived before this fetch starts; later ones wait for the next.
                    let batch = std::mem::take(&mut *w.lock().unwrap_or_else(|p| p.into_inner()));
                    if batch.is_empty() {
                        break;
                    }
                    let result = log.last_seq().await.map_err(|e| e.to_string());
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
                if Arc::strong_count(&w) == 1 {
                    return;
                }
            }
        });
        ReadBarrier { waiters, wake }
    }

    /// The log's last sequence, read after this call began.
    pub async fn last_seq(&self) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        self.wake.notify_one();
        rx.await.map_err(|_| "read barrier stopped".to_string())?
    }
}
