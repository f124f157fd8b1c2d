//! The national basic master files, in their exact layout (Shift_JIS, every
//! field quoted, no header), imported as a release that prices as the
//! equivalent recept CSV does.

use recept::audit::Actor;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// A row of `columns` quoted fields with `set` filled in, Shift_JIS, CRLF.
fn row(columns: usize, set: &[(usize, &str)]) -> Vec<u8> {
    let mut fields = vec![String::new(); columns];
    for (i, value) in set {
        fields[*i] = (*value).to_string();
    }
    let line = fields
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(",")
        + "\r\n";
    encoding_rs::SHIFT_JIS.encode(&line).0.into_owned()
}

fn procedure(code: &str, name: &str, kind: &str, points: &str, from: &str, to: &str) -> Vec<u8> {
    row(
        150,
        &[
            (0, "0"),
            (1, "S"),
            (2, code),
            (4, name),
            (10, kind),
            (11, points),
            (86, from),
            (87, to),
            (112, name),
        ],
    )
}

fn drug(code: &str, name: &str, price: &str, from: &str) -> Vec<u8> {
    row(
        42,
        &[
            (0, "0"),
            (1, "Y"),
            (2, code),
            (4, name),
            (10, "1"),
            (11, price),
            (29, from),
            (30, "99999999"),
            (34, name),
        ],
    )
}

fn disease(code: &str, name: &str, from: &str) -> Vec<u8> {
    row(
        40,
        &[
            (0, "0"),
            (1, "B"),
            (2, code),
            (5, name),
            (7, name),
            (21, from),
            (22, from),
            (23, "99999999"),
        ],
    )
}

fn write_dir(files: &[(&str, Vec<Vec<u8>>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, rows) in files {
        std::fs::write(dir.path().join(name), rows.concat()).unwrap();
    }
    dir
}

/// The same items as the official files below, as a recept release CSV.
const EQUIVALENT: &str = "code,kind,name,points,unit_price_yen,valid_from,valid_to\n\
    112007410,procedure,再診料,73,,2024-06-01,2026-05-31\n\
    112007410,procedure,再診料,75,,2026-06-01,\n\
    160095710,procedure,血液学的検査判断料,125,,2024-06-01,\n\
    620098801,drug,ロキソプロフェンＮａ錠６０ｍｇ,,10.10,2024-04-01,\n\
    620001883,drug,クラリスロマイシン錠２００ｍｇ,,27.90,2024-04-01,\n\
    8833421,disease,高血圧症,,,2024-04-01,\n";

async fn visit_points(app: &TestApp, release: &str) -> (i64, String) {
    let (_, key) = app.tenant_on_release("official", release).await;
    let patient = app.insured_patient(&key, "公式 太郎").await;
    let response = app
        .clinic_request(reqwest::Method::POST, "/v1/encounters", &key)
        .json(&json!({"patient_id": patient, "date": "2026-07-01", "diagnoses": ["8833421"],
            "items": [{"code": "112007410", "quantity": 1}, {"code": "160095710", "quantity": 2}],
            "drug_units": [{"kind": "internal", "days": 14,
                "drugs": [{"code": "620098801", "quantity": 3}, {"code": "620001883", "quantity": 2}]}]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    (
        body["total_points"].as_i64().expect("priced"),
        body["diagnoses"][0]["name"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn official_master_files_import_into_a_release_that_prices_as_the_equivalent_csv() {
    let app = spawn_app().await;
    let dir = write_dir(&[
        (
            "s_20260601.csv",
            vec![
                procedure("112007410", "再診料", "3", "73.00", "20240601", "20260601"),
                procedure("112007410", "再診料", "3", "75.00", "20260601", "99999999"),
                procedure(
                    "160095710",
                    "血液学的検査判断料",
                    "3",
                    "125",
                    "20240601",
                    "99999999",
                ),
                // A % addition and a deleted row: left out, counted.
                procedure("112000000", "加算", "5", "50", "20240601", "99999999"),
                {
                    let mut deleted =
                        procedure("112999999", "抹消", "3", "1", "20240601", "99999999");
                    deleted[1] = b'1';
                    deleted
                },
            ],
        ),
        (
            "y_20260601.csv",
            vec![
                drug(
                    "620098801",
                    "ロキソプロフェンＮａ錠６０ｍｇ",
                    "10.10",
                    "20240401",
                ),
                drug(
                    "620001883",
                    "クラリスロマイシン錠２００ｍｇ",
                    "27.90",
                    "20240401",
                ),
            ],
        ),
        (
            "b_20260601.csv",
            vec![disease("8833421", "高血圧症", "20240401")],
        ),
    ]);
    let pools = app.app_state.pools.clone();
    let (summary, read) = recept::master::import_official_dir(
        &pools,
        dir.path(),
        "official-2026-06",
        &Actor::operator(),
    )
    .await
    .unwrap();
    assert_eq!(summary.items, 6);
    assert_eq!((read.unpriced, read.deleted), (1, 1));
    assert_eq!(
        read.files.iter().map(|f| f.1).collect::<Vec<_>>(),
        [40, 150, 42]
    );
    let imported = app.import_release("csv-2026-06", EQUIVALENT).await;
    assert_eq!(imported.status(), reqwest::StatusCode::CREATED);

    let official = visit_points(&app, "official-2026-06").await;
    let csv = visit_points(&app, "csv-2026-06").await;
    // 75 + 2 × 125 + 126 (the drug unit) = 451 points, either way.
    assert_eq!(official, csv);
    assert_eq!(official.0, 451);
}

#[tokio::test]
async fn a_bad_row_refuses_the_whole_set_naming_file_and_line() {
    let app = spawn_app().await;
    let dir = write_dir(&[
        (
            "s_20260601.csv",
            vec![
                procedure("112007410", "再診料", "3", "75", "20260601", "99999999"),
                procedure("11200741X", "再診料", "3", "75", "20260601", "99999999"),
            ],
        ),
        (
            "y_20260601.csv",
            vec![drug("620098801", "ロキソプロフェン", "10.1.0", "20240401")],
        ),
        (
            "b_20260601.csv",
            vec![row(10, &[(0, "0"), (1, "B"), (2, "8833421")])],
        ),
    ]);
    let pools = app.app_state.pools.clone();
    let refused =
        recept::master::import_official_dir(&pools, dir.path(), "bad-2026-06", &Actor::operator())
            .await
            .unwrap_err()
            .to_string();
    for expected in [
        "s_20260601.csv line 2",
        "y_20260601.csv line 1",
        "b_20260601.csv line 1",
        "older edition",
    ] {
        assert!(refused.contains(expected), "{expected}: {refused}");
    }
    let releases = app.admin_json("/admin/master/releases").await;
    assert_eq!(releases["releases"], json!([]), "nothing was imported");
    // A directory without the three masters is refused too.
    let empty = tempfile::tempdir().unwrap();
    let missing =
        recept::master::import_official_dir(&pools, empty.path(), "none", &Actor::operator())
            .await
            .unwrap_err()
            .to_string();
    assert!(missing.contains("s_*.csv"), "{missing}");
}
