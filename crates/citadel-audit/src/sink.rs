//! The durable event sink (group commit).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use citadel_core::SecurityEvent;
use citadel_store::{EventRow, Store};

use crate::subject::SubjectVault;
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
    /// Events waiting to be written past which new decisions are refused
    /// (and the gateway admits no new requests). Events of requests already
    /// admitted are always queued, so none is ever dropped.
    pub queue_max: usize,
    /// How long a decision waits for the writer to make room before it is refused.
    pub room_wait: Duration,
    /// Seals the fields that identify people before events are stored.
    pub vault: Option<Arc<SubjectVault>>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            // A batch this large only forms under heavy load, where fewer,
            // larger commits drain the queue faster (bench/audit: 73k → 89k
            // events/s against 1,024). Queued events hold only their rows,
            // so it costs little memory (bench/proxy RSS).
            batch_max: 4096,
            queue_max: 4_096,
            room_wait: Duration::from_secs(5),
            vault: None,
        }
    }
}

/// Why an event could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store cannot be written right now.
    #[error("the event store cannot be written")]
    Unavailable,
    /// Too many events are waiting; new decisions are refused until the
    /// writer catches up.
    #[error("the event queue is full")]
    QueueFull,
}

enum Message {
    Event(Encoded, Option<oneshot::Sender<Result<(), SinkError>>>),
    Flush(oneshot::Sender<()>),
}

type Ack = oneshot::Sender<Result<(), SinkError>>;

impl Message {
    /// Files a message into the batch being built.
    fn sort_into(
        self,
        events: &mut Vec<Encoded>,
        acks: &mut Vec<(usize, Ack)>,
        flushes: &mut Vec<oneshot::Sender<()>>,
    ) {
        match self {
            Message::Event(e, ack) => {
                if let Some(ack) = ack {
                    acks.push((events.len(), ack));
                }
                events.push(e);
            }
            Message::Flush(done) => flushes.push(done),
        }
    }
}

/// An event and its stored form, encoded by the recording task so that the
/// single writer only binds and commits.
struct Encoded {
    /// The stored form; `None` until the subject's key is at hand (the
    /// writer fetches it).
    row: Option<EventRow>,
    /// The event as it happened, for the bus (never stored as such when
    /// it names a person). Kept only while something needs it: a decision
    /// (which may have to be rewritten as refused), a row still to be
    /// sealed, or a subscriber on the bus; otherwise it is freed by the
    /// recording task, not by the single writer, and the queue holds only
    /// the encoded row.
    event: Option<Arc<SecurityEvent>>,
    /// A decision that gates a request (rewritten as refused if the request
    /// is refused because this event could not be committed in time).
    decision: bool,
}

impl Encoded {
    fn new(event: SecurityEvent, vault: Option<&SubjectVault>, keep_event: bool) -> Self {
        let row = stored_form(&event, vault);
        let keep = keep_event || row.is_none();
        Self {
            row,
            event: keep.then(|| Arc::new(event)),
            decision: false,
        }
    }

    /// Rewrites a decision whose request was refused because the event could
    /// not be written in time: when it is finally stored, it must not read as
    /// an allowed request.
    fn mark_refused(&mut self, vault: Option<&SubjectVault>) {
        let Some(event) = &self.event else { return };
        let mut event = (**event).clone();
        event.outcome = citadel_core::Outcome::Failure;
        let body = &mut event.body;
        body["status_id"] = serde_json::json!(2);
        body["status"] = serde_json::json!("Failure");
        body["disposition_id"] = serde_json::json!(2);
        body["disposition"] = serde_json::json!("Blocked");
        body["status_detail"] = serde_json::json!(
            "audit_unavailable: the request was refused because its event could not be recorded in time"
        );
        self.row = stored_form(&event, vault);
        self.event = Some(Arc::new(event));
    }
}

/// The row to store: the event itself, or with a person's fields sealed if
/// their key is cached; `None` if the key must be fetched first.
fn stored_form(event: &SecurityEvent, vault: Option<&SubjectVault>) -> Option<EventRow> {
    let Some(vault) = vault.filter(|_| SubjectVault::subject_of(event).is_some()) else {
        return Some(fit_for_log(event));
    };
    let mut sealed = event.clone();
    match vault.try_seal(&mut sealed) {
        Ok(true) => Some(fit_for_log(&sealed)),
        _ => None,
    }
}

/// The largest entry the log holds: tlog-tiles entry bundles give each
/// entry a 16-bit length.
pub(crate) const MAX_ENTRY_BYTES: usize = 65_535;

