//! The effective reachability matrix: who can reach what, computed from the
//! policies in force, so a reviewer sees the segmentation without reading
//! Cedar.
//!
//! Each role (built-in and custom) is asked, as a user and as a service
//! account holding only that role, every question the gateway asks: invoke
//! each model, and call each route with each method. A cell is `allow`
//! (permitted as is), `mfa` (permitted only with a fresh second factor),
//! `device` (permitted only from a compliant device), or `deny`. Conditions on the request's
//! context other than the second factor (the source address, the path) are
//! evaluated for the address and path given, and say so in the answer.

use std::net::IpAddr;

use citadel_core::{Principal, PrincipalKind};
use serde::Serialize;

use crate::engine::{Action, PolicyEngine, RequestFacts, Resource, UpstreamFacts};

/// Something the gateway can forward to.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentTarget {
    /// `model` or `route`.
    pub kind: &'static str,
    /// Model name or route prefix.
    pub name: String,
    /// HTTP method asked (`POST` for models).
    pub method: String,
    /// The serving upstream.
    pub upstream: String,
    /// `on_prem` or `external`.
    pub placement: String,
    #[serde(skip)]
    facts: UpstreamFacts,
}

impl SegmentTarget {
    /// A model served by `upstream`.
    pub fn model(name: &str, upstream: UpstreamFacts) -> Self {
        Self {
            kind: "model",
            name: name.to_owned(),
            method: "POST".into(),
            upstream: upstream.name.clone(),
            placement: upstream.placement.clone(),
            facts: upstream,
        }
    }

    /// A route prefix of an `http` upstream, called with `method`.
    pub fn route(prefix: &str, method: &str, upstream: UpstreamFacts) -> Self {
        Self {
            kind: "route",
            name: prefix.to_owned(),
            method: method.to_owned(),
            upstream: upstream.name.clone(),
            placement: upstream.placement.clone(),
            facts: upstream,
        }
    }
}

/// Access in one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Permitted.
    Allow,
    /// Permitted only with a (fresh) second factor.
    Mfa,
    /// Permitted only from a compliant device (and a second factor, if
    /// policy also asks for one).
    Device,
    /// Denied.
    Deny,
}

/// One cell: a role (as one kind of principal) and a target.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Role (or, for a workload, its SPIFFE ID).
    pub role: String,
    /// `user`, `service_account` or `workload`.
    pub principal_kind: &'static str,
    /// Index into [`Matrix::targets`].
    pub target: usize,
    /// The access.
    pub access: Access,
    /// The policies that decided (without a second factor).
    pub policies: Vec<String>,
}

/// The whole matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// Source address the context conditions were evaluated for.
    pub source_ip: IpAddr,
    /// Roles, in order.
    pub roles: Vec<String>,
    /// Workloads (SPIFFE IDs), in order; their cells have
    /// `principal_kind` `workload` and the SPIFFE ID as `role`.
    pub workloads: Vec<String>,
    /// Targets, in order.
    pub targets: Vec<SegmentTarget>,
    /// Every role × kind × target.
    pub cells: Vec<Cell>,
}

impl Matrix {
    /// The access of `role` (as `kind`) to target `index`.
    pub fn access(&self, role: &str, kind: &str, index: usize) -> Option<Access> {
        self.cells
            .iter()
            .find(|c| c.role == role && c.principal_kind == kind && c.target == index)
            .map(|c| c.access)
    }

