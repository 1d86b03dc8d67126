//! The decision point: one Cedar evaluation per question, against the policy
//! set in force, which a reload swaps atomically (in-flight decisions finish
//! on the set they started with).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression, Schema,
};
use citadel_core::{Principal, PrincipalKind};
use parking_lot::Mutex;

use crate::load::{load_policies, policy_files, LoadedPolicies, PolicyProblems};

/// What the principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call a model through an OpenAI-compatible route.
    InvokeModel,
    /// Call an `http` upstream's route.
    CallRoute,
    /// An admin API operation (one of [`crate::ADMIN_OPERATIONS`]).
    Admin(&'static str),
    /// Giving a role to a new user or key.
    GrantRole,
    /// A person signing in.
    SignIn,
    /// Sending a request's text, as inspected, to a model or route
    /// (asked with [`DataFacts`] after inspection).
    SendData,
    /// Giving back the values that pseudonyms stand for in an answer.
    Reidentify,
}

impl Action {
    /// The Cedar action id (`invoke_model`, `keys.create`, …).
    pub fn cedar_id(self) -> &'static str {
        match self {
            Self::InvokeModel => "invoke_model",
            Self::CallRoute => "call_route",
            Self::Admin(op) => op,
            Self::GrantRole => "grant_role",
            Self::SignIn => "sign_in",
            Self::SendData => "send_data",
            Self::Reidentify => "reidentify",
        }
    }
}

/// What Cedar knows of an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamFacts {
    /// Upstream name.
    pub name: String,
    /// `openai` or `http`.
    pub kind: String,
    /// `on_prem` or `external`.
    pub placement: String,
}

/// What the action is done on.
#[derive(Debug, Clone)]
pub enum Resource<'a> {
    /// A model and the upstream that would serve it.
    Model {
        /// Model name.
        name: &'a str,
        /// Serving upstream.
        upstream: &'a UpstreamFacts,
    },
    /// A route prefix of an `http` upstream.
    Route {
        /// The prefix.
        prefix: &'a str,
        /// Its upstream.
        upstream: &'a UpstreamFacts,
    },
    /// An area of the admin API (`keys`, `users`, …).
    AdminApi(&'a str),
    /// A role, for [`Action::GrantRole`].
    Role(&'a str),
    /// A listener, for [`Action::SignIn`].
    Listener(&'a str),
}

/// Facts about the request, passed to Cedar as context.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// Client address.
    pub source_ip: IpAddr,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// How the caller proved who they are (`api_key`, `session`, `password`).
    pub auth_method: &'a str,
    /// Whether a second factor was proved.
    pub mfa: bool,
    /// Seconds since the second factor was proved (`i64::MAX` if never).
    pub mfa_age_seconds: i64,
    /// The client device's trust (`unknown`, `registered`, `compliant`).
    pub device_trust: &'a str,
    /// What continuous verification found.
    pub verification: Verification<'a>,
}

/// What continuous verification found about the caller, for policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verification<'a> {
    /// The principal's risk score now, 0..100.
    pub risk_score: i64,
    /// The client's network differs from the session's (or the last request's).
    pub network_changed: bool,
    /// Speed implied by this and the previous request's locations, km/h
    /// (0 when unknown).
    pub travel_kmh: i64,
    /// The client address's country (ISO code; empty when unknown).
    pub country: &'a str,
}

/// What inspection found in a request's text, for the data actions
/// ([`Action::SendData`], [`Action::Reidentify`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DataFacts {
    /// The highest data class found (`public` when nothing was).
    pub data_class: String,
    /// Every class found.
    pub data_classes: Vec<String>,
    /// Every entity type found (`EMAIL_ADDRESS`, …).
    pub data_types: Vec<String>,
    /// How many findings in all.
    pub finding_count: i64,
    /// Whether the text was redacted before this question.
    pub redacted: bool,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The policies that decided: the permits that allowed, or the forbids
    /// that denied; `default-deny` when nothing permitted.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errors does not permit).
    pub errors: Vec<String>,
    /// When denied by a policy annotated `@step_up("<acr>")` (and
    /// optionally `@max_age("<seconds>")`): the stronger authentication
    /// that would satisfy it, for an RFC 9470 challenge instead of a 403.
    pub step_up: Option<StepUp>,
}

/// What a denying policy asks the caller to prove (RFC 9470).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// Authentication context class required (`acr_values`), e.g. `mfa`.
    pub acr: String,
    /// Longest time since that authentication, seconds (`max_age`).
    pub max_age: Option<u64>,
}

