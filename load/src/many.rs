//! Many tenants: a single-patient read spread over 1,000 tenants, through
//! recept and, for PostgreSQL's own limit, through pgbench issuing the same
//! SQL (schema selection included, pipelined) on as many connections.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use recept::pools::Role;
use recept::tenancy::{IssuedKey, Registry, Slug};

use crate::overload::closed;
use crate::stack::Stack;

#[derive(Args, Clone)]
pub struct Options {
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Clients (recept) and connections (pgbench); recept's clinic pool too.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
}

fn patient_id(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|s| {
        s.clinic.pool_size = o.connections;
        s.clinic.tenant_max_in_flight = o.connections;
        s.server.workers = 2;
    })
    .await?;
    let pools = stack.pools.clone();
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tenants/master/2026-04.csv"
    ))?;
    recept::master::import_release(&pools, "2026-04", &recept::master::parse_release(&sample)?)
        .await?;
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
            let s = recept::migrate::quote_ident(&slug.schema_name());
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
            let key = IssuedKey::generate();
            Registry::insert_key(&control, tenant.id, &key, Some("load")).await?;
            keys.push(key.secret);
        }
    }
    println!(
        "recept-load many-tenants: {} tenants, {} connections; set-up {:.1}s",
        o.tenants,
        o.connections,
        started.elapsed().as_secs_f64()
    );
    // Each tenant's key and patient, visited in a stride so that
    // consecutive requests go to far-apart tenants.
    let paths: Arc<Vec<(String, String)>> = Arc::new(
        (0..o.tenants)
            .map(|n| n * 7919 % o.tenants)
            .map(|i| (keys[i].clone(), format!("/v1/patients/{}", patient_id(i))))
            .collect(),
    );
    let duration = Duration::from_secs(o.seconds);

    // Warm both paths, then measure recept, then pgbench.
    closed(&stack.clinic, &paths, o.connections, Duration::from_secs(3)).await;
    let (recept_rps, latencies) = closed(&stack.clinic, &paths, o.connections, duration).await;
    println!(
        "recept GET /v1/patients/{{id}}: {recept_rps:.0} req/s, {}",
        latencies.summary()
    );
    let backends = backend_memory(&stack.database_url).await?;
    let pgbench_tps = pgbench(&stack, o.tenants, o.connections, o.seconds)?;
    println!("pgbench, the same SQL pipelined: {pgbench_tps:.0} tps");
    println!("recept / pgbench: {:.2}", recept_rps / pgbench_tps.max(1.0));
    println!("{backends}");
    println!(
        "recept process RSS (load generator included): {} MiB",
        rss_mib("self")
    );
    Ok(())
}

/// Runs pgbench with a script of recept's own SQL for this read: BEGIN,
/// the tenant's schema, the patient query, COMMIT, in one pipeline.
fn pgbench(stack: &Stack, tenants: usize, connections: usize, seconds: u64) -> anyhow::Result<f64> {
    let query = recept::db::patients::SELECT_PATIENT.replace(
        "$1",
        "('00000000-0000-0000-0000-' || lpad(:t::text, 12, '0'))::uuid",
    );
    let script = format!(
        "\\set t random(0, {})\n\\startpipeline\nBEGIN;\n\
         SELECT set_config('search_path', 't_clinic_' || lpad(:t::text, 5, '0'), true);\n\
         {query};\nCOMMIT;\n\\endpipeline\n",
        tenants - 1
    );
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(script.as_bytes())?;
    let bin = recept::dev::PgBinaries::find()?.bin_dir.join("pgbench");
    let port = stack.pg.as_ref().map(|p| p.port()).unwrap_or_default();
    let output = Command::new(bin)
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", "recept", "-d", "recept"])
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
        .env("PGPASSWORD", "load-test")
        // Statements are prepared before any transaction runs: give the
        // session a schema to resolve them in, as recept prepares its own
        // inside a tenant's transaction. Each transaction then switches.
        .env("PGOPTIONS", "-c search_path=t_clinic_00000")
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
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