    /// A fixed-width table: one row per role (split by principal kind only
    /// where the kinds differ), one column per target.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let headers: Vec<String> = self
            .targets
            .iter()
            .map(|t| match t.kind {
                "model" => t.name.clone(),
                _ => format!("{} {}", t.method, t.name),
            })
            .collect();
        let width = headers.iter().map(|h| h.len()).max().unwrap_or(4).max(5);
        let mut line = format!("{:<28}", "ROLE \\ TARGET");
        for h in &headers {
            line.push_str(&format!(" {h:<width$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        let mark = |a: Option<Access>| match a {
            Some(Access::Allow) => "allow",
            Some(Access::Mfa) => "mfa",
            Some(Access::Device) => "device",
            Some(Access::Deny) | None => "-",
        };
        let mut rows: Vec<(String, Vec<Option<Access>>)> = Vec::new();
        let cells_of = |who: &str, kind: &str| -> Vec<Option<Access>> {
            (0..self.targets.len())
                .map(|i| self.access(who, kind, i))
                .collect()
        };
        for role in &self.roles {
            let (user, service) = (cells_of(role, "user"), cells_of(role, "service_account"));
            if user == service {
                rows.push((role.clone(), user));
            } else {
                rows.push((format!("{role} (user)"), user));
                rows.push((format!("{role} (service account)"), service));
            }
        }
        for id in &self.workloads {
            rows.push((id.clone(), cells_of(id, "workload")));
        }
        for (label, cells) in rows {
            let mut line = format!("{label:<28}");
            for a in cells {
                line.push_str(&format!(" {:<width$}", mark(a)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn ask(
    engine: &PolicyEngine,
    principal: &Principal,
    target: &SegmentTarget,
    source_ip: IpAddr,
    mfa: bool,
    compliant_device: bool,
) -> crate::Decision {
    let (action, resource) = match target.kind {
        "model" => (
            Action::InvokeModel,
            Resource::Model {
                name: &target.name,
                upstream: &target.facts,
            },
        ),
        _ => (
            Action::CallRoute,
            Resource::Route {
                prefix: &target.name,
                upstream: &target.facts,
            },
        ),
    };
    let path = match target.kind {
        "model" => "/v1/chat/completions".to_owned(),
        _ => target.name.clone(),
    };
    let facts = RequestFacts {
        source_ip,
        method: &target.method,
        path: &path,
        auth_method: match principal.kind {
            PrincipalKind::User => "session",
            PrincipalKind::ServiceAccount => "api_key",
            PrincipalKind::Workload => "mtls",
        },
        mfa,
        mfa_age_seconds: if mfa { 0 } else { i64::MAX },
        device_trust: if compliant_device {
            "compliant"
        } else {
            "unknown"
        },
        verification: Default::default(),
    };
    engine.authorize(principal, action, &resource, &facts)
}

/// The cells of one row: `principal` against every target.
fn row(
    engine: &PolicyEngine,
    principal: &Principal,
    label: &str,
    targets: &[SegmentTarget],
    source_ip: IpAddr,
) -> Vec<Cell> {
    targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let plain = ask(engine, principal, target, source_ip, false, false);
            let access = if plain.allowed {
                Access::Allow
            } else if ask(engine, principal, target, source_ip, true, false).allowed {
                Access::Mfa
            } else if ask(engine, principal, target, source_ip, true, true).allowed {
                Access::Device
            } else {
                Access::Deny
            };
            Cell {
                role: label.to_owned(),
                principal_kind: principal.kind.as_str(),
                target: index,
                access,
                policies: plain.policies,
            }
        })
        .collect()
}

/// Computes the matrix for `roles` (and registered `workloads`, each with
/// its SPIFFE ID and roles) × `targets` from the policies in force.
pub fn reachability(
    engine: &PolicyEngine,
    roles: &[String],
    workloads: &[(String, Vec<String>)],
    targets: Vec<SegmentTarget>,
    source_ip: IpAddr,
) -> Matrix {
    let mut cells = Vec::new();
    for role in roles {
        for kind in [PrincipalKind::User, PrincipalKind::ServiceAccount] {
            // A principal of its own, holding only this role, so nothing
            // else it holds can open a door.
            let principal = Principal {
                id: format!("segments:{}:{role}", kind.as_str()),
                kind,
                name: format!("any {role}"),
                roles: vec![role.clone()],
                credential: "segments".into(),
            };
            cells.extend(row(engine, &principal, role, &targets, source_ip));
        }
    }
    for (spiffe_id, roles) in workloads {
        // A workload as it authenticates: its SPIFFE ID and its roles.
        let principal = Principal {
            id: spiffe_id.clone(),
            kind: PrincipalKind::Workload,
            name: spiffe_id.clone(),
            roles: roles.clone(),
            credential: "segments".into(),
        };
        cells.extend(row(engine, &principal, spiffe_id, &targets, source_ip));
    }
    Matrix {
        source_ip,
        roles: roles.to_vec(),
        workloads: workloads.iter().map(|(id, _)| id.clone()).collect(),
        targets,
        cells,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, kind: &str, placement: &str) -> UpstreamFacts {
        UpstreamFacts {
            name: name.into(),
            kind: kind.into(),
            placement: placement.into(),
        }
    }

    #[test]
    fn the_matrix_follows_the_policies_and_denies_by_default() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in crate::DEFAULT_POLICIES {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(
            dir.path().join("segments.cedar"),
            r#"
// Analysts read the warehouse API, nothing else.
@id("analysts-read-warehouse")
permit (principal in Citadel::Role::"analyst", action == Citadel::Action::"call_route", resource)
when { resource.prefix == "/warehouse" && context.method == "GET" };

// External models need a fresh second factor.
@id("external-needs-mfa")
@step_up("mfa")
forbid (principal, action == Citadel::Action::"invoke_model", resource)
when { resource.placement == "external" }
unless { context.mfa };

// Services never reach the warehouse.
@id("services-not-warehouse")
forbid (principal in Citadel::Role::"service", action == Citadel::Action::"call_route", resource)
when { resource.prefix == "/warehouse" };
"#,
        )
        .unwrap();
        let engine = PolicyEngine::load(dir.path()).unwrap();
        let targets = vec![
            SegmentTarget::model("llama", upstream("local", "openai", "on_prem")),
            SegmentTarget::model("gpt", upstream("hosted", "openai", "external")),
            SegmentTarget::route("/warehouse", "GET", upstream("wh", "http", "on_prem")),
            SegmentTarget::route("/warehouse", "DELETE", upstream("wh", "http", "on_prem")),
        ];
        let roles: Vec<String> = ["developer", "service", "analyst", "auditor"]
            .iter()
            .map(|r| r.to_string())
            .collect();
        let workloads = vec![(
            "spiffe://citadel.local/ns/etl/sa/loader".to_owned(),
            vec!["analyst".to_owned()],
        )];
        let m = reachability(
            &engine,
            &roles,
            &workloads,
            targets,
            "10.0.0.1".parse().unwrap(),
        );
        use Access::*;
        let row = |role: &str, kind: &str| -> Vec<Access> {
            (0..4).map(|i| m.access(role, kind, i).unwrap()).collect()
        };
        assert_eq!(row("developer", "user"), vec![Allow, Mfa, Allow, Allow]);
        assert_eq!(
            row("service", "service_account"),
            vec![Allow, Mfa, Deny, Deny]
        );
        assert_eq!(row("analyst", "user"), vec![Deny, Deny, Allow, Deny]);
        assert_eq!(row("auditor", "user"), vec![Deny, Deny, Deny, Deny]);
        // A workload is a source of its own, with its roles.
        assert_eq!(
            row("spiffe://citadel.local/ns/etl/sa/loader", "workload"),
            vec![Deny, Deny, Allow, Deny]
        );
        let table = m.to_table();
        assert!(table.contains("GET /warehouse"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("analyst ")), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("spiffe://citadel.local/ns/etl")),
            "{table}"
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["cells"][0]["access"], "allow");
        assert_eq!(json["targets"][1]["placement"], "external");
    }
}
