//! The `recept` command line: bad configuration and unreachable databases
//! give one clear message, never a panic.

use std::net::TcpListener;
use std::process::{Command, Output};

use reqwest::Method;

use crate::helpers::{fresh_database, spawn_app_on, test_settings};

fn recept(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recept"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("RECEPT__") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("recept runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_refused(output: &Output, mentions: &str) {
    let text = stderr(output);
    assert!(!output.status.success(), "expected failure, got: {text}");
    assert!(text.contains(mentions), "`{mentions}` not in: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

const VALID: [(&str, &str); 3] = [
    (
        "RECEPT__CLUSTERS__MAIN__URL",
        "postgres://recept@127.0.0.1:1/recept",
    ),
    ("RECEPT__ADMIN__TOKEN", "0123456789abcdef0123"),
    (
        "RECEPT__CLINIC__KEY_SECRET",
        "0123456789abcdef0123456789abcdef",
    ),
];

/// The settings a command needs to run against `db_url`.
fn on_database(db_url: &str) -> [(&'static str, &str); 3] {
    [
        ("RECEPT__CLUSTERS__MAIN__URL", db_url),
        ("RECEPT__ADMIN__TOKEN", "0123456789abcdef0123"),
        (
            "RECEPT__CLINIC__KEY_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
    ]
}

#[test]
fn bad_configuration_names_the_key() {
    let with = |extra: (&'static str, &'static str)| {
        let mut env = VALID.to_vec();
        env.push(extra);
        recept(&["check-config"], &env)
    };

    let valid = recept(&["check-config"], &VALID);
    assert!(valid.status.success());
    let printed = String::from_utf8_lossy(&valid.stdout);
    assert!(
        printed.contains(
            "clinic connections by worker (server.workers 2): 32 + 32, of which in use at once: 8 + 8"
        ),
        "{printed}"
    );
    assert_refused(
        &with(("RECEPT__CLINIC__POOL_SIZE", "0")),
        "clinic.pool_size",
    );
    assert_refused(
        &with(("RECEPT__CLINIC__POOL_SIZE", "1")),
        "must be at least server.workers (2)",
    );
    assert_refused(&with(("RECEPT__CLINIC__POOL_SIZE", "many")), "pool_size");
    assert_refused(
        &with(("RECEPT__CONTROL__CLUSTER", "elsewhere")),
        "control.cluster",
    );
    assert_refused(
        &with(("RECEPT__SERVER__CLINIC_LISTEN", "nowhere")),
        "server.clinic_listen",
    );
    assert_refused(&with(("RECEPT__ADMIN__TOKEN", "short")), "admin.token");
    assert_refused(
        &with(("RECEPT__CLUSTERS__MAIN__URL", "mysql://x")),
        "clusters.main.url",
    );
    assert_refused(&recept(&["check-config"], &VALID[1..]), "clusters");
}

#[test]
fn a_bad_configuration_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recept.toml");
    std::fs::write(&file, "[clinic]\npool_sise = 4\n").unwrap();

    let typo = recept(
        &["check-config", "--config", file.to_str().unwrap()],
        &VALID,
    );
    let missing = recept(
        &["check-config", "--config", "/nonexistent/recept.toml"],
        &VALID,
    );

    assert_refused(&typo, "pool_sise");
    assert_refused(&missing, "/nonexistent/recept.toml");
}

#[test]
fn serving_against_an_unreachable_database_says_which_cluster() {
    let output = recept(&["serve"], &VALID);
    assert_refused(&output, "cannot reach the control cluster `main`");
}

#[tokio::test]
async fn an_address_in_use_is_named() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let db_url = fresh_database().await;

    let output = recept(
        &["serve"],
        &[
            ("RECEPT__CLUSTERS__MAIN__URL", &db_url),
            ("RECEPT__ADMIN__TOKEN", "0123456789abcdef0123"),
            (
                "RECEPT__CLINIC__KEY_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
            ("RECEPT__SERVER__CLINIC_LISTEN", &address),
            ("RECEPT__SERVER__ADMIN_LISTEN", "127.0.0.1:0"),
        ],
    );

    assert_refused(&output, "already in use");
    assert_refused(&output, "server.clinic_listen");
}

#[tokio::test]
async fn a_tenant_created_on_the_command_line_is_served() {
    let db_url = fresh_database().await;
    let token = "0123456789abcdef0123";
    let env = [
        ("RECEPT__CLUSTERS__MAIN__URL", db_url.as_str()),
        ("RECEPT__ADMIN__TOKEN", token),
        (
            "RECEPT__CLINIC__KEY_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
    ];

    let created = recept(
        &["tenants", "create", "cli_clinic", "--name", "CLI Clinic"],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let bad = recept(&["tenants", "create", "Bad-Slug", "--name", "x"], &env);
    assert_refused(&bad, "slug `Bad-Slug`");
    let duplicate = recept(
        &["tenants", "create", "cli_clinic", "--name", "again"],
        &env,
    );
    assert_refused(&duplicate, "already exists");
    let key = recept(&["tenants", "issue-key", "cli_clinic"], &env);
    assert!(key.status.success(), "{}", stderr(&key));
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let listed = recept(&["tenants", "list"], &env);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("cli_clinic"));

    let mut settings = test_settings(&db_url);
    settings.clinic.key_secret = "0123456789abcdef0123456789abcdef".into();
    let app = spawn_app_on(settings).await;
    let seen: serde_json::Value = app
        .clinic_request(Method::GET, "/v1/tenant", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["name"], "CLI Clinic");
    assert_eq!(seen["schema"], "t_cli_clinic");
}

#[tokio::test]
async fn a_tenant_exported_on_the_command_line_is_imported_under_another_slug() {
    let db_url = fresh_database().await;
    let env = on_database(&db_url);
    let created = recept(
        &["tenants", "create", "cli_source", "--name", "Source"],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cli_source.export");
    let file = file.to_str().unwrap();

    let exported = recept(&["tenants", "export", "cli_source", "--out", file], &env);
    let imported = recept(&["tenants", "import", file, "--as", "cli_copy"], &env);
    let again = recept(&["tenants", "import", file, "--as", "cli_copy"], &env);
    let missing = recept(&["tenants", "export", "cli_nobody"], &env);

    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(stderr(&exported).contains("exported cli_source"));
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(String::from_utf8_lossy(&imported.stdout).contains("imported cli_copy on main"));
    assert_refused(&again, "already exists");
    assert_refused(&missing, "no tenant `cli_nobody`");
}

#[tokio::test]
async fn every_command_line_write_is_audited_and_a_deleted_tenant_gets_no_key() {
    let db_url = fresh_database().await;
    let env = on_database(&db_url);
    let release = concat!(env!("CARGO_MANIFEST_DIR"), "/tenants/master/2026-04.csv");
    let ok = |args: &[&str]| {
        let output = recept(args, &env);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    ok(&["tenants", "create", "cli_audit", "--name", "Audited"]);
    ok(&["master", "import", release, "--version", "2026-04"]);
    ok(&["master", "rollout", "2026-04", "--tenant", "cli_audit"]);
    ok(&["tenants", "issue-key", "cli_audit", "--label", "desk"]);
    ok(&["tenants", "suspend", "cli_audit"]);
    ok(&["tenants", "resume", "cli_audit"]);
    let client = crate::helpers::connect(&db_url).await;
    let key_id: uuid::Uuid = client
        .query_one("SELECT id FROM recept.api_keys", &[])
        .await
        .unwrap()
        .get(0);
    ok(&["tenants", "revoke-key", "cli_audit", &key_id.to_string()]);
    ok(&["tenants", "delete", "cli_audit"]);
    let refused = recept(&["tenants", "issue-key", "cli_audit"], &env);
    let again = recept(
        &["tenants", "revoke-key", "cli_audit", &key_id.to_string()],
        &env,
    );

    assert_refused(&refused, "tenant `cli_audit` is deleted");
    assert_refused(&again, "has no live key");
    let keys: i64 = client
        .query_one("SELECT count(*) FROM recept.api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 1, "the deleted tenant got a key");
    let audited: Vec<(String, String, Option<String>)> = client
        .query(
            "SELECT action, actor, target FROM recept.audit_log ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let actions: Vec<&str> = audited.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "master.import",
            "master.rollout",
            "key.issue",
            "tenant.suspend",
            "tenant.resume",
            "key.revoke",
            "tenant.delete",
        ]
    );
    for (action, actor, target) in &audited {
        assert!(actor.ends_with("(command line)"), "{action}: {actor}");
        assert!(!actor.starts_with(" "), "{action}: {actor}");
        let expected = if action.starts_with("master.") {
            "2026-04"
        } else {
            "cli_audit"
        };
        assert_eq!(target.as_deref(), Some(expected), "{action}");
    }
}