/// Everything a decision depends on. Cedar's answer is a pure function of
/// these (the entities and context are built from them alone) and of the
/// policy set, so decisions are memoized per policy generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal_kind: PrincipalKind,
    principal_id: String,
    principal_name: String,
    roles: Vec<String>,
    action: &'static str,
    resource: (u8, String, String, String, String),
    source_ip: IpAddr,
    method: String,
    path: String,
    auth_method: String,
    mfa: bool,
    mfa_age_seconds: i64,
    device_trust: String,
    risk_score: i64,
    network_changed: bool,
    travel_kmh: i64,
    country: String,
    data: Option<DataFacts>,
}

impl DecisionKey {
    fn new(
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        facts: &RequestFacts<'_>,
        data: Option<&DataFacts>,
    ) -> Self {
        let upstream_key = |tag: u8, name: &str, u: &UpstreamFacts| {
            (
                tag,
                name.to_owned(),
                u.name.clone(),
                u.kind.clone(),
                u.placement.clone(),
            )
        };
        Self {
            principal_kind: principal.kind,
            principal_id: principal.id.clone(),
            principal_name: principal.name.clone(),
            roles: principal.roles.clone(),
            action: action.cedar_id(),
            resource: match resource {
                Resource::Model { name, upstream } => upstream_key(0, name, upstream),
                Resource::Route { prefix, upstream } => upstream_key(1, prefix, upstream),
                Resource::AdminApi(area) => (
                    2,
                    (*area).to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Resource::Role(role) => (
                    3,
                    (*role).to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Resource::Listener(name) => (
                    4,
                    (*name).to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
            },
            source_ip: facts.source_ip,
            method: facts.method.to_owned(),
            path: facts.path.to_owned(),
            auth_method: facts.auth_method.to_owned(),
            mfa: facts.mfa,
            mfa_age_seconds: facts.mfa_age_seconds,
            device_trust: facts.device_trust.to_owned(),
            risk_score: facts.verification.risk_score,
            network_changed: facts.verification.network_changed,
            travel_kmh: facts.verification.travel_kmh,
            country: facts.verification.country.to_owned(),
            data: data.cloned(),
        }
    }
}

/// The step-up the denying policies ask for: the first with a `@step_up`
/// annotation names the class; the smallest `@max_age` among them wins.
/// `None` if any denying policy asks for none (then nothing would help).
fn step_up_of(set: &cedar_policy::PolicySet, deciding: &[String]) -> Option<StepUp> {
    let mut found: Option<StepUp> = None;
    for id in deciding {
        let policy = set.policy(&cedar_policy::PolicyId::new(id))?;
        let acr = policy.annotation("step_up")?;
        let max_age = policy
            .annotation("max_age")
            .and_then(|v| v.parse::<u64>().ok());
        found = Some(match found {
            None => StepUp {
                acr: acr.to_owned(),
                max_age,
            },
            Some(prev) => StepUp {
                acr: prev.acr,
                max_age: match (prev.max_age, max_age) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            },
        });
    }
    found
}

/// Memoized decisions; emptied on every reload and when full.
const DECISION_CACHE_MAX: usize = 16_384;
/// Longest path whose decisions are memoized.
const MAX_CACHED_PATH: usize = 256;

struct Active {
    loaded: LoadedPolicies,
    fingerprint: Vec<(PathBuf, SystemTime, u64)>,
}

/// Holds the policy set in force and answers authorization questions.
pub struct PolicyEngine {
    dir: PathBuf,
    schema: Schema,
    authorizer: Authorizer,
    /// Each action's entity and its groups' entities, from the schema, so
    /// that `action in Citadel::Action::"admin_read"` holds.
    action_entities: HashMap<String, Vec<Entity>>,
    active: ArcSwap<Active>,
    reload_lock: Mutex<()>,
    decisions: Mutex<HashMap<DecisionKey, Decision>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    policy_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m.modified().ok()?, m.len()))
        })
        .collect()
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name).expect("type names are literals in this file"),
        EntityId::new(id),
    )
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// Parses [`crate::SCHEMA`].
pub(crate) fn citadel_schema() -> Schema {
    Schema::from_cedarschema_str(crate::SCHEMA)
        .expect("the built-in schema is valid (tested)")
        .0
}

impl PolicyEngine {
    /// Loads and validates the policies in `dir`.
    pub fn load(dir: &Path) -> Result<Self, PolicyProblems> {
        let schema = citadel_schema();
        let fp = fingerprint(dir);
        let loaded = load_policies(dir, &schema)?;
        let actions = schema
            .action_entities()
            .expect("the built-in schema's actions form entities (tested)");
        let mut action_entities = HashMap::new();
        for action in actions.iter() {
            let mut with_groups = vec![action.clone()];
            for group in actions.ancestors(&action.uid()).into_iter().flatten() {
                with_groups.extend(actions.get(group).cloned());
            }
            action_entities.insert(action.uid().id().unescaped().to_owned(), with_groups);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            schema,
            action_entities,
            authorizer: Authorizer::new(),
            active: ArcSwap::from_pointee(Active {
                loaded,
                fingerprint: fp,
            }),
            reload_lock: Mutex::new(()),
            decisions: Mutex::new(HashMap::new()),
        })
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `(policy id, file)` of the set in force.
    pub fn policy_origins(&self) -> Vec<(String, String)> {
        self.active.load().loaded.origins.clone()
    }

