//! A shutdown signal every stream and background task watches, so they
//! end cleanly.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

#[derive(Debug)]
pub(crate) struct Trigger {
    tx: Arc<watch::Sender<bool>>,
}

pub(crate) fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx: Arc::new(tx) }, Shutdown { rx })
}

impl Trigger {
    pub(crate) fn fire(&self) {
        let _ = self.tx.send(true);
    }

    pub(crate) fn clone_trigger(&self) -> Trigger {
        Trigger {
            tx: self.tx.clone(),
        }
    }
}

impl Shutdown {
    /// Resolves once shutdown has begun.
    pub(crate) async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone: shut down too.
        let _ = rx.wait_for(|down| *down).await;
    }
}