/// The event's row, or, for an event too large for the log (a huge header
/// value, say), a row that keeps what identifies and classifies it, the
/// size and SHA-256 of the original, and says it was cut.
fn fit_for_log(event: &SecurityEvent) -> EventRow {
    let row = EventRow::from(event);
    if row.body.len() <= MAX_ENTRY_BYTES {
        return row;
    }
    const KEPT: &[&str] = &[
        "activity_id",
        "activity_name",
        "actor",
        "category_uid",
        "class_name",
        "class_uid",
        "disposition",
        "disposition_id",
        "metadata",
        "severity",
        "severity_id",
        "status",
        "status_detail",
        "status_id",
        "time",
        "type_uid",
    ];
    let mut cut = event.clone();
    let mut body = serde_json::Map::new();
    for key in KEPT {
        if let Some(v) = event.body.get(*key) {
            body.insert((*key).to_owned(), v.clone());
        }
    }
    body.insert(
        "message".into(),
        serde_json::json!("event cut to fit the audit log's 64 KiB entry limit"),
    );
    let mut unmapped = serde_json::json!({"truncated": {
        "bytes": row.body.len(),
        "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(row.body.as_bytes())),
    }});
    if let Some(sealed) = event.body["unmapped"].get("sealed_subject") {
        unmapped["sealed_subject"] = sealed.clone();
    }
    body.insert("unmapped".into(), unmapped);
    cut.body = serde_json::Value::Object(body);
    let row = EventRow::from(&cut);
    if row.body.len() > MAX_ENTRY_BYTES {
        // Only an absurd actor could do this; keep the bare minimum.
        cut.body.as_object_mut().map(|b| b.remove("actor"));
        return EventRow::from(&cut);
    }
    row
}

/// Seals, with keys fetched or made now, the events whose row is pending.
async fn seal_pending(
    events: &mut [Encoded],
    vault: Option<&SubjectVault>,
) -> Result<(), crate::subject::VaultError> {
    let Some(vault) = vault else { return Ok(()) };
    let pending: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].row.is_none())
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut sealed: Vec<SecurityEvent> = pending
        .iter()
        .filter_map(|&i| events[i].event.as_deref().cloned())
        .collect();
    vault.seal(&mut sealed).await?;
    for (i, e) in pending.into_iter().zip(sealed) {
        events[i].row = Some(EventRow::from(&e));
    }
    Ok(())
}

