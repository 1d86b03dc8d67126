//! Reading and validating policy files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// File name.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

/// Everything wrong with a policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblems(pub Vec<PolicyProblem>);

impl std::fmt::Display for PolicyProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyProblems {}

/// A validated policy set and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicies {
    /// The policies, each with its id (`@id` annotation or `file:index`).
    pub set: PolicySet,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// `(policy id, file)` for every policy.
    pub origins: Vec<(String, String)>,
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

fn problem_from(file: &str, src: &str, diag: &dyn Diagnostic, message: String) -> PolicyProblem {
    let offset = diag
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = offset.map_or((0, 0), |o| line_col(src, o));
    let mut reason = message;
    if let Some(help) = diag.help() {
        reason.push_str(&format!(" ({help})"));
    }
    PolicyProblem {
        file: file.to_owned(),
        line,
        column,
        reason,
    }
}

/// The `*.cedar` files of a directory, sorted by name.
pub(crate) fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    Ok(files)
}

/// Parses every `*.cedar` file in `dir` and validates the whole set against
/// `schema`. Returns every problem found, not only the first.
pub fn load_policies(dir: &Path, schema: &Schema) -> Result<LoadedPolicies, PolicyProblems> {
    let dir_problem = |reason: String| {
        PolicyProblems(vec![PolicyProblem {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            reason,
        }])
    };
    let files = policy_files(dir).map_err(|e| dir_problem(format!("cannot read: {e}")))?;
    if files.is_empty() {
        return Err(dir_problem(
            "no *.cedar policy files; with no policy everything is denied".into(),
        ));
    }
    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    let mut origins = Vec::new();
    let mut sources: HashMap<String, (String, String)> = HashMap::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(PolicyProblem {
                    file: name,
                    line: 0,
                    column: 0,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let parsed = match PolicySet::from_str(&src) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors.iter() {
                    problems.push(problem_from(&name, &src, e, e.to_string()));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            problems.push(PolicyProblem {
                file: name.clone(),
                line: 0,
                column: 0,
                reason: "policy templates are not supported; write static policies".into(),
            });
        }
        for (index, policy) in parsed.policies().enumerate() {
            let id = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{name}:{index}"));
            let (line, column) = src
                .find(&format!("@id(\"{id}\")"))
                .map_or((0, 0), |offset| line_col(&src, offset));
            if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
                problems.push(PolicyProblem {
                    file: name.clone(),
                    line,
                    column,
                    reason: format!("policy id `{id}` is used twice: {e}"),
                });
                continue;
            }
            origins.push((id.clone(), name.clone()));
            sources.insert(id, (name.clone(), src.clone()));
        }
    }
    if problems.is_empty() {
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let (file, src) = sources
                .get(e.policy_id().to_string().as_str())
                .cloned()
                .unwrap_or_default();
            problems.push(problem_from(&file, &src, e, e.to_string()));
        }
        for w in result.validation_warnings() {
            tracing::warn!(warning = %w, "policy validation warning");
        }
    }
    if problems.is_empty() {
        Ok(LoadedPolicies {
            set,
            files,
            origins,
        })
    } else {
        Err(PolicyProblems(problems))
    }
}
