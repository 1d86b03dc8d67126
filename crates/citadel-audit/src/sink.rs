//! The durable event sink (group commit).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use citadel_core::SecurityEvent;
use citadel_store::Store;
use tokio::sync::{broadcast, mpsc, oneshot};

/// When a recorded event counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After it is committed to the store (the default).
    #[default]
    Durable,
    /// After it is queued for the store; a crash may lose the queue.
    Async,
}

/// Tuning for the sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Durability mode.
    pub durability: Durability,
    /// Most events written in one transaction.
    pub batch_max: usize,
    /// Most events waiting to be written; past it, recording is refused.
    pub queue_max: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            batch_max: 1024,
            queue_max: 65_536,
        }
    }
}

/// Why an event could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store cannot be written right now.
    #[error("the event store cannot be written")]
    Unavailable,
    /// Too many events are waiting.
    #[error("the event queue is full")]
    QueueFull,
}

enum Message {
    Event(
        SecurityEvent,
        Option<oneshot::Sender<Result<(), SinkError>>>,
    ),
    Flush(oneshot::Sender<()>),
}

/// The sink handle. Cheap to share behind an `Arc`.
pub struct EventSink {
    tx: mpsc::Sender<Message>,
    bus: broadcast::Sender<Arc<SecurityEvent>>,
    healthy: AtomicBool,
    queued: AtomicI64,
    written: AtomicI64,
    durability: Durability,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// Starts the writer task and returns the handle.
    pub fn start(store: Store, config: SinkConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.queue_max.max(1));
        let (bus, _) = broadcast::channel(4096);
        let sink = Arc::new(Self {
            tx,
            bus,
            healthy: AtomicBool::new(true),
            queued: AtomicI64::new(0),
            written: AtomicI64::new(0),
            durability: config.durability,
        });
        tokio::spawn(write_loop(sink.clone(), store, rx, config.batch_max.max(1)));
        sink
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether the last write succeeded. The gateway refuses requests while not.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Events queued but not yet durable.
    pub fn lag(&self) -> i64 {
        self.queued.load(Ordering::Relaxed) - self.written.load(Ordering::Relaxed)
    }

    /// Events written since start.
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Subscribes to durable events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SecurityEvent>> {
        self.bus.subscribe()
    }

    /// Records a decision event per the configured durability: in durable
    /// mode, returns once the event is committed.
    pub async fn record(&self, event: SecurityEvent) -> Result<(), SinkError> {
        match self.durability {
            Durability::Durable => self.record_durable(event).await,
            Durability::Async => self.record_queued(event),
        }
    }

