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
    let mut found = offenders("crate::http", |f| !f.starts_with("src/ops/"));
    found.extend(offenders("crate::cli", |f| !f.starts_with("src/ops/")));
    assert!(
        found.is_empty(),
        "ops/ reaches a door:\n{}",
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
