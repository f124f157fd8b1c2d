//! recept on a Citus cluster (a coordinator and two workers on this
//! machine, schema-based sharding on) against recept on plain PostgreSQL:
//! tenant creation, GET and POST throughput through the coordinator, in
//! alternated windows, then a tenant moved between workers under load.
//!
//! Needs Citus installed for the PostgreSQL server (see the README, "On
//! Citus"); says so and stops otherwise.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use recept::pools::Role;
use recept::tenancy::{Registry, Slug};

use crate::many::post_encounters;
use crate::out;
use crate::overload::closed;
use crate::stack::{start_postgres, work_dir, Stack};
use crate::stats::Latencies;

#[derive(Args, Clone)]
pub struct Options {
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Clients of each window; recept's clinic pool too.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Length of each window.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of a plain window then a Citus window.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

/// Starts a coordinator and two workers and recept on the coordinator.
async fn citus_stack(tweak: impl FnOnce(&mut recept::config::Settings)) -> anyhow::Result<Stack> {
    let dir = work_dir()?;
    let citus = [
        ("shared_preload_libraries", "citus"),
        ("wal_level", "logical"),
        ("max_worker_processes", "32"),
        ("citus.node_conninfo", "sslmode=disable"),
    ];
    let coordinator = start_postgres(&dir.join("coordinator"), &citus, None)?;
    let workers = vec![
        start_postgres(&dir.join("worker1"), &citus, None)?,
        start_postgres(&dir.join("worker2"), &citus, None)?,
    ];
    for node in std::iter::once(&coordinator).chain(&workers) {
        recept::dev::ensure_database(node, "recept").await?;
        let (client, connection) =
            tokio_postgres::connect(&node.url("recept"), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE EXTENSION citus; INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) \
                 VALUES (0, 'recept', 'password=load-test')",
            )
            .await?;
    }
    let (client, connection) =
        tokio_postgres::connect(&coordinator.url("recept"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
            &[&i32::from(coordinator.port())],
        )
        .await?;
    for worker in &workers {
        client
            .execute(
                "SELECT citus_add_node('127.0.0.1', $1)",
                &[&i32::from(worker.port())],
            )
            .await?;
    }
    client
        .batch_execute("ALTER DATABASE recept SET citus.enable_schema_based_sharding = on")
        .await?;
    let url = coordinator.url("recept");
    Stack::serve(dir, coordinator, workers, url, tweak).await
}

/// Creates `n` tenants, each with a key and an insured patient; returns
/// the milliseconds each creation took and (key, patient) per tenant.
async fn tenants(
    stack: &Stack,
    prefix: &str,
    n: usize,
) -> anyhow::Result<(Latencies, Vec<(String, String)>)> {
    crate::stack::import_sample_release(&stack.pools).await?;
    let mut created = Latencies::default();
    let mut clinics = Vec::new();
    for i in 0..n {
        let slug = Slug::parse(&format!("{prefix}_{i:04}"))?;
        let started = Instant::now();
        crate::stack::create_tenants(&stack.pools, std::slice::from_ref(&slug), "2026-04", 1)
            .await?;
        created.record(started.elapsed());
        let control = stack.pools.control(Role::Admin).await?;
        let tenant = Registry::find(&control, &slug).await?.expect("created");
        let key = stack.keys.issue();
        Registry::insert_key(&control, tenant.id, &key, Some("load")).await?;
        clinics.push(key.secret);
    }
    let clinics = crate::traffic::clinics_for_keys(stack, clinics).await?;
    Ok((created, clinics))
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let tweak = |s: &mut recept::config::Settings| {
        s.clinic.pool_size = o.connections;
        s.clinic.tenant_max_in_flight = o.connections;
        s.server.workers = 2;
    };
    let citus = match citus_stack(tweak).await {
        Ok(stack) => stack,
        Err(e) => {
            out!("recept-load citus: no Citus cluster could be started here ({e:#}); install Citus for the PostgreSQL server (README, \"On Citus\")");
            return Ok(());
        }
    };
    let plain = Stack::start(tweak).await?;
    out!(
        "recept-load citus: {} tenants, {} clients, {} s windows, {} rounds",
        o.tenants,
        o.connections,
        o.seconds,
        o.rounds
    );

    let (plain_created, plain_clinics) = tenants(&plain, "plain", o.tenants).await?;
    let (citus_created, citus_clinics) = tenants(&citus, "citus", o.tenants).await?;
    for (side, created) in [
        ("plain PostgreSQL", &plain_created),
        ("Citus", &citus_created),
    ] {
        out!("tenant creation on {side}: {}", created.summary());
        crate::report::latencies(&format!("tenant creation, {side}"), created);
    }

    let duration = Duration::from_secs(o.seconds);
    let reads = |clinics: &[(String, String)]| -> Arc<Vec<(String, String)>> {
        Arc::new(
            clinics
                .iter()
                .map(|(k, p)| (k.clone(), format!("/v1/patients/{p}")))
                .collect(),
        )
    };
    let (plain_reads, citus_reads) = (reads(&plain_clinics), reads(&citus_clinics));
    let (plain_visits, citus_visits) = (
        Arc::new(plain_clinics.clone()),
        Arc::new(citus_clinics.clone()),
    );
    // Warm both sides, then alternate.
    closed(
        &plain.clinic,
        &plain_reads,
        o.connections,
        Duration::from_secs(2),
    )
    .await;
    closed(
        &citus.clinic,
        &citus_reads,
        o.connections,
        Duration::from_secs(2),
    )
    .await;
    let mut sums = [[0.0f64; 2]; 2];
    let mut tails = [
        [Latencies::default(), Latencies::default()],
        [Latencies::default(), Latencies::default()],
    ];
    for round in 0..o.rounds {
        for (side, stack) in [(0, &plain), (1, &citus)] {
            let reads = if side == 0 {
                &plain_reads
            } else {
                &citus_reads
            };
            let visits = if side == 0 {
                &plain_visits
            } else {
                &citus_visits
            };
            let (get_rps, get) = closed(&stack.clinic, reads, o.connections, duration).await;
            let (post_rps, post) =
                post_encounters(&stack.clinic, visits, o.connections, duration).await;
            out!(
                "round {round}, {}: GET {get_rps:.0} req/s ({}), POST {post_rps:.0} req/s ({})",
                if side == 0 { "plain" } else { "Citus" },
                get.summary(),
                post.summary()
            );
            sums[side][0] += get_rps;
            sums[side][1] += post_rps;
            tails[side][0].merge(&get);
            tails[side][1].merge(&post);
        }
    }
    let rounds = o.rounds as f64;
    for (i, what) in ["GET /v1/patients/{id}", "POST /v1/encounters"]
        .iter()
        .enumerate()
    {
        let (p, c) = (sums[0][i] / rounds, sums[1][i] / rounds);
        out!("{what}: plain {p:.0} req/s, Citus {c:.0} req/s, Citus / plain {:.2}; p99 plain {:.1} ms, Citus {:.1} ms",
            c / p.max(1.0), tails[0][i].ms(0.99), tails[1][i].ms(0.99));
        crate::report::figure(&format!("{what} plain req/s"), p);
        crate::report::figure(&format!("{what} Citus req/s"), c);
        crate::report::figure(&format!("{what} Citus / plain"), c / p.max(1.0));
    }

    move_under_load(&citus, &citus_clinics[0], o.connections).await
}

/// Moves one tenant to the other worker while clients write to it with
/// idempotency keys; reports errors, the longest request and the move's
/// length.
async fn move_under_load(
    stack: &Stack,
    clinic: &(String, String),
    clients: usize,
) -> anyhow::Result<()> {
    let db = &stack.database_url;
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let slug = "citus_0000";
    let schema = format!("t_{slug}");
    let row = client
        .query_one(
            "SELECT DISTINCT nodeport FROM citus_shards s JOIN pg_class c ON c.oid = s.table_name \
             WHERE c.relnamespace = to_regnamespace($1)",
            &[&schema],
        )
        .await?;
    let from: i32 = row.get(0);
    let to = stack
        .workers
        .iter()
        .map(|w| i32::from(w.port()))
        .find(|p| *p != from)
        .expect("two workers");
    let count = format!("SELECT count(*) FROM {schema}.encounters");
    let before: i64 = client.query_one(&count, &[]).await?.get(0);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, sent, clinic) = (stop.clone(), sent.clone(), clinic.clone());
            let base = stack.clinic.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Latencies::default();
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                    let t = Instant::now();
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    let answer = http
                        .post(format!("{base}/v1/encounters"))
                        .bearer_auth(&clinic.0)
                        .header("idempotency-key", format!("move-{n}"))
                        .json(
                            &serde_json::json!({"patient_id": clinic.1, "date": "2026-07-01",
                            "items": [{"code": "112007410", "quantity": 1}]}),
                        )
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => latencies.record(t.elapsed()),
                        _ => latencies.error(),
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    client
        .execute(
            "SELECT citus_schema_move($1::text::regnamespace, '127.0.0.1'::text, $2::int)",
            &[&schema, &to],
        )
        .await?;
    let moved_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Latencies::default();
    for writer in writers {
        all.merge(&writer.await?);
    }
    let after: i64 = client.query_one(&count, &[]).await?.get(0);
    let stored = after - before;
    out!(
        "tenant moved from worker :{from} to :{to} in {:.2} s under {clients} writers: {} requests, {} errors, \
         longest {:.0} ms, p99 {:.1} ms; {} encounters stored for {} answered 201",
        moved_in.as_secs_f64(),
        sent.load(Ordering::Relaxed),
        all.errors(),
        all.max_ms(),
        all.ms(0.99),
        stored,
        all.count()
    );
    crate::report::figure("move seconds", moved_in.as_secs_f64());
    crate::report::figure("move errors", all.errors());
    crate::report::figure("move longest request ms", all.max_ms());
    Ok(())
}
