use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use citadel_core::{Principal, PrincipalKind};

use crate::*;

fn write_defaults(dir: &Path) {
    for (name, text) in DEFAULT_POLICIES {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn who(roles: &[&str]) -> Principal {
    Principal {
        id: "sa-1".into(),
        kind: PrincipalKind::ServiceAccount,
        name: "ci".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        credential: "api_key:1".into(),
    }
}

fn facts() -> RequestFacts<'static> {
    RequestFacts {
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        method: "POST",
        path: "/v1/chat/completions",
        auth_method: "api_key",
        mfa: false,
        mfa_age_seconds: i64::MAX,
        device_trust: "unknown",
        verification: Default::default(),
    }
}

fn upstream(placement: &str) -> UpstreamFacts {
    UpstreamFacts {
        name: "local".into(),
        kind: "openai".into(),
        placement: placement.into(),
    }
}

#[test]
fn schema_and_default_policies_validate() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert!(engine
        .policy_origins()
        .iter()
        .any(|(id, _)| id == "admin-all"));
}

#[test]
fn default_policies_grant_by_role_and_deny_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let up = upstream("on_prem");
    let model = Resource::Model {
        name: "llama",
        upstream: &up,
    };
    let d = engine.authorize(&who(&["developer"]), Action::InvokeModel, &model, &facts());
    assert!(d.allowed);
    assert_eq!(d.policies, vec!["developers-invoke-models"]);

    let d = engine.authorize(&who(&["auditor"]), Action::InvokeModel, &model, &facts());
    assert!(!d.allowed);
    assert_eq!(d.policies, vec!["default-deny"]);

    let keys = Resource::AdminApi("keys");
    assert!(
        engine
            .authorize(
                &who(&["auditor"]),
                Action::Admin("keys.list"),
                &keys,
                &facts()
            )
            .allowed
    );
    assert!(
        !engine
            .authorize(
                &who(&["auditor"]),
                Action::Admin("keys.create"),
                &keys,
                &facts()
            )
            .allowed
    );
    assert!(
        engine
            .authorize(
                &who(&["operator"]),
                Action::Admin("keys.create"),
                &keys,
                &facts()
            )
            .allowed
    );
    let roles = Resource::AdminApi("roles");
    assert!(
        !engine
            .authorize(
                &who(&["operator"]),
                Action::Admin("roles.create"),
                &roles,
                &facts()
            )
            .allowed
    );
    assert!(
        engine
            .authorize(
                &who(&["admin"]),
                Action::Admin("roles.create"),
                &roles,
                &facts()
            )
            .allowed
    );
    assert!(
        !engine
            .authorize(
                &who(&["developer"]),
                Action::Admin("keys.list"),
                &keys,
                &facts()
            )
            .allowed
    );
    assert!(
        !engine
            .authorize(&who(&[]), Action::InvokeModel, &model, &facts())
            .allowed
    );
}

#[test]
fn every_admin_operation_is_in_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    for op in ADMIN_OPERATIONS {
        let d = engine.authorize(
            &who(&["admin"]),
            Action::Admin(op),
            &Resource::AdminApi("x"),
            &facts(),
        );
        assert!(d.allowed && d.errors.is_empty(), "{op}: {d:?}");
    }
}

#[test]
fn placement_conditions_and_forbid_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"
@id("on-prem-only")
permit (principal in Citadel::Role::"developer", action == Citadel::Action::"invoke_model", resource)
when { resource.placement == "on_prem" };

@id("no-lan")
forbid (principal, action, resource) when { context.source_ip.isInRange(ip("10.0.0.0/8")) };
"#,
    )
    .unwrap();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let dev = who(&["developer"]);
    let (on, ext) = (upstream("on_prem"), upstream("external"));
    let on_prem = Resource::Model {
        name: "m",
        upstream: &on,
    };
    let external = Resource::Model {
        name: "m",
        upstream: &ext,
    };
    assert!(
        engine
            .authorize(&dev, Action::InvokeModel, &on_prem, &facts())
            .allowed
    );
    assert!(
        !engine
            .authorize(&dev, Action::InvokeModel, &external, &facts())
            .allowed
    );
    let lan = RequestFacts {
        source_ip: "10.1.2.3".parse().unwrap(),
        ..facts()
    };
    let d = engine.authorize(&dev, Action::InvokeModel, &on_prem, &lan);
    assert!(!d.allowed);
    assert_eq!(d.policies, vec!["no-lan"]);
}

#[test]
fn syntax_errors_report_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "// first line\npermit (principal, action, resource)\nwhen { principal.name == };\n",
    )
    .unwrap();
    let problems = PolicyEngine::load(dir.path()).unwrap_err();
    let p = &problems.0[0];
    assert_eq!(p.file, "bad.cedar");
    assert_eq!(p.line, 3, "{problems}");
    assert!(p.column > 0);
}

