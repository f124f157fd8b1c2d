//! Many tenants: a single-patient read spread over 1,000 tenants, through
//! recept and, for PostgreSQL's own limit, through pgbench issuing the same
//! SQL (schema selection included, pipelined) on as many connections.

use crate::out;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use recept::pools::Role;
use recept::tenancy::{Registry, Slug};

use crate::lean::closed;
use crate::stack::Stack;
use crate::stats::Latencies;

#[derive(Args, Clone)]
pub struct Options {
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Clients (recept) and connections (pgbench).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// recept's clinic connections (`clinic.pool_size`; default: recept's
    /// own); at most `--connections` of them run a query at once
    /// (`clinic.max_active`).
    #[arg(long)]
    pool: Option<usize>,
    /// Length of each window, recept's or pgbench's.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of a recept window then a pgbench window, so that the host's
    /// drift weighs on both sides of each ratio.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// How tenants are drawn for each request, by recept's clients and by
    /// pgbench alike: `uniform`, or `zipf` (the tenant of rank k with
    /// weight 1/k^s, as real clinics differ in size).
    #[arg(long, value_enum, default_value_t = Draw::Uniform)]
    draw: Draw,
    /// The Zipf exponent s (pgbench's `random_zipfian` takes 1.001 to 1000).
    #[arg(long, default_value_t = 1.1)]
    zipf_s: f64,
    /// recept's `clinic.connection_max_schemas` (default: recept's own).
    #[arg(long)]
    max_schemas: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Draw {
    Uniform,
    Zipf,
}

/// The tenants requests go to, in order: every tenant once in a stride
/// (consecutive requests far apart), or 200,000 Zipf draws from a fixed
/// seed (tenant 0 the most frequent).
fn tenant_sequence(o: &Options) -> Vec<usize> {
    match o.draw {
        Draw::Uniform => (0..o.tenants).map(|n| n * 7919 % o.tenants).collect(),
        Draw::Zipf => {
            use rand::{Rng, SeedableRng};
            let mut cumulative = Vec::with_capacity(o.tenants);
            let mut total = 0.0;
            for k in 1..=o.tenants {
                total += 1.0 / (k as f64).powf(o.zipf_s);
                cumulative.push(total);
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
            (0..200_000)
                .map(|_| {
                    let x = rng.gen::<f64>() * total;
                    cumulative.partition_point(|&c| c < x).min(o.tenants - 1)
                })
                .collect()
        }
    }
}

/// pgbench's expression for the same draw, as `:t`.
fn pgbench_draw(o: &Options) -> String {
    match o.draw {
        Draw::Uniform => format!("random(0, {})", o.tenants - 1),
        Draw::Zipf => format!("random_zipfian(1, {}, {}) - 1", o.tenants, o.zipf_s),
    }
}

fn patient_id(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|s| {
        // As many queries running at once as pgbench's connections; the
        // connections are recept's own (`clinic.pool_size`).
        s.clinic.max_active = o.connections;
        if let Some(pool) = o.pool {
            s.clinic.pool_size = pool;
        }
        s.clinic.tenant_max_in_flight = o.connections;
        s.server.workers = 2;
        if let Some(max) = o.max_schemas {
            s.clinic.connection_max_schemas = max;
        }
    })
    .await?;
    let pools = stack.pools.clone();
    crate::stack::import_sample_release(&pools).await?;
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("clinic_{i:05}")).expect("a valid slug"))
        .collect();
    let started = Instant::now();
    crate::stack::create_tenants(&pools, &slugs, "2026-04", 2).await?;
    // One patient per tenant with a known id, and a key per tenant.
    let mut keys = Vec::with_capacity(o.tenants);
    {
        let control = pools.control(Role::Admin).await?;
        let writer = pools.get("main", Role::Migration).await?;
        for (i, slug) in slugs.iter().enumerate() {
            let s = recept::names::quote_ident(&slug.schema_name());
            writer
                .batch_execute(&format!(
                    "INSERT INTO {s}.patients (id, name, name_kana, birth_date, sex) VALUES \
                     ('{}', '負荷 太郎', 'フカ タロウ', '1970-01-01', 'male'); \
                     INSERT INTO {s}.insurances (id, patient_id, insurer_number, copay_rate, valid_from) \
                     VALUES (gen_random_uuid(), '{}', '06132013', 30, '2020-01-01')",
                    patient_id(i),
                    patient_id(i)
                ))
                .await?;
            let tenant = Registry::find(&control, slug).await?.expect("created");
            let key = stack.keys.issue();
            Registry::insert_key(&control, tenant.id, &key, Some("load")).await?;
            keys.push(key.secret);
        }
    }
    out!(
        "recept-load many-tenants: {} tenants drawn {}, {} connections; set-up {:.1}s",
        o.tenants,
        match o.draw {
            Draw::Uniform => "uniformly".to_string(),
            Draw::Zipf => format!("from a Zipf distribution (s = {})", o.zipf_s),
        },
        o.connections,
        started.elapsed().as_secs_f64()
    );
    let sequence = tenant_sequence(&o);
    let draw = pgbench_draw(&o);
    let paths: Arc<Vec<(String, String)>> = Arc::new(
        sequence
            .iter()
            .map(|&i| (keys[i].clone(), format!("/v1/patients/{}", patient_id(i))))
            .collect(),
    );
    let duration = Duration::from_secs(o.seconds);

    // Warm recept's path (each connection's catalog cache meets every
    // tenant's schema; pgbench's connections start cold in each window, as
    // a fresh server's would), then alternate recept and pgbench windows.
    closed(
        &stack.clinic,
        &paths,
        o.connections,
        Duration::from_secs(10),
    )
    .await;
    let (recept_rps, pgbench_tps, latencies) = alternate(
        "GET",
        o.rounds,
        async || closed(&stack.clinic, &paths, o.connections, duration).await,
        || pgbench(&stack, &read_script(&draw), o.connections, o.seconds),
    )
    .await?;
    out!(
        "recept GET /v1/patients/{{id}}: {recept_rps:.0} req/s on average, {}",
        latencies.summary()
    );
    crate::report::latencies("recept GET /v1/patients/{id}", &latencies);
    let backends = backend_memory(&stack.database_url).await?;
    out!("pgbench, the same SQL pipelined: {pgbench_tps:.0} tps on average");
    out!("recept / pgbench: {:.2}", recept_rps / pgbench_tps.max(1.0));
    crate::report::figure("GET recept req/s", recept_rps);
    crate::report::figure("GET pgbench tps", pgbench_tps);
    crate::report::figure("GET recept / pgbench", recept_rps / pgbench_tps.max(1.0));

    // The same for entering a five-line encounter.
    let visits: Arc<Vec<(String, String)>> = Arc::new(
        sequence
            .iter()
            .map(|&i| (keys[i].clone(), patient_id(i)))
            .collect(),
    );
    post_encounters(
        &stack.clinic,
        &visits,
        o.connections,
        Duration::from_secs(3),
    )
    .await;
    let (post_rps, post_tps, post_latencies) = alternate(
        "POST",
        o.rounds,
        async || post_encounters(&stack.clinic, &visits, o.connections, duration).await,
        || pgbench(&stack, &write_script(&draw), o.connections, o.seconds),
    )
    .await?;
    out!(
        "recept POST /v1/encounters (5 lines): {post_rps:.0} req/s on average, {}",
        post_latencies.summary()
    );
    crate::report::latencies("recept POST /v1/encounters", &post_latencies);
    out!("pgbench, the same SQL (four round trips, as recept): {post_tps:.0} tps on average");
    out!("recept / pgbench: {:.2}", post_rps / post_tps.max(1.0));
    crate::report::figure("POST recept req/s", post_rps);
    crate::report::figure("POST pgbench tps", post_tps);
    crate::report::figure("POST recept / pgbench", post_rps / post_tps.max(1.0));
    out!("{backends}");
    for pool in stack.pools.status() {
        if let (Some(a), Some(schemas)) = (pool.affinity, pool.schemas_per_connection) {
            let all = (a.home + a.warm + a.cold).max(1) as f64;
            out!(
                "clinic requests served at home {:.1} %, on a connection warm to the schema {:.1} %, cold {:.1} %; \
                 schemas per open connection: mean {:.0}, max {}; connections retired {}",
                100.0 * a.home as f64 / all,
                100.0 * a.warm as f64 / all,
                100.0 * a.cold as f64 / all,
                schemas.mean,
                schemas.max,
                pool.retired
            );
            crate::report::figure("affinity home share", a.home as f64 / all);
            crate::report::figure("affinity cold share", a.cold as f64 / all);
        }
    }
    out!(
        "recept process RSS (load generator included): {} MiB",
        rss_mib("self")
    );
    Ok(())
}

