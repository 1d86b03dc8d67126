//! Recording: the event bus that carries security events from the data
//! plane to the control plane, and the durable sink that appends them to the
//! append-only event store in batches (group commit).
//!
//! In `durable` mode a caller's [`EventSink::record`] returns only once its
//! event is committed, so the gateway can hold a response until its decision
//! is on disk; in `async` mode it returns once the event is queued. Either
//! way, when the store cannot be written the sink reports itself unhealthy and
//! the gateway refuses new requests instead of running unrecorded. Consumers
//! on the bus see an event only after it is durable.
//!
//! Non-features (yet): the Merkle tree, checkpoints and proofs over the
//! store, and exporters to SIEMs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod sink;

pub use sink::{Durability, EventSink, SinkConfig, SinkError};