#[test]
fn schema_violations_report_the_policy_position() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    std::fs::write(
        dir.path().join("typo.cedar"),
        "\n\n@id(\"typo\")\npermit (principal in Citadel::Role::\"developer\", action == Citadel::Action::\"invoke_modle\", resource);\n",
    )
    .unwrap();
    let problems = PolicyEngine::load(dir.path()).unwrap_err();
    let text = problems.to_string();
    assert!(text.starts_with("typo.cedar:4:"), "{text}");
    assert!(text.contains("invoke_modle"), "{text}");
}

#[test]
fn duplicate_ids_and_empty_dirs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(PolicyEngine::load(dir.path()).is_err());
    std::fs::write(
        dir.path().join("a.cedar"),
        "@id(\"x\")\npermit (principal, action, resource);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.cedar"),
        "\n@id(\"x\")\nforbid (principal, action, resource);",
    )
    .unwrap();
    let problems = PolicyEngine::load(dir.path()).unwrap_err();
    assert_eq!(problems.0[0].file, "b.cedar");
    assert_eq!(problems.0[0].line, 2);
}

#[test]
fn failed_reload_keeps_the_set_in_force() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let up = upstream("on_prem");
    let model = Resource::Model {
        name: "m",
        upstream: &up,
    };
    let dev = who(&["developer"]);
    assert!(
        engine
            .authorize(&dev, Action::InvokeModel, &model, &facts())
            .allowed
    );

    std::fs::write(
        dir.path().join("gateway.cedar"),
        "permit (principal action resource);",
    )
    .unwrap();
    assert!(engine.changed_on_disk());
    assert!(engine.reload().is_err());
    assert!(
        engine
            .authorize(&dev, Action::InvokeModel, &model, &facts())
            .allowed
    );

    std::fs::write(
        dir.path().join("gateway.cedar"),
        "@id(\"nobody\")\nforbid (principal, action == Citadel::Action::\"invoke_model\", resource);",
    )
    .unwrap();
    engine.reload().unwrap();
    let d = engine.authorize(&dev, Action::InvokeModel, &model, &facts());
    assert!(!d.allowed);
    assert_eq!(d.policies, vec!["nobody"]);
}

#[test]
fn only_admins_grant_the_privileged_roles() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let grant = |roles: &[&str], role: &str| {
        engine
            .authorize(
                &who(roles),
                Action::GrantRole,
                &Resource::Role(role),
                &facts(),
            )
            .allowed
    };
    assert!(grant(&["operator"], "developer"));
    assert!(grant(&["operator"], "service"));
    assert!(!grant(&["operator"], "admin"));
    assert!(!grant(&["operator"], "operator"));
    assert!(grant(&["admin"], "admin"));
    assert!(!grant(&["auditor"], "developer"));
    assert!(!grant(&["developer"], "developer"));
}

#[test]
fn default_policies_require_a_second_factor_of_admins_and_operators_at_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let person = |roles: &[&str]| Principal {
        kind: PrincipalKind::User,
        id: "u-1".into(),
        credential: "password".into(),
        ..who(roles)
    };
    let signing_in = |mfa| RequestFacts {
        method: "POST",
        path: "/auth/login",
        auth_method: "password",
        mfa,
        mfa_age_seconds: if mfa { 0 } else { i64::MAX },
        ..facts()
    };
    let gateway = Resource::Listener("gateway");
    for (roles, without, with) in [
        (&["developer"][..], true, true),
        (&["admin"][..], false, true),
        (&["operator", "developer"][..], false, true),
        (&["auditor"][..], true, true),
    ] {
        let d = engine.authorize(&person(roles), Action::SignIn, &gateway, &signing_in(false));
        assert_eq!(d.allowed, without, "{roles:?} without MFA: {d:?}");
        let d = engine.authorize(&person(roles), Action::SignIn, &gateway, &signing_in(true));
        assert_eq!(d.allowed, with, "{roles:?} with MFA: {d:?}");
    }
    let d = engine.authorize(
        &person(&["admin"]),
        Action::SignIn,
        &gateway,
        &signing_in(false),
    );
    assert_eq!(d.policies, vec!["mfa-for-privileged-roles"]);
}