/// `rounds` rounds of a recept window then a pgbench window, each round's
/// figures printed: recept's mean rate, pgbench's mean rate and recept's
/// latencies over all rounds.
async fn alternate(
    what: &str,
    rounds: u64,
    mut recept: impl AsyncFnMut() -> (f64, Latencies),
    mut pgbench: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64, Latencies)> {
    let mut latencies = Latencies::default();
    let (mut recept_sum, mut pgbench_sum) = (0.0, 0.0);
    for round in 1..=rounds {
        let losses = crate::kernel::Losses::now();
        let (rps, window) = recept().await;
        let losses = losses.since();
        let tps = pgbench()?;
        out!(
            "{what} round {round}: recept {rps:.0} req/s (p99 {:.2} ms, max {:.1} ms; {losses}), pgbench {tps:.0} tps: {:.2}",
            window.ms(0.99),
            window.ms(1.0),
            rps / tps.max(1.0)
        );
        latencies.merge(&window);
        recept_sum += rps;
        pgbench_sum += tps;
    }
    let rounds = rounds as f64;
    Ok((recept_sum / rounds, pgbench_sum / rounds, latencies))
}

const PATIENT: &str = "('00000000-0000-0000-0000-' || lpad(:t::text, 12, '0'))::uuid";
/// Selects the tenant's schema and checks the session, as recept does.
const SET_PATH: &str =
    "SELECT set_config('search_path', 't_clinic_' || lpad(:t::text, 5, '0'), true), \
     current_setting('statement_timeout')::interval = '0'::interval \
     AND current_setting('application_name') = 'pgbench';";