    /// Validates the directory as it is now, without changing what is in force.
    pub fn check(&self) -> Result<LoadedPolicies, PolicyProblems> {
        load_policies(&self.dir, &self.schema)
    }

    /// Reloads the directory. On success the new set is in force for the
    /// next decision; on failure the old set stays and the problems are returned.
    pub fn reload(&self) -> Result<usize, PolicyProblems> {
        let _one_at_a_time = self.reload_lock.lock();
        let fp = fingerprint(&self.dir);
        let loaded = load_policies(&self.dir, &self.schema)?;
        let count = loaded.origins.len();
        // Swap the set and forget old decisions together, so no decision made
        // under the old set is served after the swap.
        let mut decisions = self.decisions.lock();
        self.active.store(Arc::new(Active {
            loaded,
            fingerprint: fp,
        }));
        decisions.clear();
        Ok(count)
    }

    /// Whether the files changed since the set in force was loaded.
    pub fn changed_on_disk(&self) -> bool {
        fingerprint(&self.dir) != self.active.load().fingerprint
    }

    /// Decides whether `principal` may do `action` on `resource`.
    /// Deny by default; a request Cedar cannot even build is denied too.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        self.decide(principal, action, resource, facts, None)
    }

    /// Decides a data action ([`Action::SendData`], [`Action::Reidentify`])
    /// with what inspection found in the request's text as context.
    pub fn authorize_data(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        facts: &RequestFacts<'_>,
        data: &DataFacts,
    ) -> Decision {
        self.decide(principal, action, resource, facts, Some(data))
    }

    fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        facts: &RequestFacts<'_>,
        data: Option<&DataFacts>,
    ) -> Decision {
        let key = DecisionKey::new(principal, action, resource, facts, data);
        if let Some(d) = self.decisions.lock().get(&key) {
            return d.clone();
        }
        // Evaluate under the cache lock's generation: take the set first, and
        // only cache if no reload happened meanwhile.
        let active = self.active.load_full();
        match self.evaluate(&active, principal, action, resource, facts, data) {
            Ok(d) => {
                let mut decisions = self.decisions.lock();
                // Long paths (http routes) are evaluated but not remembered, so
                // clients cannot fill the cache with large keys. Neither are
                // decisions that depend on a second factor's age, which
                // changes every second: remembering them would only churn
                // the cache for everyone.
                let cacheable = key.path.len() <= MAX_CACHED_PATH && !facts.mfa;
                if cacheable && Arc::ptr_eq(&active, &self.active.load()) {
                    if decisions.len() >= DECISION_CACHE_MAX {
                        decisions.clear();
                    }
                    decisions.insert(key, d.clone());
                }
                d
            }
            Err(reason) => {
                tracing::error!(%reason, "authorization request could not be built; denied");
                Decision {
                    allowed: false,
                    policies: vec!["default-deny".into()],
                    errors: vec![reason],
                    step_up: None,
                }
            }
        }
    }

    fn evaluate(
        &self,
        active: &Active,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        facts: &RequestFacts<'_>,
        data: Option<&DataFacts>,
    ) -> Result<Decision, String> {
        let mut entities = Vec::with_capacity(8);
        let roles: HashSet<EntityUid> = principal
            .roles
            .iter()
            .map(|r| uid("Citadel::Role", r))
            .collect();
        for r in &roles {
            entities.push(Entity::with_uid(r.clone()));
        }
        let principal_type = match principal.kind {
            PrincipalKind::User => "Citadel::User",
            PrincipalKind::ServiceAccount => "Citadel::ServiceAccount",
            PrincipalKind::Workload => "Citadel::Workload",
        };
        let principal_uid = uid(principal_type, &principal.id);
        entities.push(
            Entity::new(
                principal_uid.clone(),
                HashMap::from([("name".to_owned(), string(&principal.name))]),
                roles,
            )
            .map_err(|e| e.to_string())?,
        );
        let upstream_entity = |u: &UpstreamFacts| -> Result<Entity, String> {
            Entity::new(
                uid("Citadel::Upstream", &u.name),
                HashMap::from([
                    ("kind".to_owned(), string(&u.kind)),
                    ("placement".to_owned(), string(&u.placement)),
                ]),
                HashSet::new(),
            )
            .map_err(|e| e.to_string())
        };
        let resource_uid = match resource {
            Resource::Model { name, upstream } => {
                let id = uid("Citadel::Model", name);
                entities.push(upstream_entity(upstream)?);
                entities.push(
                    Entity::new(
                        id.clone(),
                        HashMap::from([("placement".to_owned(), string(&upstream.placement))]),
                        HashSet::from([uid("Citadel::Upstream", &upstream.name)]),
                    )
                    .map_err(|e| e.to_string())?,
                );
                id
            }
            Resource::Route { prefix, upstream } => {
                let id = uid("Citadel::Route", prefix);
                entities.push(upstream_entity(upstream)?);
                entities.push(
                    Entity::new(
                        id.clone(),
                        HashMap::from([
                            ("prefix".to_owned(), string(prefix)),
                            ("placement".to_owned(), string(&upstream.placement)),
                        ]),
                        HashSet::from([uid("Citadel::Upstream", &upstream.name)]),
                    )
                    .map_err(|e| e.to_string())?,
                );
                id
            }
            Resource::AdminApi(area) => {
                let id = uid("Citadel::AdminApi", area);
                entities.push(Entity::with_uid(id.clone()));
                id
            }
            Resource::Role(role) => {
                let id = uid("Citadel::Role", role);
                entities.push(Entity::with_uid(id.clone()));
                id
            }
            Resource::Listener(name) => {
                let id = uid("Citadel::Listener", name);
                entities.push(Entity::with_uid(id.clone()));
                id
            }
        };
        let mut pairs = vec![
            (
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(facts.source_ip.to_string()),
            ),
            ("method".to_owned(), string(facts.method)),
            ("path".to_owned(), string(facts.path)),
            ("auth_method".to_owned(), string(facts.auth_method)),
            ("mfa".to_owned(), RestrictedExpression::new_bool(facts.mfa)),
            (
                "mfa_age_seconds".to_owned(),
                RestrictedExpression::new_long(facts.mfa_age_seconds),
            ),
            ("device_trust".to_owned(), string(facts.device_trust)),
            (
                "risk_score".to_owned(),
                RestrictedExpression::new_long(facts.verification.risk_score),
            ),
            (
                "network_changed".to_owned(),
                RestrictedExpression::new_bool(facts.verification.network_changed),
            ),
            (
                "travel_kmh".to_owned(),
                RestrictedExpression::new_long(facts.verification.travel_kmh),
            ),
            ("country".to_owned(), string(facts.verification.country)),
        ];
        if let Some(d) = data {
            let set =
                |items: &[String]| RestrictedExpression::new_set(items.iter().map(|i| string(i)));
            pairs.extend([
                ("data_class".to_owned(), string(&d.data_class)),
                ("data_classes".to_owned(), set(&d.data_classes)),
                ("data_types".to_owned(), set(&d.data_types)),
                (
                    "finding_count".to_owned(),
                    RestrictedExpression::new_long(d.finding_count),
                ),
                (
                    "redacted".to_owned(),
                    RestrictedExpression::new_bool(d.redacted),
                ),
            ]);
        }
        let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        match self.action_entities.get(action.cedar_id()) {
            Some(action_and_groups) => entities.extend(action_and_groups.iter().cloned()),
            None => return Err(format!("unknown action {}", action.cedar_id())),
        }
        let request = Request::new(
            principal_uid,
            uid("Citadel::Action", action.cedar_id()),
            resource_uid,
            context,
            None,
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &active.loaded.set, &entities);
        let mut allowed = response.decision() == CedarDecision::Allow;
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        if policies.is_empty() && !allowed {
            policies.push("default-deny".into());
        }
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            tracing::warn!(
                ?errors,
                action = action.cedar_id(),
                "policy evaluation errors"
            );
            // Cedar skips a policy that errors, even a forbid: a forbid that
            // could not be evaluated would let the request through. Fail
            // closed instead: it denies, as if it had held.
            let failed_forbids: Vec<String> = response
                .diagnostics()
                .errors()
                .map(|e| {
                    let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                    e.policy_id().clone()
                })
                .filter(|id| {
                    active
                        .loaded
                        .set
                        .policy(id)
                        .is_some_and(|p| p.effect() == cedar_policy::Effect::Forbid)
                })
                .map(|id| id.to_string())
                .collect();
            if !failed_forbids.is_empty() {
                if allowed {
                    policies.clear();
                }
                allowed = false;
                policies.extend(failed_forbids);
            }
        }
        let step_up = if allowed {
            None
        } else {
            step_up_of(&active.loaded.set, &policies)
        };
        Ok(Decision {
            allowed,
            policies,
            errors,
            step_up,
        })
    }
}