#[test]
fn a_denial_by_step_up_policies_names_the_factor_and_the_shortest_max_age() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    std::fs::write(
        dir.path().join("step-up.cedar"),
        r#"
@id("fresh-mfa-for-external")
@step_up("mfa")
@max_age("900")
forbid (principal, action == Citadel::Action::"invoke_model", resource)
when { resource.placement == "external" }
unless { context.mfa && context.mfa_age_seconds < 900 };

@id("fresher-for-big")
@step_up("mfa")
@max_age("60")
forbid (principal, action == Citadel::Action::"invoke_model", resource == Citadel::Model::"big")
unless { context.mfa && context.mfa_age_seconds < 60 };

@id("plain-forbid")
forbid (principal, action == Citadel::Action::"invoke_model", resource == Citadel::Model::"never");
"#,
    )
    .unwrap();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let dev = who(&["developer"]);
    let ext = upstream("external");
    let model = |name| Resource::Model {
        name,
        upstream: &ext,
    };
    let d = engine.authorize(&dev, Action::InvokeModel, &model("small"), &facts());
    assert!(!d.allowed);
    assert_eq!(
        d.step_up,
        Some(StepUp {
            acr: "mfa".into(),
            max_age: Some(900)
        })
    );
    let d = engine.authorize(&dev, Action::InvokeModel, &model("big"), &facts());
    assert_eq!(
        d.step_up.as_ref().map(|s| s.max_age),
        Some(Some(60)),
        "{d:?}"
    );
    let fresh = RequestFacts {
        mfa: true,
        mfa_age_seconds: 30,
        ..facts()
    };
    assert!(
        engine
            .authorize(&dev, Action::InvokeModel, &model("big"), &fresh)
            .allowed
    );
    let stale = RequestFacts {
        mfa: true,
        mfa_age_seconds: 120,
        ..facts()
    };
    let d = engine.authorize(&dev, Action::InvokeModel, &model("big"), &stale);
    assert_eq!(
        d.step_up.as_ref().map(|s| s.max_age),
        Some(Some(60)),
        "{d:?}"
    );
    // A forbid with no step-up annotation: nothing would help, plain 403.
    let d = engine.authorize(&dev, Action::InvokeModel, &model("never"), &fresh);
    assert!(!d.allowed && d.step_up.is_none());
}

#[test]
fn a_forbid_that_errors_at_evaluation_denies_instead_of_being_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    std::fs::write(
        dir.path().join("overflow.cedar"),
        r#"
@id("overflowing-forbid")
forbid (principal, action == Citadel::Action::"invoke_model", resource == Citadel::Model::"overflow")
when { context.mfa_age_seconds + 1 > 0 };
"#,
    )
    .unwrap();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let ext = upstream("on_prem");
    let model = Resource::Model {
        name: "overflow",
        upstream: &ext,
    };
    // mfa_age_seconds is i64::MAX without a second factor: `+ 1` overflows.
    let d = engine.authorize(&who(&["developer"]), Action::InvokeModel, &model, &facts());
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policies, vec!["overflowing-forbid"]);
    assert!(!d.errors.is_empty());
    // With a small age it evaluates, holds, and forbids too.
    let fresh = RequestFacts {
        mfa: true,
        mfa_age_seconds: 5,
        ..facts()
    };
    let d = engine.authorize(&who(&["developer"]), Action::InvokeModel, &model, &fresh);
    assert!(!d.allowed && d.errors.is_empty());
}

#[test]
fn default_privacy_policy_keeps_restricted_data_in_and_redacts_personal_data_for_external_models() {
    let dir = tempfile::tempdir().unwrap();
    write_defaults(dir.path());
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let data = |class: &str, redacted: bool| DataFacts {
        data_class: class.into(),
        data_classes: vec![class.into()],
        data_types: vec!["EMAIL_ADDRESS".into()],
        finding_count: 1,
        redacted,
    };
    let ask = |placement: &str, d: &DataFacts| {
        let up = upstream(placement);
        let model = Resource::Model {
            name: "gpt",
            upstream: &up,
        };
        engine.authorize_data(&who(&["developer"]), Action::SendData, &model, &facts(), d)
    };
    assert!(ask("on_prem", &data("restricted", false)).allowed);
    assert!(ask("external", &data("public", false)).allowed);
    let d = ask("external", &data("confidential", false));
    assert!(!d.allowed);
    assert_eq!(
        d.policies,
        ["confidential-data-is-redacted-for-external-models"]
    );
    assert!(ask("external", &data("confidential", true)).allowed);
    let d = ask("external", &data("restricted", true));
    assert!(!d.allowed);
    assert_eq!(d.policies, ["restricted-data-stays-on-premises"]);
    // Routes carry their upstream's placement too.
    let up = upstream("external");
    let route = Resource::Route {
        prefix: "/data",
        upstream: &up,
    };
    assert!(
        !engine
            .authorize_data(
                &who(&["developer"]),
                Action::SendData,
                &route,
                &facts(),
                &data("restricted", false)
            )
            .allowed
    );
}
