//! What a run reports: its printed lines, named figures and latencies (with
//! their per-second series), and recept's PostgreSQL backends sampled by
//! `application_name` through the run. Written at the end as a JSON summary
//! and an HTML page with charts of throughput and latency over time, under
//! `target/load-reports/` (or `RECEPT_LOAD_REPORTS`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::stats::{origin, Latencies};

#[derive(Default)]
struct Collected {
    lines: Vec<String>,
    figures: Vec<(String, Value)>,
    latencies: Vec<(String, Value)>,
    backends: Vec<Value>,
    backends_source: Option<String>,
}

static REPORT: Mutex<Option<Collected>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Collected) -> T) -> T {
    let mut report = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    f(report.get_or_insert_with(Collected::default))
}

/// Prints a line of the run's output and keeps it for the report.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        $crate::report::line(line);
    }};
}

pub fn line(text: String) {
    with(|r| r.lines.push(text));
}

/// A named figure (a ratio, a rate, a duration).
pub fn figure(name: &str, value: impl Into<Value>) {
    let value = match value.into() {
        Value::Number(n) if n.is_f64() => json!(rounded(n.as_f64().unwrap_or(0.0))),
        other => other,
    };
    with(|r| r.figures.push((name.to_string(), value)));
}

/// Named latencies, with their per-second series.
pub fn latencies(name: &str, latencies: &Latencies) {
    let value = latencies.to_json();
    with(|r| r.latencies.push((name.to_string(), value)));
}

/// Samples recept's backends in `pg_stat_activity` by `application_name`
/// every half second for as long as the process runs (a PostgreSQL that is
/// down is simply not sampled).
pub fn sample_backends(database_url: &str) {
    let url = database_url.to_string();
    with(|r| r.backends_source = Some("pg_stat_activity".into()));
    tokio::spawn(async move {
        let mut client = None;
        loop {
            if client.is_none() {
                if let Ok((c, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    client = Some(c);
                }
            }
            if let Some(c) = &client {
                match c
                    .query(
                        "SELECT application_name, count(*) FROM pg_stat_activity \
                         WHERE application_name LIKE 'recept-%' GROUP BY 1",
                        &[],
                    )
                    .await
                {
                    Ok(rows) => {
                        let mut sample = serde_json::Map::new();
                        sample.insert("t".into(), json!(origin().elapsed().as_secs_f64()));
                        for row in rows {
                            let name: String = row.get(0);
                            let count: i64 = row.get(1);
                            sample.insert(name, json!(count));
                        }
                        with(|r| r.backends.push(Value::Object(sample)));
                    }
                    Err(_) => client = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "os": std::env::consts::OS,
    })
}

/// Where reports go (made if missing).
pub fn dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("RECEPT_LOAD_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/load-reports"
            ))
        });
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes the JSON and HTML reports of `scenario`; returns their paths.
pub fn finish(scenario: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let collected = with(std::mem::take);
    let dir = dir()?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = dir.join(format!("{scenario}-{stamp}"));
    let mut backend_max: BTreeMap<String, i64> = BTreeMap::new();
    for sample in &collected.backends {
        if let Value::Object(map) = sample {
            for (name, value) in map {
                if name != "t" {
                    let entry = backend_max.entry(name.clone()).or_default();
                    *entry = (*entry).max(value.as_i64().unwrap_or(0));
                }
            }
        }
    }
    let summary = json!({
        "scenario": scenario,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "machine": machine(),
        "figures": collected.figures.iter().cloned().collect::<serde_json::Map<_, _>>(),
        "latencies": collected.latencies.iter().cloned().collect::<serde_json::Map<_, _>>(),
        "backends": {
            "source": collected.backends_source,
            "max_by_application": backend_max,
            "samples": collected.backends,
        },
        "output": collected.lines,
    });
    let json_path = base.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&summary)?)?;
    let html_path = base.with_extension("html");
    std::fs::write(&html_path, html(&summary))?;
    println!(
        "reports: {} and {}",
        json_path.display(),
        html_path.display()
    );
    Ok((json_path, html_path))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG line chart of `series` (name, points) over the run's seconds,
/// drawn by plotters: a caption, both axes labelled with their units, and a
/// legend naming each line.
fn chart(title: &str, unit: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    use plotters::prelude::*;
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x0 > x1 {
        return String::new();
    }
    let y1 = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0_f64, f64::max);
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let colours = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (720, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..y1)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc(if unit.is_empty() { "count" } else { unit })
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => format!("<figure>{svg}</figure>"),
        Err(e) => format!("<p>(chart {} not drawn: {e})</p>", escape(title)),
    }
}

/// A figure rounded to what it means: whole numbers from 100 up, one
/// decimal from 10, else two (a ratio, a share, a few milliseconds).
pub fn rounded(value: f64) -> f64 {
    let places = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn html(summary: &Value) -> String {
    let mut page = String::new();
    let scenario = summary["scenario"].as_str().unwrap_or("");
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>recept-load {0}</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:.5rem}}</style>\
         </head><body><h1>recept-load {0}</h1><p><code>{1}</code><br>{2}</p>",
        escape(scenario),
        escape(summary["command"].as_str().unwrap_or("")),
        escape(&summary["machine"].to_string())
    );
    page.push_str("<h2>Figures</h2><table>");
    if let Some(figures) = summary["figures"].as_object() {
        for (name, value) in figures {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(name),
                escape(&value.to_string())
            );
        }
    }
    page.push_str(
        "</table><h2>Latencies</h2><table><tr><th>what</th><th>ok</th><th>errors</th>\
                   <th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>",
    );
    let empty = serde_json::Map::new();
    let latencies = summary["latencies"].as_object().unwrap_or(&empty);
    for (name, l) in latencies {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            escape(name),
            l["count"],
            l["errors"],
            l["p50_ms"].as_f64().unwrap_or(0.0),
            l["p95_ms"].as_f64().unwrap_or(0.0),
            l["p99_ms"].as_f64().unwrap_or(0.0),
            l["max_ms"].as_f64().unwrap_or(0.0)
        );
    }
    page.push_str("</table><h2>Over time</h2>");
    for (name, l) in latencies {
        let points = |key: &str| -> Vec<(f64, f64)> {
            l["series"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|p| {
                            (
                                p["t"].as_f64().unwrap_or(0.0),
                                p[key].as_f64().unwrap_or(0.0),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        page.push_str(&chart(
            &format!("{name}: throughput"),
            "req/s",
            &[("ok/s", points("ok")), ("errors/s", points("errors"))],
        ));
        page.push_str(&chart(
            &format!("{name}: latency"),
            "ms",
            &[("p50", points("p50_ms")), ("p99", points("p99_ms"))],
        ));
    }
    if let Some(samples) = summary["backends"]["samples"].as_array() {
        let mut by_app: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in samples {
            let t = sample["t"].as_f64().unwrap_or(0.0);
            if let Some(map) = sample.as_object() {
                for (name, value) in map {
                    if name != "t" {
                        by_app
                            .entry(name.clone())
                            .or_default()
                            .push((t, value.as_f64().unwrap_or(0.0)));
                    }
                }
            }
        }
        let series: Vec<(&str, Vec<(f64, f64)>)> = by_app
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        page.push_str(&chart(
            "recept's PostgreSQL backends by application_name",
            "",
            &series,
        ));
    }
    let _ = write!(
        page,
        "<h2>Output</h2><pre>{}</pre></body></html>",
        escape(
            &summary["output"]
                .as_array()
                .map(|l| l
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_default()
        )
    );
    page
}
