//! Many tenants: a patient read and a visit entered, spread over 1,000
//! tenants of 100 patients each, through recept and, for PostgreSQL's own
//! limit, through pgbench issuing the same SQL (recept's own statement
//! texts, schema selection included, in as many round trips) on as many
//! connections.

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
    /// Seconds each side runs before its measured windows: recept once
    /// before its first window of GET and of POST (its connections stay
    /// open), pgbench at the start of every run (its connections open
    /// cold with each run), so that both are compared warm, as a server
    /// that has been up for a while. pgbench's first `--seconds` after it
    /// starts are reported too, as the cold figure.
    #[arg(long, default_value_t = 20)]
    warm: u64,
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
    /// recept's `clinic.connection_max_statements` (default: recept's own).
    #[arg(long)]
    max_statements: Option<usize>,
    /// Insured patients per tenant; each request takes one of its tenant's
    /// at random (both sides), so that a busy clinic's visits do not all
    /// queue on one patient's lock.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=9999))]
    patients: u64,
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

/// Patient `p` of tenant `t`; their insurance's id is the same with
/// `0001` in the third group (decimal digits, so that pgbench's `lpad`
/// builds the same).
fn patient_id(t: usize, p: u64) -> String {
    format!("00000000-0000-0000-{p:04}-{t:012}")
}

