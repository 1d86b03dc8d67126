//! Authorization with Cedar: Citadel's schema, the policy files users edit,
//! and the decision for each request.
//!
//! Policies are data: `*.cedar` files in the policy directory, validated
//! against [`SCHEMA`] at load. A reload that fails validation is refused
//! with `file:line:column: reason` for each problem, and the set in force
//! stays in force. Anything no policy permits is denied.
//!
//! Non-features: no policy storage in the database (files are the source of
//! truth, reviewed like code), no rate limits or risk scores (other rooms feed
//! those in as context).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod load;
pub mod segments;

pub use engine::{
    Action, DataFacts, Decision, PolicyEngine, RequestFacts, Resource, StepUp, UpstreamFacts,
    Verification,
};
pub use load::{load_policies, LoadedPolicies, PolicyProblem, PolicyProblems};

/// Citadel's Cedar schema (`policies/citadel.cedarschema` in the repository).
pub const SCHEMA: &str = include_str!("../../../policies/citadel.cedarschema");

/// The default policy files, written into a new data directory's policy
/// folder: `(file name, contents)`.
pub const DEFAULT_POLICIES: &[(&str, &str)] = &[
    ("admin.cedar", include_str!("../../../policies/admin.cedar")),
    (
        "gateway.cedar",
        include_str!("../../../policies/gateway.cedar"),
    ),
    (
        "identity.cedar",
        include_str!("../../../policies/identity.cedar"),
    ),
    (
        "verify.cedar",
        include_str!("../../../policies/verify.cedar"),
    ),
    (
        "privacy.cedar",
        include_str!("../../../policies/privacy.cedar"),
    ),
];

/// The admin operations, each a Cedar action in `admin_read` or `admin_write`.
pub const ADMIN_OPERATIONS: &[&str] = &[
    "users.list",
    "roles.list",
    "keys.list",
    "upstreams.list",
    "policies.read",
    "events.read",
    "metrics.read",
    "audit.read",
    "users.sessions",
    "risk.read",
    "consent.read",
    "data_keys.read",
    "privacy.read",
    "devices.list",
    "workloads.list",
    "consent.write",
    "data_keys.rotate",
    "subjects.export",
    "subjects.erase",
    "privacy.purge",
    "users.create",
    "users.disable",
    "roles.create",
    "keys.create",
    "keys.revoke",
    "keys.create_for_user",
    "policies.validate",
    "policies.reload",
    "audit.checkpoint",
    "users.erase",
    "users.password",
    "users.mfa_enroll",
    "users.mfa_remove",
    "users.sign_out",
    "users.unlock",
    "devices.enroll",
    "devices.revoke",
    "workloads.revoke",
    "risk.set",
];

#[cfg(test)]
mod tests;
