//! Security events, shaped after OCSF 1.1 (Open Cybersecurity Schema
//! Framework) so that SIEMs read them without a custom parser.
//!
//! One event is made per decision: an authentication outcome (class 3002),
//! an authorization decision or admin operation (API Activity, 6003), and a
//! proxied call with its outcome (HTTP Activity, 4002). Events never carry a
//! secret: credentials appear only by their identifier.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// The OCSF classes Citadel emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventClass {
    /// Authentication (3002), category Identity & Access Management (3).
    Authentication,
    /// Account Change (3001).
    AccountChange,
    /// HTTP Activity (4002), category Network Activity (4).
    HttpActivity,
    /// API Activity (6003), category Application Activity (6).
    ApiActivity,
}

impl EventClass {
    /// OCSF `class_uid`.
    pub fn uid(self) -> i64 {
        match self {
            Self::Authentication => 3002,
            Self::AccountChange => 3001,
            Self::HttpActivity => 4002,
            Self::ApiActivity => 6003,
        }
    }

    /// OCSF `class_name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Authentication => "Authentication",
            Self::AccountChange => "Account Change",
            Self::HttpActivity => "HTTP Activity",
            Self::ApiActivity => "API Activity",
        }
    }

    /// OCSF `category_uid`.
    pub fn category_uid(self) -> i64 {
        self.uid() / 1000
    }

    /// Parses a class given by number (`6003`) or by a short name
    /// (`authentication`, `account_change`, `http_activity`, `api_activity`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "3002" | "authentication" => Some(Self::Authentication),
            "3001" | "account_change" => Some(Self::AccountChange),
            "4002" | "http_activity" => Some(Self::HttpActivity),
            "6003" | "api_activity" => Some(Self::ApiActivity),
            _ => None,
        }
    }
}

/// Whether the action the event describes succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed, succeeded.
    Success,
    /// Refused or failed.
    Failure,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One OCSF event. The typed fields are the ones Citadel indexes and
/// queries; the rest of the OCSF object lives in `body`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// Unique id (`metadata.uid`), a UUIDv7 so ids sort by time.
    pub id: String,
    /// Unix milliseconds (`time`).
    pub time: i64,
    /// OCSF class.
    pub class: EventClass,
    /// Success or failure (`status_id`).
    pub outcome: Outcome,
    /// The acting principal's id, when known (`actor.user.uid`).
    pub principal: Option<String>,
    /// The request this event belongs to (`metadata.correlation_uid`).
    pub request_id: Option<String>,
    /// The full OCSF object.
    pub body: Value,
}

/// Builds a [`SecurityEvent`] field by field, filling the OCSF envelope.
#[derive(Debug)]
pub struct EventBuilder {
    class: EventClass,
    activity_id: i64,
    activity: &'static str,
    outcome: Outcome,
    principal: Option<String>,
    request_id: Option<String>,
    fields: Map<String, Value>,
}

impl SecurityEvent {
    /// Starts an event of `class` with an OCSF `activity_id` and its name.
    pub fn builder(
        class: EventClass,
        activity_id: i64,
        activity: &'static str,
        outcome: Outcome,
    ) -> EventBuilder {
        EventBuilder {
            class,
            activity_id,
            activity,
            outcome,
            principal: None,
            request_id: None,
            fields: Map::new(),
        }
    }

    /// Starts the event for a change an operator made through `service`
    /// (`admin` API or `cli`): Account Change (3001) for identities (users,
    /// keys, roles), API Activity otherwise; the activity comes from the
    /// operation's verb (`keys.create` → Create).
    pub fn change(operation: &str, service: &str, resource: Value) -> EventBuilder {
        let identity = ["users.", "keys.", "roles.", "devices.", "workloads."]
            .iter()
            .any(|p| operation.starts_with(p));
        let class = if identity {
            EventClass::AccountChange
        } else {
            EventClass::ApiActivity
        };
        let verb = operation.rsplit('.').next();
        let (activity_id, activity) = if identity {
            // OCSF Account Change activities.
            match verb {
                Some("create" | "issue" | "enroll_token") => (1, "Create"),
                Some("password") => (4, "Password Reset"),
                Some("disable") => (5, "Disable"),
                Some("revoke" | "erase") => (6, "Delete"),
                Some("mfa_enroll") => (10, "MFA Factor Enable"),
                Some("mfa_remove") => (11, "MFA Factor Disable"),
                _ => (99, "Other"),
            }
        } else {
            // OCSF API Activity activities.
            match verb {
                Some("create" | "grant") => (1, "Create"),
                Some("revoke" | "withdraw") => (4, "Delete"),
                _ => (99, "Other"),
            }
        };
        Self::builder(class, activity_id, activity, Outcome::Success)
            .field(
                "api",
                serde_json::json!({"operation": operation, "service": {"name": service}}),
            )
            .field("resources", serde_json::json!([resource]))
    }

