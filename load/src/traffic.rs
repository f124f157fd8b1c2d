//! Closed-loop clinic traffic over HTTP, shared by the scenarios.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recept::pools::Role;
use recept::tenancy::{Registry, Slug};
use serde_json::json;

use crate::stack::Stack;
use crate::stats::Latencies;

/// A key and a patient for each of `slugs`, made through the library and
/// the clinic API.
pub async fn clinics(stack: &Stack, slugs: &[Slug]) -> anyhow::Result<Arc<Vec<(String, String)>>> {
    let mut keys = Vec::new();
    for slug in slugs {
        let client = stack.pools.control(Role::Admin).await?;
        let tenant = Registry::find(&client, slug)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no tenant {slug}"))?;
        let key = stack.keys.issue();
        Registry::insert_key(&client, tenant.id, &key, Some("load")).await?;
        keys.push(key.secret);
    }
    Ok(Arc::new(clinics_for_keys(stack, keys).await?))
}

/// A patient registered through the clinic API for each key: (key, patient).
pub async fn clinics_for_keys(
    stack: &Stack,
    keys: Vec<String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let http = reqwest::Client::new();
    let mut clinics = Vec::new();
    for key in keys {
        let patient: serde_json::Value = http
            .post(format!("{}/v1/patients", stack.clinic))
            .bearer_auth(&key)
            .json(&json!({"name": "負荷 太郎", "birth_date": "1970-01-01", "sex": "male",
                          "insurances": [{"insurer_number": "06132013", "copay_rate": 30, "valid_from": "2020-01-01"}]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = patient["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no patient id in {patient}"))?;
        clinics.push((key, id.to_string()));
    }
    Ok(clinics)
}

pub enum Phase {
    For(Duration),
    Until(Arc<AtomicBool>),
}

impl Phase {
    fn over(&self, started: Instant) -> bool {
        match self {
            Phase::For(d) => started.elapsed() >= *d,
            Phase::Until(flag) => flag.load(Ordering::SeqCst),
        }
    }
}

/// Closed-loop clinic traffic: each client alternates a master lookup and
/// an encounter with five lines, on one of the clinics, until the phase ends
/// (and never longer than ten minutes).
pub async fn run(
    base: &str,
    clinics: &Arc<Vec<(String, String)>>,
    clients: usize,
    phase: Phase,
) -> Latencies {
    let phase = Arc::new(phase);
    let started = Instant::now();
    let workers = (0..clients).map(|w| {
        let http = reqwest::Client::new();
        let clinics = clinics.clone();
        let phase = phase.clone();
        let base = base.to_string();
        tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut i = w;
            while !phase.over(started) && started.elapsed() < Duration::from_secs(600) {
                let (key, patient) = &clinics[i % clinics.len()];
                let t = Instant::now();
                let ok = if i % 2 == 0 {
                    http.get(format!("{base}/v1/master/items?code=620098801&on=2026-07-01"))
                        .bearer_auth(key)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                } else {
                    http.post(format!("{base}/v1/encounters"))
                        .bearer_auth(key)
                        .json(&json!({"patient_id": patient, "date": "2026-07-01", "diagnoses": ["8833421"],
                            "items": [{"code": "112007410", "quantity": 1}, {"code": "120000710", "quantity": 1},
                                      {"code": "620098801", "quantity": 14}, {"code": "620004856", "quantity": 28},
                                      {"code": "160000310", "quantity": 1}]}))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                };
                if ok {
                    latencies.record(t.elapsed());
                } else {
                    latencies.error();
                }
                i += clients;
            }
            latencies
        })
    });
    crate::stats::gather(workers).await
}

/// Open-loop clinic traffic: `rate` requests a second for `duration`,
/// each sent at its scheduled time whatever the others do, and timed from
/// that schedule (no coordinated omission). Alternates a master lookup and
/// a patient read. At most 512 requests are in flight; one that would pass
/// that counts as an error.
pub async fn open_loop(
    base: &str,
    clinics: &Arc<Vec<(String, String)>>,
    rate: u32,
    duration: Duration,
) -> Latencies {
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut refused = Latencies::default();
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            refused.error();
            continue;
        };
        let (key, patient) = clinics[n as usize % clinics.len()].clone();
        let http = http.clone();
        let url = if n % 2 == 0 {
            format!("{base}/v1/master/items?code=620098801&on=2026-07-01")
        } else {
            format!("{base}/v1/patients/{patient}")
        };
        tasks.push(tokio::spawn(async move {
            let ok = http
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            drop(permit);
            (ok, scheduled.elapsed())
        }));
    }
    let mut all = refused;
    for task in futures::future::join_all(tasks).await.into_iter().flatten() {
        match task {
            (true, elapsed) => all.record(elapsed),
            (false, _) => all.error(),
        }
    }
    all
}
