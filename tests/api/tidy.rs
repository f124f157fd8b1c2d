//! ARCHITECTURE.md's invariants about what may know what, checked over the
//! source text (in the manner of rust-analyzer's tidy tests): a line of
//! code, comments aside, that breaks one fails here with its file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, relative to the crate root.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

/// `(file, line number, line)` of the code lines (not comments) that
/// contain `needle`, in files for which `allowed` is false.
fn offenders(needle: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in sources() {
        let name = file.to_string_lossy().replace('\\', "/");
        if allowed(&name) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(needle) {
                found.push(format!("{name}:{}: {}", n + 1, code));
            }
        }
    }
    found
}

#[test]
fn only_http_and_startup_know_actix() {
    let found = offenders("actix", |f| {
        f.starts_with("src/http/") || f == "src/startup.rs"
    });
    assert!(
        found.is_empty(),
        "actix outside http/ and startup.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_cli_knows_clap() {
    let found = offenders("clap", |f| f.starts_with("src/cli/"));
    assert!(found.is_empty(), "clap outside cli/:\n{}", found.join("\n"));
}

#[test]
fn operations_know_neither_http_nor_the_command_line() {
    let use_case = |f: &str| f.starts_with("src/ops/") || f.starts_with("src/clinic/");
    let mut found = offenders("crate::http", |f| !use_case(f));
    found.extend(offenders("crate::cli", |f| !use_case(f)));
    assert!(
        found.is_empty(),
        "ops/ or clinic/ reaches a door:\n{}",
        found.join("\n")
    );
}

#[test]
fn clinic_operations_hold_no_sql_text() {
    let mut found = Vec::new();
    for statement in ["SELECT ", "INSERT ", "UPDATE ", "DELETE "] {
        found.extend(offenders(statement, |f| !f.starts_with("src/clinic/")));
    }
    assert!(
        found.is_empty(),
        "SQL in clinic/ (it belongs in db/):\n{}",
        found.join("\n")
    );
}

#[test]
fn tenant_statements_never_ask_the_database_for_the_time_or_the_schema() {
    // Evaluated where a statement runs (on Citus, a worker whose session
    // knows nothing of the search path), and refused by Citus in upserts,
    // RETURNING and CASE on distributed tables: times are parameters, the
    // schema is the registry's.
    let tenant_sql = |f: &str| !(f.starts_with("src/db/") || f.starts_with("src/clinic/"));
    let mut found = Vec::new();
    // (`Utc::now()` in Rust is the right way, and matches neither.)
    for call in [
        " now()",
        "(now()",
        "current_timestamp",
        "current_schema",
        "clock_timestamp",
    ] {
        found.extend(offenders(call, tenant_sql));
    }
    assert!(
        found.is_empty(),
        "a database clock or schema in tenant SQL:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_schema_is_selected_only_where_architecture_md_says() {
    let allowed = [
        "src/pools/tenant_conn.rs",
        "src/migrate/mod.rs",
        "src/master/rollout.rs",
    ];
    let found = offenders("set_config('search_path'", |f| allowed.contains(&f));
    assert!(
        found.is_empty(),
        "a schema selected elsewhere:\n{}",
        found.join("\n")
    );
    let found = offenders("SET search_path", |_| false);
    assert!(
        found.is_empty(),
        "a session-level SET:\n{}",
        found.join("\n")
    );
}

#[test]
fn failure_statuses_are_chosen_only_in_api_error() {
    // Handlers name their success (`OK`, `CREATED`) and a replay restores
    // a stored one; every refusal and failure comes from `ApiError`.
    let found: Vec<String> = offenders("StatusCode::", |f| f == "src/http/error.rs")
        .into_iter()
        .filter(|line| {
            let rest = line
                .replace("StatusCode::OK", "")
                .replace("StatusCode::CREATED", "");
            let rest = rest.replace("StatusCode::from_u16", "");
            rest.contains("StatusCode::")
        })
        .collect();
    assert!(
        found.is_empty(),
        "a failure status chosen outside ApiError:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_thread_local_state() {
    let found = offenders("thread_local!", |_| false);
    assert!(
        found.is_empty(),
        "thread-local state:\n{}",
        found.join("\n")
    );
}

/// The module path of a source file: `src/db/claims.rs` is `db::claims`,
/// `src/db/mod.rs` is `db`, `src/lib.rs` is empty.
fn module_of(file: &str) -> Vec<String> {
    let path = file.trim_start_matches("src/").trim_end_matches(".rs");
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The module paths a line of code names through `crate::` or `super::`
/// (grouped imports such as `use crate::{db, pools::Tx}` included), for a
/// line in the module `at`.
fn paths_named(line: &str, at: &[String]) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect()
    };
    let mut found = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        // `super` of `db::claims` (`db/claims.rs`) and of `db` (`db/mod.rs`)
        // alike is the module one up.
        ("super::", at[..at.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = line;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let heads: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(str::trim).collect()
            } else {
                vec![rest]
            };
            for head in heads {
                let mut path = base.clone();
                path.extend(ident(head));
                if !path.is_empty() {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Edges `from → to` between the modules at `depth` (1: the crate's
/// top-level modules; 2: the files of one top-level module) with their
/// first witness line.
fn module_edges(depth: usize) -> std::collections::BTreeMap<(String, String), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut edges = std::collections::BTreeMap::new();
    for file in sources() {
        let name = file.to_string_lossy().replace('\\', "/");
        let at = module_of(&name);
        if at.len() < depth {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for target in paths_named(code, &at) {
                if target.len() < depth || target[..depth - 1] != at[..depth - 1] {
                    continue;
                }
                // Only modules with a file of their own (`super::f` from an
                // inline test module names a function, not a module).
                let path = target[..depth].join("/");
                let src = root.join("src");
                if !src.join(format!("{path}.rs")).exists()
                    && !src.join(&path).join("mod.rs").exists()
                {
                    continue;
                }
                let (from, to) = (at[..depth].join("::"), target[..depth].join("::"));
                if from != to {
                    edges
                        .entry((from, to))
                        .or_insert_with(|| format!("{name}:{}: {code}", n + 1));
                }
            }
        }
    }
    edges
}

/// A cycle among `edges`, as the witness lines that make it, if any.
fn a_cycle(edges: &std::collections::BTreeMap<(String, String), String>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &std::collections::BTreeMap<(String, String), String>,
        stack: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[start..].to_vec();
            cycle.push(node.to_string());
            return Some(
                cycle
                    .windows(2)
                    .map(|w| edges[&(w[0].clone(), w[1].clone())].clone())
                    .collect(),
            );
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        stack.push(node.to_string());
        for ((from, to), _) in edges.iter() {
            if from == node {
                if let Some(cycle) = visit(to, edges, stack, done) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for (from, _) in edges.keys() {
        if let Some(cycle) = visit(from, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it() {
    for depth in [1, 2] {
        let edges = module_edges(depth);
        assert!(
            !edges.is_empty(),
            "the module graph at depth {depth} was not read"
        );
        if let Some(cycle) = a_cycle(&edges) {
            panic!("a circle of imports:\n{}", cycle.join("\n"));
        }
    }
}

#[test]
fn billing_imports_nothing_else_of_recept() {
    let edges = module_edges(1);
    let found: Vec<&String> = edges
        .iter()
        .filter(|((from, _), _)| from == "billing")
        .map(|(_, witness)| witness)
        .collect();
    assert!(
        found.is_empty(),
        "billing imports other modules:\n{}",
        found
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_module_graph_reader_sees_a_known_edge_and_a_planted_circle() {
    // The reader itself, on lines it must understand.
    let at = vec!["db".to_string(), "claims".to_string()];
    assert_eq!(
        paths_named("use crate::{pools::Tx, billing};", &at),
        vec![vec!["pools".to_string()], vec!["billing".to_string()]]
    );
    assert_eq!(
        paths_named("use super::encounters::Encounter;", &at),
        vec![vec!["db".to_string(), "encounters".to_string()]]
    );
    let mut edges = std::collections::BTreeMap::new();
    edges.insert(("a".to_string(), "b".to_string()), "a uses b".to_string());
    edges.insert(("b".to_string(), "a".to_string()), "b uses a".to_string());
    assert!(a_cycle(&edges).is_some());
    edges.remove(&("b".to_string(), "a".to_string()));
    assert!(a_cycle(&edges).is_none());
}

/// ARCHITECTURE.md's layers, lowest first: a module imports only modules
/// of its own layer or lower ones.
const LAYERS: &[&[&str]] = &[
    &["billing", "names", "config", "memory", "walk", "uke"],
    &["pools", "audit", "telemetry"],
    &["db", "migrate"],
    &["master", "tenancy"],
    &["clinic", "ops"],
    &["metrics", "http", "cli", "startup", "dev"],
];

#[test]
fn no_module_imports_one_above_it() {
    let layer = |module: &str| {
        LAYERS
            .iter()
            .position(|l| l.contains(&module))
            .unwrap_or_else(|| panic!("module {module} is in no layer of ARCHITECTURE.md"))
    };
    let found: Vec<String> = module_edges(1)
        .into_iter()
        .filter(|((from, to), _)| layer(from) < layer(to))
        .map(|((from, to), witness)| format!("{from} → {to}: {witness}"))
        .collect();
    assert!(
        found.is_empty(),
        "imports of a higher layer:\n{}",
        found.join("\n")
    );
}