    /// The event as one JSON line (the OCSF object).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.body).unwrap_or_default()
    }

    /// Rebuilds an event from its stored OCSF object.
    pub fn from_body(body: Value) -> Option<Self> {
        let class = EventClass::parse(&body.get("class_uid")?.as_i64()?.to_string())?;
        let outcome = match body.get("status_id")?.as_i64()? {
            1 => Outcome::Success,
            _ => Outcome::Failure,
        };
        Some(Self {
            id: body.pointer("/metadata/uid")?.as_str()?.to_owned(),
            time: body.get("time")?.as_i64()?,
            class,
            outcome,
            principal: body
                .pointer("/actor/user/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            request_id: body
                .pointer("/metadata/correlation_uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            body,
        })
    }
}

impl EventBuilder {
    /// The acting principal (`actor.user`).
    pub fn actor(mut self, p: &crate::Principal) -> Self {
        self.principal = Some(p.id.clone());
        self.fields.insert(
            "actor".into(),
            serde_json::json!({
                "user": {
                    "uid": p.id,
                    "name": p.name,
                    "type": p.kind.as_str(),
                    "groups": p.roles.iter().map(|r| serde_json::json!({"name": r})).collect::<Vec<_>>(),
                    "credential_uid": p.credential,
                }
            }),
        );
        self
    }

    /// An actor known only by name (e.g. a failed login's claimed user, or
    /// the local operator running the CLI).
    pub fn actor_named(mut self, uid: &str, name: &str, kind: &str) -> Self {
        self.principal = Some(uid.to_owned());
        self.fields.insert(
            "actor".into(),
            serde_json::json!({"user": {"uid": uid, "name": name, "type": kind}}),
        );
        self
    }

    /// The request this event is about (`metadata.correlation_uid`).
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    /// Sets any other OCSF attribute (`src_endpoint`, `http_request`,
    /// `http_response`, `api`, `policy`, `message`, `unmapped`, …).
    pub fn field(mut self, name: &str, value: Value) -> Self {
        self.fields.insert(name.to_owned(), value);
        self
    }

    /// Blocked or allowed (`disposition_id`: 1 Allowed, 2 Blocked).
    pub fn disposition(self, allowed: bool) -> Self {
        let (id, name) = if allowed {
            (1, "Allowed")
        } else {
            (2, "Blocked")
        };
        self.field("disposition_id", Value::from(id))
            .field("disposition", Value::from(name))
    }

    /// Finishes the event, stamping id, time and envelope.
    pub fn build(self) -> SecurityEvent {
        let id = uuid::Uuid::now_v7().to_string();
        let time = crate::clock::now_ms();
        let class = self.class;
        let (status_id, status, severity_id, severity) = match self.outcome {
            Outcome::Success => (1, "Success", 1, "Informational"),
            Outcome::Failure => (2, "Failure", 3, "Medium"),
        };
        let mut body = self.fields;
        let mut metadata = serde_json::json!({
            "uid": id,
            "version": OCSF_VERSION,
            "product": {"name": "Citadel", "vendor_name": "Citadel", "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(r) = &self.request_id {
            metadata["correlation_uid"] = Value::String(r.clone());
        }
        body.insert("metadata".into(), metadata);
        body.insert("time".into(), Value::from(time));
        body.insert("class_uid".into(), Value::from(class.uid()));
        body.insert("class_name".into(), Value::from(class.name()));
        body.insert("category_uid".into(), Value::from(class.category_uid()));
        body.insert("activity_id".into(), Value::from(self.activity_id));
        body.insert("activity_name".into(), Value::from(self.activity));
        body.insert(
            "type_uid".into(),
            Value::from(class.uid() * 100 + self.activity_id),
        );
        body.insert("status_id".into(), Value::from(status_id));
        body.insert("status".into(), Value::from(status));
        body.insert("severity_id".into(), Value::from(severity_id));
        body.insert("severity".into(), Value::from(severity));
        SecurityEvent {
            id,
            time,
            class,
            outcome: self.outcome,
            principal: self.principal,
            request_id: self.request_id,
            body: Value::Object(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_follows_ocsf() {
        let e = SecurityEvent::builder(EventClass::ApiActivity, 1, "Create", Outcome::Success)
            .actor_named("u1", "alice", "user")
            .request_id("r1")
            .disposition(true)
            .build();
        let b = &e.body;
        assert_eq!(b["class_uid"], 6003);
        assert_eq!(b["category_uid"], 6);
        assert_eq!(b["type_uid"], 600301);
        assert_eq!(b["status_id"], 1);
        assert_eq!(b["disposition_id"], 1);
        assert_eq!(b["metadata"]["version"], OCSF_VERSION);
        let back = SecurityEvent::from_body(b.clone()).unwrap();
        assert_eq!(back, e);
    }
}
