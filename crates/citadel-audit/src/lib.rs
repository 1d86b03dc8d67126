//! Recording and proving: the event bus that carries security events from
//! the data plane to the control plane, the durable sink that appends them to
//! the event store in batches (group commit), and the tamper-evident Merkle
//! log over that store — C2SP tlog-tiles tiles, C2SP tlog-checkpoint
//! checkpoints signed as C2SP signed-notes with Ed25519, RFC 6962 inclusion
//! and consistency proofs, and the verifiers an auditor runs.
//!
//! In `durable` mode a caller's [`EventSink::record`] returns only once its
//! event is committed, so the gateway can hold a response until its decision
//! is on disk; in `async` mode it returns once the event is queued. Either
//! way, when the store cannot be written the sink reports itself unhealthy and
//! the gateway refuses new requests instead of running unrecorded. Consumers
//! on the bus see an event only after it is durable.
//!
//! The tree is grown by the store in the same transaction as the events it
//! covers (`citadel-store`), so it can never lag behind or run ahead of them.
//!
//! Non-features: no cryptography of its own (ed25519-dalek signs, sha2
//! hashes); no witness cosigning yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod export;
mod log;
mod note;
mod sink;
mod subject;
mod verify;

pub use export::{spawn_exporters, syslog_message, ExporterConfig};
pub use log::{AuditLog, ConsistencyProof, InclusionProof, LogError, DEFAULT_PROOF_CACHE_BYTES};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
pub use sink::{Durability, EventSink, SinkConfig, SinkError};
pub use subject::{Opened, SubjectVault, VaultError, SEALED_FIELDS};
pub use verify::{
    verify_columns, verify_export, verify_store, verify_store_pinned, VerifyFailure, VerifyReport,
};

#[cfg(test)]
mod tests;