/// The sink handle. Cheap to share behind an `Arc`.
pub struct EventSink {
    tx: mpsc::UnboundedSender<Message>,
    queue_max: i64,
    room_wait: Duration,
    bus: broadcast::Sender<Arc<SecurityEvent>>,
    healthy: AtomicBool,
    queued: AtomicI64,
    written: AtomicI64,
    shed: AtomicI64,
    room: tokio::sync::Notify,
    durability: Durability,
    vault: Option<Arc<SubjectVault>>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let (bus, _) = broadcast::channel(4096);
        let sink = Arc::new(Self {
            tx,
            bus,
            healthy: AtomicBool::new(true),
            queued: AtomicI64::new(0),
            written: AtomicI64::new(0),
            shed: AtomicI64::new(0),
            room: tokio::sync::Notify::new(),
            durability: config.durability,
            queue_max: config.queue_max.max(1) as i64,
            room_wait: config.room_wait,
            vault: config.vault.clone(),
        });
        // The writer gets a thread of its own: on a busy runtime a task among
        // thousands of connections is polled too rarely to keep up, and the
        // whole gateway then waits on it.
        let writer = write_loop(Arc::downgrade(&sink), store, rx, config.batch_max.max(1));
        let spawned = std::thread::Builder::new()
            .name("citadel-events".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer),
                    Err(e) => tracing::error!(error = %e, "cannot start the event writer"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the event writer thread");
            sink.healthy.store(false, Ordering::Release);
        }
        tokio::spawn(summarize_shed(Arc::downgrade(&sink)));
        sink
    }

    /// Waits, at most `max`, until the writer has room again. Admission
    /// waits here rather than refusing at once, so that a burst parks
    /// requests (and gives the writer the CPU) instead of spinning on 503s.
    pub async fn wait_for_room(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.room.notified();
            if self.has_room() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.has_room();
            }
        }
    }

    /// Counts a request refused because the writer was behind. Such refusals
    /// are summarized (one event per second with the count) rather than
    /// recorded one by one, which would only deepen the backlog.
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether the last write succeeded. The gateway refuses requests while not.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Whether the writer is keeping up (fewer than `queue_max` events
    /// waiting). The gateway admits new requests only while it is.
    pub fn has_room(&self) -> bool {
        self.lag() < self.queue_max
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
            Durability::Durable => self.record_decision_durable(event).await,
            Durability::Async if !self.wait_for_room(self.room_wait).await => {
                Err(SinkError::QueueFull)
            }
            Durability::Async => self.record_queued(event),
        }
    }

    /// Records an event and waits until it is committed, whatever the mode
    /// (for admin changes, which must never go unrecorded).
    pub async fn record_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        let keep = self.bus.receiver_count() > 0;
        self.commit(Encoded::new(event, self.vault.as_deref(), keep))
            .await
    }

    /// Records a decision and waits until it is committed, whatever the
    /// mode. If the commit fails the caller refuses the request, so the event,
    /// stored later on retry, is rewritten to say the request was refused.
    pub async fn record_decision_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        let mut encoded = Encoded::new(event, self.vault.as_deref(), true);
        encoded.decision = true;
        self.commit(encoded).await
    }

    async fn commit(&self, encoded: Encoded) -> Result<(), SinkError> {
        if !self.is_healthy() {
            return Err(SinkError::Unavailable);
        }
        if !self.wait_for_room(self.room_wait).await {
            return Err(SinkError::QueueFull);
        }
        let (ack, done) = oneshot::channel();
        self.enqueue(Message::Event(encoded, Some(ack)))?;
        done.await.unwrap_or(Err(SinkError::Unavailable))
    }

    /// Queues an event without waiting (for outcomes of responses already
    /// sent, and decisions in `async` mode). It is written as soon as the
    /// store accepts it. Never refused for lack of room: admission control
    /// (see [`EventSink::has_room`]) bounds the queue, not dropping events.
    pub fn record_queued(&self, event: SecurityEvent) -> Result<(), SinkError> {
        let keep = self.bus.receiver_count() > 0;
        self.enqueue(Message::Event(
            Encoded::new(event, self.vault.as_deref(), keep),
            None,
        ))
    }

    fn enqueue(&self, message: Message) -> Result<(), SinkError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(message).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            SinkError::Unavailable
        })
    }

    /// Waits until every event queued before the call is durable.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Once a second, records how many requests were refused for overload.
async fn summarize_shed(sink: std::sync::Weak<EventSink>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(sink) = sink.upgrade() else { return };
        let shed = sink.shed.swap(0, Ordering::Relaxed);
        if shed > 0 {
            tracing::warn!(
                refused = shed,
                "requests refused because the event writer is behind"
            );
            let event = SecurityEvent::builder(
                citadel_core::EventClass::HttpActivity,
                99,
                "Other",
                citadel_core::Outcome::Failure,
            )
            .field(
                "message",
                serde_json::json!("requests refused: the security event writer is behind"),
            )
            .field("count", serde_json::json!(shed))
            .field("unmapped", serde_json::json!({"error_code": "overloaded"}))
            .build();
            let _ = sink.record_queued(event);
        }
    }
}

