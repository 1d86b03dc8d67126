//! Who is acting.

use serde::{Deserialize, Serialize};

/// The roles every installation has. Custom roles are added beside them.
pub const BUILTIN_ROLES: &[&str] = &["admin", "operator", "auditor", "developer", "service"];

/// What kind of identity a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person.
    User,
    /// A machine identity, such as the owner of a service API key.
    ServiceAccount,
    /// A service identified by its SPIFFE X.509 certificate.
    Workload,
}

impl PrincipalKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ServiceAccount => "service_account",
            Self::Workload => "workload",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "service_account" => Some(Self::ServiceAccount),
            "workload" => Some(Self::Workload),
            _ => None,
        }
    }
}

/// An authenticated identity, as the data plane and the admin API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable identifier (user id or service-account id).
    pub id: String,
    /// User or service account.
    pub kind: PrincipalKind,
    /// Display name.
    pub name: String,
    /// Roles, as Cedar groups.
    pub roles: Vec<String>,
    /// The credential that proved it, e.g. `api_key:<id>`.
    pub credential: String,
}