    /// Records an event and waits until it is committed, whatever the mode
    /// (for admin changes, which must never go unrecorded).
    pub async fn record_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        if !self.is_healthy() {
            return Err(SinkError::Unavailable);
        }
        let (ack, done) = oneshot::channel();
        self.enqueue(Message::Event(event, Some(ack)))?;
        done.await.unwrap_or(Err(SinkError::Unavailable))
    }

    /// Queues an event without waiting (for outcomes of responses already
    /// sent). It is written as soon as the store accepts it.
    pub fn record_queued(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.enqueue(Message::Event(event, None))
    }

    fn enqueue(&self, message: Message) -> Result<(), SinkError> {
        match self.tx.try_send(message) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(SinkError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SinkError::Unavailable),
        }
    }

    /// Waits until every event queued before the call is durable.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop(
    sink: Arc<EventSink>,
    store: Store,
    mut rx: mpsc::Receiver<Message>,
    batch_max: usize,
) {
    let mut events = Vec::with_capacity(batch_max);
    let mut acks = Vec::with_capacity(batch_max);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e, ack) => {
                    events.push(e);
                    acks.extend(ack);
                }
                Message::Flush(done) => flushes.push(done),
            }
            if events.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.append_events(&events).await {
                Ok(()) => {
                    if !sink.healthy.swap(true, Ordering::AcqRel) {
                        tracing::warn!("event store writable again; accepting requests");
                    }
                    break;
                }
                Err(error) => {
                    if sink.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(%error, "cannot write security events; refusing requests until it recovers");
                    }
                    // The waiting requests are refused (never acknowledged);
                    // their events, and queued ones, are kept and retried.
                    // Requests that queued after this batch was taken are
                    // refused now too, rather than wait for the store.
                    while let Ok(message) = rx.try_recv() {
                        match message {
                            Message::Event(e, ack) => {
                                events.push(e);
                                acks.extend(ack);
                            }
                            Message::Flush(done) => flushes.push(done),
                        }
                    }
                    for ack in acks.drain(..) {
                        let _ = ack.send(Err(SinkError::Unavailable));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        sink.written
            .fetch_add(events.len() as i64, Ordering::Relaxed);
        for ack in acks.drain(..) {
            let _ = ack.send(Ok(()));
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        for e in events.drain(..) {
            let _ = sink.bus.send(Arc::new(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citadel_core::{EventClass, Outcome};

    fn event(n: i64) -> SecurityEvent {
        SecurityEvent::builder(EventClass::HttpActivity, 1, "Connect", Outcome::Success)
            .field("count", n.into())
            .build()
    }

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn durable_record_returns_after_commit_and_reaches_the_bus() {
        let (store, _d) = store().await;
        let sink = EventSink::start(store.clone(), SinkConfig::default());
        let mut bus = sink.subscribe();
        let e = event(1);
        sink.record(e.clone()).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 1);
        assert_eq!(*bus.recv().await.unwrap(), e);
    }

    #[tokio::test]
    async fn concurrent_records_are_group_committed_and_none_lost() {
        let (store, _d) = store().await;
        let sink = EventSink::start(store.clone(), SinkConfig::default());
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.record(event(i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..300 {
            sink.record_queued(event(i)).unwrap();
        }
        sink.flush().await;
        assert_eq!(store.count_events().await.unwrap(), 800);
        assert_eq!(sink.lag(), 0);
    }

    #[tokio::test]
    async fn unwritable_store_refuses_then_recovers_without_losing_queued_events() {
        let (store, dir) = store().await;
        let sink = EventSink::start(
            store.clone(),
            SinkConfig {
                durability: Durability::Async,
                ..Default::default()
            },
        );
        // Make the store refuse writes: a trigger that aborts every insert.
        let db = dir.path().join("e.db");
        let url = format!("sqlite://{}", db.display());
        let admin = Store::open(&url).await.unwrap();
        admin_exec(&admin, "CREATE TRIGGER block BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END").await;
        sink.record_queued(event(1)).unwrap();
        assert_eq!(
            sink.record_durable(event(2)).await,
            Err(SinkError::Unavailable)
        );
        assert!(!sink.is_healthy());
        assert_eq!(
            sink.record_durable(event(3)).await,
            Err(SinkError::Unavailable)
        );

        admin_exec(&admin, "DROP TRIGGER block").await;
        sink.flush().await;
        assert!(sink.is_healthy());
        // The queued (already released) event and the refused request's event
        // both reach the store once it recovers.
        assert_eq!(store.count_events().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_waiter_that_queued_behind_a_failing_batch_is_refused_promptly() {
        let (store, dir) = store().await;
        let sink = EventSink::start(store.clone(), SinkConfig::default());
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let admin = Store::open(&url).await.unwrap();
        admin_exec(&admin, "CREATE TRIGGER block BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END").await;
        assert!(sink.record_durable(event(1)).await.is_err());
        // A request that passed the health check just before the failure
        // queues its event directly; it must hear back, not hang.
        let (ack, done) = oneshot::channel();
        sink.enqueue(Message::Event(event(2), Some(ack))).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert_eq!(
            answer.expect("the waiter was answered").unwrap(),
            Err(SinkError::Unavailable)
        );
        admin_exec(&admin, "DROP TRIGGER block").await;
        sink.flush().await;
        assert_eq!(store.count_events().await.unwrap(), 2);
    }

    async fn admin_exec(store: &Store, sql: &str) {
        store.execute_raw_for_tests(sql).await.unwrap();
    }
}