async fn write_loop(
    weak: std::sync::Weak<EventSink>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Message>,
    batch_max: usize,
) {
    let mut events = Vec::with_capacity(batch_max);
    let mut acks = Vec::with_capacity(batch_max);
    let mut flushes = Vec::new();
    let mut appender: Option<citadel_store::EventAppender> = None;
    let vault = weak.upgrade().and_then(|s| s.vault.clone());
    // The writer holds the sink only while it works on a batch, so dropping
    // the last handle closes the channel and ends the thread.
    while let Some(first) = rx.recv().await {
        let Some(sink) = weak.upgrade() else {
            // Every handle is gone: write what is still queued, then stop.
            let mut last = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                if let Message::Event(e, _) = message {
                    last.push(e);
                }
                next = rx.try_recv().ok();
            }
            let sealed = seal_pending(&mut last, vault.as_deref()).await;
            let rows: Vec<EventRow> = last.into_iter().filter_map(|e| e.row).collect();
            let written = match sealed {
                Ok(()) => store.append_rows(&rows).await,
                Err(e) => Err(citadel_store::StoreError::Corrupt(e.to_string())),
            };
            if let Err(error) = written {
                tracing::error!(%error, lost = rows.len(), "could not write the last security events at shutdown");
            }
            return;
        };
        let mut next = Some(first);
        while let Some(message) = next.take() {
            message.sort_into(&mut events, &mut acks, &mut flushes);
            if events.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let written = match seal_pending(&mut events, vault.as_deref()).await {
                Ok(()) => Ok(()),
                Err(e) => Err(citadel_store::StoreError::Corrupt(e.to_string())),
            };
            let rows: Vec<&EventRow> = events
                .iter()
                .filter_map(|e: &Encoded| e.row.as_ref())
                .collect();
            let written = match (written, appender.as_mut()) {
                (Err(e), _) => Err(e),
                (Ok(()), Some(a)) => a.append_rows(&rows).await,
                (Ok(()), None) => match store.event_appender().await {
                    Ok(mut a) => {
                        let r = a.append_rows(&rows).await;
                        appender = Some(a);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match written {
                Ok(()) => {
                    if !sink.healthy.swap(true, Ordering::AcqRel) {
                        tracing::warn!("event store writable again; accepting requests");
                    }
                    break;
                }
                Err(error) => {
                    // A fresh connection for the retry, in case this one broke.
                    appender = None;
                    if sink.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(%error, "cannot write security events; refusing requests until it recovers");
                    }
                    // The waiting requests are refused (never acknowledged);
                    // their events, and queued ones, are kept and retried.
                    // Requests that queued after this batch was taken are
                    // refused now too, rather than wait for the store.
                    while let Ok(message) = rx.try_recv() {
                        message.sort_into(&mut events, &mut acks, &mut flushes);
                    }
                    for (index, ack) in acks.drain(..) {
                        let _ = ack.send(Err(SinkError::Unavailable));
                        if events[index].decision {
                            events[index].mark_refused(vault.as_deref());
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        sink.written
            .fetch_add(events.len() as i64, Ordering::Relaxed);
        if sink.has_room() {
            // Wake admissions waiting for the writer to catch up.
            sink.room.notify_waiters();
        }
        for (_, ack) in acks.drain(..) {
            let _ = ack.send(Ok(()));
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        for e in events.drain(..) {
            if let Some(event) = e.event {
                let _ = sink.bus.send(event);
            }
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
        assert!(sink.record_decision_durable(event(1)).await.is_err());
        // A request that passed the health check just before the failure
        // queues its event directly; it must hear back, not hang.
        let (ack, done) = oneshot::channel();
        let mut second = Encoded::new(event(2), None, true);
        second.decision = true;
        sink.enqueue(Message::Event(second, Some(ack))).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert_eq!(
            answer.expect("the waiter was answered").unwrap(),
            Err(SinkError::Unavailable)
        );
        admin_exec(&admin, "DROP TRIGGER block").await;
        sink.flush().await;
        assert_eq!(store.count_events().await.unwrap(), 2);
        // Both refused requests' events are stored, and say they were refused.
        let (stored, _) = store.query_events(&Default::default()).await.unwrap();
        for e in stored {
            assert_eq!(e.outcome, citadel_core::Outcome::Failure);
            assert_eq!(e.body["disposition"], "Blocked");
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_decisions_but_keeps_every_queued_event() {
        let (store, dir) = store().await;
        let sink = EventSink::start(
            store.clone(),
            SinkConfig {
                durability: Durability::Async,
                queue_max: 3,
                room_wait: Duration::from_millis(200),
                ..Default::default()
            },
        );
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let admin = Store::open(&url).await.unwrap();
        admin_exec(&admin, "CREATE TRIGGER block BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'slow disk'); END").await;
        for i in 0..3 {
            sink.record_queued(event(i)).unwrap();
        }
        assert!(!sink.has_room());
        let started = std::time::Instant::now();
        assert_eq!(sink.record(event(9)).await, Err(SinkError::QueueFull));
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "refused without waiting for room"
        );
        // Outcomes of admitted requests are still accepted, never dropped.
        sink.record_queued(event(4)).unwrap();
        // A request waiting for room is woken as soon as the writer catches
        // up, not at the end of its wait.
        let waiter = {
            let sink = sink.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                (
                    sink.wait_for_room(Duration::from_secs(30)).await,
                    started.elapsed(),
                )
            })
        };
        admin_exec(&admin, "DROP TRIGGER block").await;
        let (room, waited) = waiter.await.unwrap();
        assert!(
            room && waited < Duration::from_secs(10),
            "woken after {waited:?}"
        );
        sink.flush().await;
        assert_eq!(store.count_events().await.unwrap(), 4);
        assert!(sink.has_room());
        assert!(sink.wait_for_room(Duration::from_millis(10)).await);
    }

    async fn admin_exec(store: &Store, sql: &str) {
        store.execute_raw_for_tests(sql).await.unwrap();
    }
}
