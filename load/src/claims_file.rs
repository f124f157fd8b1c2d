//! The electronic claims file: one clinic's month of 2,000 claims written
//! over HTTP (and the writer alone, in memory), then every tenant of a
//! cluster of 1,000 written by `recept claims uke --cluster`, with its
//! time and the largest memory it held.

use std::time::{Duration, Instant};

use clap::Args;
use recept::tenancy::Slug;

use crate::out;
use crate::stack::Stack;

#[derive(Args, Clone)]
pub struct Options {
    /// Claims in the one clinic's month.
    #[arg(long, default_value_t = 2000)]
    claims: usize,
    /// Tenants of the cluster written by the command line.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Times the one clinic's file is written.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// A month of `patients` patients in `schema`, each with a disease, three
/// visits (two procedures and a drug unit of two drugs for 14 days) and a
/// confirmed claim; the clinic's identity set.
async fn month_of_claims(
    client: &tokio_postgres::Client,
    schema: &str,
    patients: usize,
) -> anyhow::Result<()> {
    let s = recept::names::quote_ident(schema);
    client
        .batch_execute(&format!(
            "BEGIN;
             UPDATE {s}.clinic SET institution_code = '0113719', prefecture_code = '01';
             INSERT INTO {s}.patients (id, name, name_kana, birth_date, sex)
               SELECT gen_random_uuid(), '負荷 太郎', 'フカ タロウ', '1960-01-01', 'male'
               FROM generate_series(1, {patients});
             INSERT INTO {s}.insurances (id, patient_id, insurer_number, kind, valid_from)
               SELECT gen_random_uuid(), id, '138057', 'national', '2020-01-01' FROM {s}.patients;
             INSERT INTO {s}.patient_diseases (id, patient_id, code, name, start_date, main)
               SELECT gen_random_uuid(), id, '8833421', '高血圧症', '2026-01-05', true FROM {s}.patients;
             INSERT INTO {s}.encounters (id, patient_id, date, insurance_id, insurer_number, copay_rate,
                 copay_rule, total_points, charge_yen, charge_before_ceiling_yen, master_release)
               SELECT gen_random_uuid(), i.patient_id, d, i.id, '138057', 30, 'working_age', 451, 1350,
                 1350, '2026-04'
               FROM {s}.insurances i, unnest(ARRAY['2026-05-01', '2026-05-11', '2026-05-21']::date[]) d;
             INSERT INTO {s}.encounter_lines (encounter_id, line_no, code, kind, name, quantity, points,
                 unit_no, unit_kind, unit_days)
               SELECT e.id, l.n, l.code, l.kind, l.name, l.q, l.p, l.u, l.uk, l.ud FROM {s}.encounters e,
                 (VALUES (1, '112007410', 'procedure', '再診料', 1, 75, NULL::int2, NULL, NULL::int2),
                         (2, '160095710', 'procedure', '血液学的検査判断料', 2, 250, NULL, NULL, NULL),
                         (3, '620098801', 'drug', 'ロキソプロフェン', 3, 0, 1, 'internal', 14),
                         (4, '620001883', 'drug', 'クラリスロマイシン', 2, 126, 1, 'internal', 14))
                 AS l(n, code, kind, name, q, p, u, uk, ud);
             INSERT INTO {s}.claims (id, patient_id, insurer_number, month, total_points, visit_days,
                 charge_yen, charge_before_ceiling_yen, diagnoses, status, confirmed_at)
               SELECT gen_random_uuid(), id, '138057', '2026-05-01', 3 * 451, 3, 3 * 1350, 3 * 1350,
                 '{{8833421}}', 'confirmed', now() FROM {s}.patients;
             INSERT INTO {s}.claim_encounters (claim_id, encounter_id)
               SELECT c.id, e.id FROM {s}.claims c JOIN {s}.encounters e ON e.patient_id = c.patient_id;
             COMMIT;"
        ))
        .await?;
    Ok(())
}

fn peak_children_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let stack = Stack::start(|s| s.server.workers = 2).await?;
    crate::stack::import_sample_release(&stack.pools).await?;
    let (client, connection) =
        tokio_postgres::connect(&stack.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    // One clinic's month.
    let clinic = Slug::parse("claims_clinic")?;
    crate::stack::create_tenants(&stack.pools, std::slice::from_ref(&clinic), "2026-04", 1).await?;
    month_of_claims(&client, &clinic.schema_name(), o.claims).await?;
    let key = crate::traffic::clinics(&stack, std::slice::from_ref(&clinic)).await?[0]
        .0
        .clone();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/claims/export?month=2026-05&format=uke&payer=kokuho",
        stack.clinic
    );
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..o.rounds {
        let started = Instant::now();
        let bytes = http
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        times.push(started.elapsed());
        let read = recept::uke::read(&bytes)?;
        anyhow::ensure!(
            read.claims.len() == o.claims,
            "the file holds {} claims",
            read.claims.len()
        );
        size = bytes.len();
    }
    times.sort();
    out!(
        "recept-load claims-file: one clinic, {} claims: GET export?format=uke in {:.0} ms (median of {}; fastest {:.0}, slowest {:.0}), {} bytes",
        o.claims,
        ms(times[times.len() / 2]),
        o.rounds,
        ms(times[0]),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        size
    );
    crate::report::figure(
        "uke 2000 claims over HTTP ms (median)",
        ms(times[times.len() / 2]),
    );