/// recept's own SQL for `GET /v1/patients/{id}`: BEGIN, the tenant's
/// schema, the patient query, COMMIT, in one pipeline.
fn read_script(draw: &str) -> String {
    let query = recept::db::patients::SELECT_PATIENT.replace("$1", PATIENT);
    format!(
        "\\set t {draw}\n\\startpipeline\nBEGIN;\n{SET_PATH}\n{query};\nCOMMIT;\n\\endpipeline\n"
    )
}

/// recept's own SQL for `POST /v1/encounters` with five lines and one
/// diagnosis, prices already cached, in its four round trips: BEGIN, the
/// schema, the release lock and the patient's insurance; the three inserts;
/// reading the encounter back; COMMIT. (recept inserts the insurance id it
/// read; the script, which cannot carry it over, inserts NULL.)
fn write_script(draw: &str) -> String {
    let id =
        "(lpad(to_hex(:a::int), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:b::int), 8, '0') \
              || lpad(to_hex(:c::int), 4, '0'))::uuid";
    let insurance = "SELECT p.id, i.id, i.insurer_number, i.copay_rate FROM patients p \
        LEFT JOIN LATERAL (SELECT id, insurer_number, copay_rate FROM insurances \
        WHERE patient_id = p.id AND valid_from <= '2026-07-01'::date AND (valid_to IS NULL OR valid_to >= '2026-07-01'::date) \
        ORDER BY valid_from DESC LIMIT 1) i ON true WHERE p.id = PATIENT FOR KEY SHARE OF p"
        .replace("PATIENT", PATIENT);
    let read_back = format!(
        "{} WHERE e.id = {id}",
        recept::db::encounters::SELECT_ENCOUNTER
    );
    format!(
        "\\set t {draw}\n\\set a random(0, 2147483647)\n\\set b random(0, 2147483647)\n\\set c random(0, 65535)\n\
         \\startpipeline\nBEGIN;\n{SET_PATH}\nSELECT release FROM master_meta FOR SHARE;\n{insurance};\n\\endpipeline\n\
         \\startpipeline\n\
         INSERT INTO encounters (id, patient_id, date, department, doctor, notes, insurance_id, insurer_number, copay_rate, total_points, charge_yen, master_release) \
         VALUES ({id}, {PATIENT}, '2026-07-01', NULL, NULL, NULL, NULL, '06132013', 30, 487, 1460, '2026-04');\n\
         INSERT INTO encounter_lines (encounter_id, line_no, code, kind, name, quantity, points) \
         SELECT {id}, n, c, k, nm, q, p FROM unnest('{{1,2,3,4,5}}'::int2[], '{{112007410,120000710,620098801,620004856,160000310}}'::text[], \
         '{{procedure,procedure,drug,drug,procedure}}'::text[], '{{再診料,処方箋料,ロキソニン錠,ムコスタ錠,血液学的検査}}'::text[], \
         '{{1,1,14,28,1}}'::int4[], '{{73,68,14,30,21}}'::int4[]) AS u(n, c, k, nm, q, p);\n\
         INSERT INTO encounter_diagnoses (encounter_id, position, code, name) \
         SELECT {id}, n, c, nm FROM unnest('{{1}}'::int2[], '{{8833421}}'::text[], '{{腰痛症}}'::text[]) AS u(n, c, nm);\n\
         \\endpipeline\n{read_back};\nCOMMIT;\n"
    )
}

