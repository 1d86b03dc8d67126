//! Reading an identity provider's claims the same way for bearer JWTs and
//! OIDC browser sign-in: which Citadel roles its groups map to, and whether
//! it says a second factor was used.

use std::collections::BTreeMap;

use serde_json::Value;

/// Methods in `amr` (RFC 8176) that mean a second factor was proved.
const MFA_AMR: &[&str] = &["mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris"];

/// The Citadel roles the groups in `claim` map to through `role_map`
/// (sorted, without repeats). The claim may be an array of strings or a
/// space-separated string; groups not in the map grant nothing.
pub(crate) fn mapped_roles(
    claims: &Value,
    claim: &str,
    role_map: &BTreeMap<String, String>,
) -> Vec<String> {
    let groups: Vec<&str> = match &claims[claim] {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<String> = groups
        .iter()
        .filter_map(|g| role_map.get(*g).cloned())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Whether `amr` names a second factor.
pub(crate) fn second_factor(claims: &Value) -> bool {
    claims["amr"].as_array().is_some_and(|amr| {
        amr.iter()
            .filter_map(Value::as_str)
            .any(|m| MFA_AMR.contains(&m))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_roles_and_amr_tells_a_second_factor() {
        let map: BTreeMap<String, String> = [
            ("ml".into(), "developer".into()),
            ("sec".into(), "auditor".into()),
        ]
        .into();
        let claims = serde_json::json!({"groups": ["ml", "visitors", "ml"], "scope_groups": "sec ml", "amr": ["pwd", "hwk"]});
        assert_eq!(mapped_roles(&claims, "groups", &map), vec!["developer"]);
        assert_eq!(
            mapped_roles(&claims, "scope_groups", &map),
            vec!["auditor", "developer"]
        );
        assert!(mapped_roles(&claims, "missing", &map).is_empty());
        assert!(second_factor(&claims));
        assert!(!second_factor(&serde_json::json!({"amr": ["pwd"]})));
    }
}