    // The writer alone, on what the file read back holds.
    let claims: Vec<recept::uke::Claim> = (0..o.claims).map(|_| sample_claim()).collect();
    let institution = recept::uke::Institution {
        payer: recept::uke::Payer::Kokuho,
        prefecture: "01".into(),
        code: "0113719".into(),
        name: "負荷クリニック".into(),
        phone: None,
    };
    let month = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date");
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..o.rounds {
        let records = recept::uke::records(&institution, month, &claims);
        bytes = recept::uke::encode(&records)?.len();
    }
    let writer = started.elapsed() / o.rounds as u32;
    out!(
        "the writer alone: {:.1} ms for {} claims ({} bytes)",
        ms(writer),
        o.claims,
        bytes
    );
    crate::report::figure("uke writer 2000 claims ms", ms(writer));

    // Every tenant of a cluster, from the command line.
    let slugs: Vec<Slug> = (0..o.tenants)
        .map(|i| Slug::parse(&format!("cl_{i:05}")).expect("a slug"))
        .collect();
    let started = Instant::now();
    crate::stack::create_tenants(&stack.pools, &slugs, "2026-04", 2).await?;
    for slug in &slugs {
        month_of_claims(&client, &slug.schema_name(), 5).await?;
    }
    out!(
        "{} tenants with 5 claims each set up in {:.0} s",
        o.tenants,
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/recept");
    anyhow::ensure!(
        bin.is_file(),
        "build the recept binary first: cargo build --release --bin recept"
    );
    let started = Instant::now();
    let output = std::process::Command::new(&bin)
        .args([
            "claims",
            "uke",
            "--cluster",
            "main",
            "--month",
            "2026-05",
            "--payer",
            "kokuho",
            "--out",
        ])
        .arg(dir.path())
        .env("RECEPT__CLUSTERS__MAIN__URL", &stack.database_url)
        .env("RECEPT__ADMIN__TOKEN", "load-admin-token-0123456789")
        .env(
            "RECEPT__CLINIC__KEY_SECRET",
            "load-key-secret-0123456789abcdef0123",
        )
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    out!(
        "recept claims uke --cluster: {} in {:.1} s, largest resident memory {} MiB",
        said.lines().last().unwrap_or(""),
        elapsed.as_secs_f64(),
        peak_children_rss_kib() / 1024
    );
    crate::report::figure("uke cluster export seconds", elapsed.as_secs_f64());
    crate::report::figure(
        "uke cluster export max RSS MiB",
        peak_children_rss_kib() / 1024,
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sample_claim() -> recept::uke::Claim {
    let date = |d| chrono::NaiveDate::from_ymd_opt(2026, 5, d).expect("a date");
    let mut lines = Vec::new();
    for day in [1, 11, 21] {
        lines.push(recept::uke::Line {
            drug: false,
            group: "12",
            code: "112007410".into(),
            amount: None,
            points: Some(75),
            count: 1,
            day,
        });
        lines.push(recept::uke::Line {
            drug: false,
            group: "60",
            code: "160095710".into(),
            amount: None,
            points: Some(125),
            count: 2,
            day,
        });
        lines.push(recept::uke::Line {
            drug: true,
            group: "21",
            code: "620098801".into(),
            amount: Some(3),
            points: None,
            count: 14,
            day,
        });
        lines.push(recept::uke::Line {
            drug: true,
            group: "21",
            code: "620001883".into(),
            amount: Some(2),
            points: Some(9),
            count: 14,
            day,
        });
    }
    recept::uke::Claim {
        kind: 1112,
        name: "負荷 太郎".into(),
        kana: Some("フカ タロウ".into()),
        sex: 1,
        birth: chrono::NaiveDate::from_ymd_opt(1960, 1, 1).expect("a date"),
        benefit: Some(70),
        notes: Vec::new(),
        insurer: "138057".into(),
        symbol: None,
        number: None,
        days: 3,
        points: 3 * 451,
        burden: None,
        diseases: vec![recept::uke::Disease {
            code: "8833421".into(),
            start: date(1),
            outcome: 1,
            main: true,
            suspected: false,
        }],
        lines,
    }
}