/// The `n`-th request's (tenant, patient): the tenants in `sequence`'s
/// order, each with one of its patients drawn at random (a fixed seed),
/// as pgbench draws them.
fn draws(sequence: &[usize], patients: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261207);
    let n = sequence.len().max(200_000);
    (0..n).map(move |j| (sequence[j % sequence.len()], rng.gen_range(0..patients)))
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
        if let Some(max) = o.max_statements {
            s.clinic.connection_max_statements = max;
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
    // `--patients` insured patients per tenant with known ids, and a key
    // per tenant.
    let mut keys = Vec::with_capacity(o.tenants);
    {
        let control = pools.control(Role::Admin).await?;
        let writer = pools.get("main", Role::Migration).await?;
        for (i, slug) in slugs.iter().enumerate() {
            let s = recept::names::quote_ident(&slug.schema_name());
            let id = |group: &str| {
                format!("('00000000-0000-{group}-' || lpad(p::text, 4, '0') || '-{i:012}')::uuid")
            };
            writer
                .batch_execute(&format!(
                    "INSERT INTO {s}.patients (id, name, name_kana, birth_date, sex) \
                     SELECT {}, '負荷 太郎', 'フカ タロウ', '1970-01-01', 'male' \
                     FROM generate_series(0, {last}) p; \
                     INSERT INTO {s}.insurances (id, patient_id, insurer_number, copay_rate, valid_from) \
                     SELECT {}, {}, '06132013', 30, '2020-01-01' FROM generate_series(0, {last}) p",
                    id("0000"),
                    id("0001"),
                    id("0000"),
                    last = o.patients - 1,
                ))
                .await?;
            let tenant = Registry::find(&control, slug).await?.expect("created");
            let key = stack.keys.issue();
            Registry::insert_key(&control, tenant.id, &key, Some("load")).await?;
            keys.push(key.secret);
        }
    }
    // The set-up filled thousands of tables at once: have them vacuumed and
    // analysed now, not by autovacuum's workers during the windows, where
    // they would weigh on whichever side they met.
    {
        let (client, connection) =
            tokio_postgres::connect(&stack.database_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute("VACUUM (ANALYZE)").await?;
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
        draws(&sequence, o.patients)
            .map(|(t, p)| {
                (
                    keys[t].clone(),
                    format!("/v1/patients/{}", patient_id(t, p)),
                )
            })
            .collect(),
    );
    let duration = Duration::from_secs(o.seconds);

    // Warm recept's path (each connection's catalog cache meets every
    // tenant's schema; pgbench's connections warm up at the start of each
    // of its runs), then alternate recept and pgbench windows.
    closed(
        &stack.clinic,
        &paths,
        o.connections,
        Duration::from_secs(o.warm),
    )
    .await;
    let (recept_rps, pgbench_tps, latencies) = alternate(
        &stack.database_url,
        "GET",
        o.rounds,
        async || closed(&stack.clinic, &paths, o.connections, duration).await,
        || {
            pgbench(
                &stack,
                &read_script(&draw, o.patients),
                o.connections,
                o.warm,
                o.seconds,
            )
        },
    )
    .await?;
    out!(
        "recept GET /v1/patients/{{id}}: {recept_rps:.0} req/s on average, {}",
        latencies.summary()
    );
    crate::report::latencies("recept GET /v1/patients/{id}", &latencies);
    let after_reads = backend_memory(&stack, "the reads").await?;
    compare(
        "GET",
        "the same SQL pipelined",
        recept_rps,
        pgbench_tps,
        o.seconds,
    );

    // The same for entering a five-line encounter.
    let visits: Arc<Vec<(String, String)>> = Arc::new(
        draws(&sequence, o.patients)
            .map(|(t, p)| (keys[t].clone(), patient_id(t, p)))
            .collect(),
    );
    post_encounters(
        &stack.clinic,
        &visits,
        o.connections,
        Duration::from_secs(o.warm),
    )
    .await;
    let (post_rps, post_tps, post_latencies) = alternate(
        &stack.database_url,
        "POST",
        o.rounds,
        async || post_encounters(&stack.clinic, &visits, o.connections, duration).await,
        || {
            pgbench(
                &stack,
                &write_script(&draw, o.patients),
                o.connections,
                o.warm,
                o.seconds,
            )
        },
    )
    .await?;
    out!(
        "recept POST /v1/encounters (5 lines): {post_rps:.0} req/s on average, {}",
        post_latencies.summary()
    );
    crate::report::latencies("recept POST /v1/encounters", &post_latencies);
    compare(
        "POST",
        "the same SQL (five round trips, as recept)",
        post_rps,
        post_tps,
        o.seconds,
    );
    out!("{after_reads}");
    out!("{}", backend_memory(&stack, "the visits too").await?);
    for pool in stack.pools.status() {
        if let (Some(a), Some(schemas)) = (pool.affinity, pool.schemas_per_connection) {
            let all = (a.home + a.warm + a.cold).max(1) as f64;
            out!(
                "clinic requests served at home {:.1} %, on a connection warm to the schema {:.1} %, cold {:.1} %; \
                 schemas per open connection: mean {:.0}, max {}; connections retired {}; \
                 statements shared for want of room for own ones (reads, a visit's two) {:.1} % of requests",
                100.0 * a.home as f64 / all,
                100.0 * a.warm as f64 / all,
                100.0 * a.cold as f64 / all,
                schemas.mean,
                schemas.max,
                pool.retired,
                100.0 * a.own_statements_full as f64 / all,
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
/// latencies over all rounds. Each window starts just after a checkpoint
/// (`url`), so that neither side meets one the other's writes brought on,
/// nor pays alone for the full-page images that follow one.
async fn alternate(
    url: &str,
    what: &str,
    rounds: u64,
    mut recept: impl AsyncFnMut() -> (f64, Latencies),
    mut pgbench: impl FnMut() -> anyhow::Result<PgbenchRate>,
) -> anyhow::Result<(f64, PgbenchRate, Latencies)> {
    let mut latencies = Latencies::default();
    let mut recept_sum = 0.0;
    let mut pgbench_sum = PgbenchRate::default();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let debug = std::env::var_os("LOAD_DEBUG").is_some();
    for round in 1..=rounds {
        client.batch_execute("CHECKPOINT").await?;
        if debug {
            // For a profiler started beside the run: when each side's
            // measured window begins, after the checkpoint.
            out!(
                "{what} round {round}: recept's window starts at {}",
                clock()
            );
        }
        let losses = crate::kernel::Losses::now();
        let (rps, window) = recept().await;
        let losses = losses.since();
        client.batch_execute("CHECKPOINT").await?;
        if debug {
            out!(
                "{what} round {round}: pgbench starts at {}; its warm window is its last seconds",
                clock()
            );
        }
        let tps = pgbench()?;
        out!(
            "{what} round {round}: recept {rps:.0} req/s (p99 {:.2} ms, max {:.1} ms; {losses}), pgbench {:.0} tps warm ({:.0} cold): {:.2}",
            window.ms(0.99),
            window.ms(1.0),
            tps.warm,
            tps.cold,
            rps / tps.warm.max(1.0)
        );
        latencies.merge(&window);
        recept_sum += rps;
        pgbench_sum.warm += tps.warm;
        pgbench_sum.cold += tps.cold;
    }
    let rounds = rounds as f64;
    Ok((
        recept_sum / rounds,
        PgbenchRate {
            warm: pgbench_sum.warm / rounds,
            cold: pgbench_sum.cold / rounds,
        },
        latencies,
    ))
}

/// The wall clock to the millisecond, for lining a profile up with a window.
fn clock() -> String {
    chrono::Utc::now().format("%H:%M:%S%.3f UTC").to_string()
}

/// Prints and reports `what`'s rates: recept's, pgbench's (`how` it ran)
/// warm and cold over its windows of `seconds`, and their ratios.
fn compare(what: &str, how: &str, recept: f64, pgbench: PgbenchRate, seconds: u64) {
    out!(
        "pgbench, {how}: {:.0} tps on average warm ({:.0} in its first {seconds} s, cold)",
        pgbench.warm,
        pgbench.cold,
    );
    out!(
        "recept / pgbench: {:.2} (against pgbench cold: {:.2})",
        recept / pgbench.warm.max(1.0),
        recept / pgbench.cold.max(1.0)
    );
    crate::report::figure(&format!("{what} recept req/s"), recept);
    crate::report::figure(&format!("{what} pgbench tps"), pgbench.warm);
    crate::report::figure(&format!("{what} pgbench tps, cold"), pgbench.cold);
    crate::report::figure(
        &format!("{what} recept / pgbench"),
        recept / pgbench.warm.max(1.0),
    );
}

/// pgbench's rate over a run's last `--seconds` (warm) and its first
/// (cold: every connection meets each tenant's schema for the first time).
#[derive(Default, Clone, Copy)]
struct PgbenchRate {
    warm: f64,
    cold: f64,
}

/// Patient `:p` of tenant `:t`, as [`patient_id`] builds it (`group`
/// `0001`: that patient's insurance).
fn patient_expr(group: &str) -> String {
    format!(
        "('00000000-0000-{group}-' || lpad(:p::text, 4, '0') || '-' || lpad(:t::text, 12, '0'))::uuid"
    )
}
/// Selects the tenant's schema and checks the session, as recept does.
const SET_PATH: &str =
    "SELECT set_config('search_path', 't_clinic_' || lpad(:t::text, 5, '0'), true), \
     current_setting('statement_timeout')::interval = '0'::interval \
     AND current_setting('application_name') = 'pgbench'";

/// `sql` with its parameters `$1`, `$2`, … replaced by `values`, in order.
fn bind(sql: &str, values: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(n) => out.push_str(values[n - 1]),
            Err(_) => out.push('$'),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// The draw of tenant and patient, as pgbench variables `:t` and `:p`.
fn draw_vars(draw: &str, patients: u64) -> String {
    format!("\\set t {draw}\n\\set p random(0, {})\n", patients - 1)
}

/// recept's own SQL for `GET /v1/patients/{id}`: BEGIN, the tenant's
/// schema, the patient query, COMMIT, in one pipeline.
fn read_script(draw: &str, patients: u64) -> String {
    // As recept runs it away from a tenant's home: under the tenant's
    // `search_path`, the marks of its schema removed.
    let query = bind(
        &recept::pools::unqualified(recept::db::patients::SELECT_PATIENT),
        &[&patient_expr("0000")],
    );
    format!(
        "{}\\startpipeline\nBEGIN;\n{SET_PATH};\n{query};\nCOMMIT;\n\\endpipeline\n",
        draw_vars(draw, patients)
    )
}

/// recept's own SQL for `POST /v1/encounters` with five lines and one
/// diagnosis, prices already cached, in its five round trips
/// (`clinic::visits::record_visit`): BEGIN, the schema, the release lock
/// and the patient, locked, with the insurance; the month so far; the
/// three inserts; reading the encounter back; COMMIT. The script cannot
/// carry what it reads into what it writes, so the points, charges and
/// the insurance id it inserts are fixed values of the same shape (the
/// insurance id is the patient's, which the set-up makes predictable).
fn write_script(draw: &str, patients: u64) -> String {
    use recept::db::encounters as e;
    let id =
        "(lpad(to_hex(:a::int), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:b::int), 8, '0') \
              || lpad(to_hex(:c::int), 4, '0'))::uuid";
    let (patient, insurance) = (patient_expr("0000"), patient_expr("0001"));
    let date = "'2026-07-01'::date";
    let patient_on = bind(e::PATIENT_ON, &[&patient, date]);
    let month = bind(
        e::MONTH_SO_FAR,
        &[
            &patient,
            "'06132013'",
            "'2026-07-01'::date",
            "'2026-08-01'::date",
            date,
        ],
    );
    let encounter = bind(
        e::INSERT_ENCOUNTER,
        &[
            id,
            &patient,
            date,
            "NULL",
            "NULL",
            "NULL",
            &insurance,
            "'06132013'",
            "30",
            "487",
            "1460",
            "'2026-04'",
            "'override'",
            "1460",
            "NULL",
        ],
    );
    let lines = bind(
        e::INSERT_LINES,
        &[
            id,
            "'{1,2,3,4,5}'",
            "'{112007410,120000710,620098801,620004856,160000310}'",
            "'{procedure,procedure,drug,drug,procedure}'",
            "'{再診料,処方箋料,ロキソニン錠,ムコスタ錠,血液学的検査}'",
            "'{1,1,14,28,1}'",
            "'{73,68,14,30,21}'",
            "'{NULL,NULL,NULL,NULL,NULL}'",
            "'{NULL,NULL,NULL,NULL,NULL}'",
            "'{NULL,NULL,NULL,NULL,NULL}'",
        ],
    );
    let diagnoses = bind(
        e::INSERT_DIAGNOSES,
        &[id, "'{1}'", "'{8833421}'", "'{腰痛症}'"],
    );
    let read_back = format!("{} WHERE e.id = {id}", e::SELECT_ENCOUNTER);
    format!(
        "{}\\set a random(0, 2147483647)\n\\set b random(0, 2147483647)\n\\set c random(0, 65535)\n\
         \\startpipeline\nBEGIN;\n{SET_PATH};\n{};\n{patient_on};\n\\endpipeline\n\
         {month};\n\
         \\startpipeline\n{encounter};\n{lines};\n{diagnoses};\n\\endpipeline\n\
         {read_back};\nCOMMIT;\n",
        draw_vars(draw, patients),
        e::RELEASE_FOR_PRICING,
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

/// Runs pgbench with `script` on as many connections for `warm` then
/// `seconds` seconds, its rate read from its report of every second.
fn pgbench(
    stack: &Stack,
    script: &str,
    connections: usize,
    warm: u64,
    seconds: u64,
) -> anyhow::Result<PgbenchRate> {
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
            &(warm + seconds).to_string(),
            "-P",
            "1",
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
    // "progress: 12.0 s, 4523.1 tps, lat 3.532 ms stddev 1.204, 0 failed"
    let per_second: Vec<(f64, f64)> = stderr
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("progress: ")?.split_whitespace();
            let at = words.next()?.parse().ok()?;
            let tps = words.nth(1)?.parse().ok()?;
            Some((at, tps))
        })
        .collect();
    if std::env::var_os("LOAD_DEBUG").is_some() {
        out!("pgbench every second: {per_second:?}");
    }
    let mean = |range: std::ops::RangeInclusive<f64>| {
        let inside: Vec<f64> = per_second
            .iter()
            .filter(|(at, _)| range.contains(at))
            .map(|&(_, tps)| tps)
            .collect();
        anyhow::ensure!(
            !inside.is_empty(),
            "no pgbench progress for {range:?} s: {stderr}"
        );
        Ok(inside.iter().sum::<f64>() / inside.len() as f64)
    };
    let end = (warm + seconds) as f64;
    Ok(PgbenchRate {
        warm: mean(end - seconds as f64 + 0.5..=end)?,
        cold: mean(0.5..=seconds as f64)?,
    })
}

/// Private memory of recept's clinic backends, from /proc (PostgreSQL runs
/// on this machine in the benchmark), after `what`. With `LOAD_PG_CONTEXTS`
/// set, the memory contexts of the largest backend go to PostgreSQL's log
/// too (`pg_log_backend_memory_contexts`), and their grand total is shown:
/// what its caches and plans hold, against what the process keeps.
async fn backend_memory(stack: &Stack, what: &str) -> anyhow::Result<String> {
    let (client, connection) =
        tokio_postgres::connect(&stack.database_url, tokio_postgres::NoTls).await?;
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
    let sizes: Vec<(u64, i32)> = pids
        .iter()
        .map(|&pid| (rss_anon_kib(&pid.to_string()), pid))
        .collect();
    let (max, largest) = sizes.iter().max().copied().unwrap_or((0, 0));
    let avg = sizes.iter().map(|s| s.0).sum::<u64>() / sizes.len().max(1) as u64;
    let unshared: Vec<u64> = pids
        .iter()
        .map(|&pid| unshared_anon_kib(&pid.to_string()))
        .collect();
    let unshared_avg = unshared.iter().sum::<u64>() / unshared.len().max(1) as u64;
    let unshared_max = unshared.iter().max().copied().unwrap_or(0);
    let mut line = format!(
        "recept-clinic backends after {what}: {} connections, private memory avg {:.1} MiB, max {:.1} MiB \
         (not shared with the postmaster: avg {:.1} MiB, max {:.1} MiB)",
        sizes.len(),
        avg as f64 / 1024.0,
        max as f64 / 1024.0,
        unshared_avg as f64 / 1024.0,
        unshared_max as f64 / 1024.0,
    );
    if std::env::var_os("LOAD_PG_CONTEXTS").is_some() && largest != 0 {
        client
            .execute("SELECT pg_log_backend_memory_contexts($1)", &[&largest])
            .await?;
        // The backend logs them when it next checks for interrupts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = stack
            .pg
            .as_ref()
            .map(|pg| pg.data_dir().with_extension("log"));
        let log = log
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default();
        line.push_str(&contexts_summary(&log, largest));
    }
    Ok(line)
}

/// The grand total of `pid`'s memory contexts in PostgreSQL's `log`, and
/// its largest contexts below the top one (PostgreSQL lists a hundred
/// children of each context and sums the rest in one line).
fn contexts_summary(log: &str, pid: i32) -> String {
    let tag = format!("[{pid}]");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| l.split_once("LOG:  ").map(|(_, m)| m))
        .collect();
    // The last logging of this backend's contexts.
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("logging memory contexts"))
        .unwrap_or(0);
    let lines = &lines[start..];
    let total = lines
        .iter()
        .find(|l| l.starts_with("Grand total:"))
        .unwrap_or(&"no grand total in the log");
    let mut level1: Vec<(u64, &str)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("level: 1; "))
        .map(|l| {
            let bytes = l
                .split_once(": ")
                .and_then(|(_, rest)| rest.split_whitespace().find_map(|w| w.parse().ok()))
                .or_else(|| {
                    l.split_once("containing ")
                        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0);
            (bytes, l)
        })
        .collect();
    level1.sort_unstable_by_key(|l| std::cmp::Reverse(l.0));
    let mut out = format!("\n  its memory contexts (pid {pid}): {total}");
    for (_, l) in level1.iter().take(3) {
        out.push_str(&format!("\n    {l}"));
    }
    out
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

/// A process's anonymous memory (`RssAnon`): what it allocated, and
/// also the pages a backend inherits from the postmaster when it forks
/// and has not written since (about 2 MiB with PostgreSQL 15 on Debian),
/// which every backend shares.
fn rss_anon_kib(pid: &str) -> u64 {
    status_field(pid, "RssAnon:")
}

/// A process's anonymous memory that no other process maps: for each of
/// its mappings, its anonymous pages counted only as far as they are
/// private (`Private_Dirty`; a shared memory segment has no anonymous
/// pages). What one more backend costs the host.
fn unshared_anon_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map(|s| unshared_in_smaps(&s))
        .unwrap_or(0)
}

fn unshared_in_smaps(smaps: &str) -> u64 {
    let field = |l: &str, name: &str| -> Option<u64> {
        l.strip_prefix(name)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (mut total, mut anonymous, mut private) = (0, 0, 0);
    for l in smaps.lines() {
        if let Some(kib) = field(l, "Anonymous:") {
            anonymous = kib;
        } else if let Some(kib) = field(l, "Private_Dirty:") {
            private = kib;
        } else if l.starts_with("VmFlags:") {
            // The last field of a mapping.
            total += anonymous.min(private);
            (anonymous, private) = (0, 0);
        }
    }
    total
}

fn rss_mib(pid: &str) -> u64 {
    status_field(pid, "VmRSS:") / 1024
}

#[cfg(test)]
mod tests {
    use super::{bind, contexts_summary, draws, unshared_in_smaps};

    #[test]
    fn only_a_mappings_private_anonymous_pages_count_as_unshared() {
        let smaps = "\
55d0c0000000-55d0c0100000 rw-p 00000000 00:00 0                          [heap]
Rss:                1060 kB
Private_Dirty:       640 kB
Anonymous:          1060 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0008000000 rw-s 00000000 00:01 1024                       /dev/zero (deleted)
Rss:                9000 kB
Private_Dirty:      3000 kB
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms sd
7f1000000000-7f1000010000 rw-p 00000000 08:01 77                         /usr/lib/libc.so.6
Private_Dirty:         8 kB
Anonymous:            12 kB
VmFlags: rd wr mr mw me ac sd
";
        // The heap's 640 private pages and libc's 8; the shared memory
        // segment's private pages are not anonymous memory.
        assert_eq!(unshared_in_smaps(smaps), 648);
    }

    #[test]
    fn a_backends_contexts_are_summed_up_from_the_log() {
        let log = "\
x [7] LOG:  logging memory contexts of PID 7
x [7] LOG:  level: 0; TopMemoryContext: 100 total in 1 blocks; 10 free (0 chunks); 90 used
x [8] LOG:  level: 1; Elsewhere: 999999 total in 1 blocks; 0 free (0 chunks); 999999 used
x [7] LOG:  level: 1; TableSpace cache: 8192 total in 1 blocks; 2088 free (0 chunks); 6104 used
x [7] LOG:  level: 1; CacheMemoryContext: 8405048 total in 12 blocks; 4307752 free (226 chunks); 4097296 used
x [7] LOG:  level: 2; CachedPlan: 17408 total in 5 blocks; 3424 free (1 chunks); 13984 used: SELECT 1
x [7] LOG:  level: 1; 494 more child contexts containing 3043520 total in 1485 blocks; 878656 free (185 chunks); 2164864 used
x [7] LOG:  level: 1; ErrorContext: 8192 total in 1 blocks; 7928 free (4 chunks); 264 used
x [7] LOG:  Grand total: 12875824 bytes in 1850 blocks; 5619616 free (733 chunks); 7256208 used
";
        let summary = contexts_summary(log, 7);
        let lines: Vec<&str> = summary.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "",
                "its memory contexts (pid 7): Grand total: 12875824 bytes in 1850 blocks; 5619616 free (733 chunks); 7256208 used",
                "CacheMemoryContext: 8405048 total in 12 blocks; 4307752 free (226 chunks); 4097296 used",
                "494 more child contexts containing 3043520 total in 1485 blocks; 878656 free (185 chunks); 2164864 used",
                "TableSpace cache: 8192 total in 1 blocks; 2088 free (0 chunks); 6104 used",
            ]
        );
    }

    #[test]
    fn every_tenant_is_drawn_with_many_of_its_patients_however_long_the_sequence() {
        // A stride over 1,000 tenants and 200,000 Zipf draws alike.
        for sequence in [(0..1_000).collect::<Vec<usize>>(), vec![0; 200_000]] {
            let mut seen = std::collections::HashSet::new();
            for (t, p) in draws(&sequence, 100) {
                assert!(p < 100);
                if t == 0 {
                    seen.insert(p);
                }
            }
            // (200 draws of 100 meet about 87 of them.)
            assert!(
                seen.len() >= 80,
                "tenant 0 met {} of its patients",
                seen.len()
            );
        }
    }

    #[test]
    fn parameters_are_bound_by_number_whatever_their_digits() {
        assert_eq!(
            bind(
                "f($1, $10, $2) = $1::int",
                &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            ),
            "f(a, j, b) = a::int"
        );
        assert_eq!(bind("cost $ and $", &[]), "cost $ and $");
    }
}