/// A closed loop entering five-line encounters for `visits` (key, patient).
pub(crate) async fn post_encounters(
    base: &str,
    visits: &Arc<Vec<(String, String)>>,
    clients: usize,
    duration: Duration,
) -> (f64, crate::stats::Latencies) {
    let started = Instant::now();
    let workers = (0..clients).map(|w| {
        let http = reqwest::Client::new();
        let visits = visits.clone();
        let base = base.to_string();
        tokio::spawn(async move {
            let mut latencies = crate::stats::Latencies::default();
            let mut i = w;
            while started.elapsed() < duration {
                let (key, patient) = &visits[i % visits.len()];
                let t = Instant::now();
                let sent = http
                    .post(format!("{base}/v1/encounters"))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"patient_id": patient, "date": "2026-07-01", "diagnoses": ["8833421"],
                        "items": [{"code": "112007410", "quantity": 1}, {"code": "120000710", "quantity": 1},
                                  {"code": "620098801", "quantity": 14}, {"code": "620004856", "quantity": 28},
                                  {"code": "160000310", "quantity": 1}]}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => latencies.record(t.elapsed()),
                    _ => latencies.error(),
                }
                i += clients;
            }
            latencies
        })
    });
    let all = crate::stats::gather(workers).await;
    (all.count() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Runs pgbench with `script` on as many connections for `seconds`.
fn pgbench(stack: &Stack, script: &str, connections: usize, seconds: u64) -> anyhow::Result<f64> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(script.as_bytes())?;
    let bin = recept::dev::PgBinaries::find()?.bin_dir.join("pgbench");
    let port = stack.pg.as_ref().map(|p| p.port()).unwrap_or_default();
    let output = Command::new(bin)
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1"])
        // (pgbench's `-d` is --debug, not the database: the database is
        // the last argument.)
        .args(["-p", &port.to_string(), "-U", "recept"])
        .args([
            "-c",
            &connections.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
        ])
        .arg("-f")
        .arg(file.path())
        .arg("recept")
        .env("PGPASSWORD", "load-test")
        // Statements are prepared before any transaction runs: give the
        // session a schema to resolve them in, as recept prepares its own
        // inside a tenant's transaction. Each transaction then switches.
        .env("PGOPTIONS", "-c search_path=t_clinic_00000")
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_lines: Vec<&str> = stderr.lines().rev().take(12).collect();
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        text,
        last_lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {text}"))
}

/// Private memory of recept's clinic backends, from /proc (PostgreSQL runs
/// on this machine in the benchmark).
async fn backend_memory(url: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let pids: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'recept-clinic'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sizes: Vec<u64> = pids
        .iter()
        .map(|pid| rss_anon_kib(&pid.to_string()))
        .collect();
    let max = sizes.iter().max().copied().unwrap_or(0);
    let avg = sizes.iter().sum::<u64>() / sizes.len().max(1) as u64;
    Ok(format!(
        "recept-clinic backends after the run: {} connections, private memory avg {:.1} MiB, max {:.1} MiB",
        sizes.len(),
        avg as f64 / 1024.0,
        max as f64 / 1024.0
    ))
}

fn status_field(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_anon_kib(pid: &str) -> u64 {
    status_field(pid, "RssAnon:")
}

fn rss_mib(pid: &str) -> u64 {
    status_field(pid, "VmRSS:") / 1024
}
