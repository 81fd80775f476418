//! `iomodels bench --scenario rate64-100`: latency against offered load. One real run of the
//! quick ladder on two models (its JSON, table and chart), and `--results` on a JSON file
//! with a hand-made curve (the table's matrix and the chart, without running anything); a
//! results file from before the scenario existed still loads.
//!
//! Linux only, like tests/cli.rs (the bench pins and reads /proc).
#![cfg(target_os = "linux")]

mod support;

use support::{available_models, bench_results};

/// The JSON of a real `bench --quick --scenario rate64-100` on `models`, and its report.
fn quick_rate(models: &str) -> (serde_json::Value, String) {
    support::bench(&[
        "--quick",
        "--scenario",
        "rate64-100",
        "--models",
        models,
        "--repeat",
        "1",
    ])
}

#[test]
fn the_rate_scenario_climbs_a_ladder_per_model_and_draws_it() {
    let fast = if available_models().contains(&"completion-port".to_string()) {
        "completion-port"
    } else {
        "event-select"
    };
    let (v, report) = quick_rate(&format!("{fast},select"));
    let sc = &v["scenarios"][0];
    assert_eq!(sc["name"], "rate64-100");
    assert_eq!(sc["kind"], "rate");
    assert!(
        sc["description"].as_str().unwrap().contains("load --rate"),
        "{sc}"
    );
    for row in sc["rows"].as_array().unwrap() {
        let what = format!("{}", row["model"]);
        assert_eq!(row["ran"], true, "{what}: {}", row["note"]);
        assert_eq!(row["mismatches"], 0, "{what}");
        assert_eq!(row["errors"], 0, "{what}");
        let curve = &row["curve"];
        assert_eq!(curve["conns"], 100, "{what}");
        let points = curve["points"].as_array().unwrap();
        // The quick ladder: 1,000 msg/s × 2.5, at most 5 steps; it stops after a step not
        // kept, so every step but the last was kept.
        assert!((1..=5).contains(&points.len()), "{what}: {curve}");
        for (i, p) in points.iter().enumerate() {
            let want = (1000.0 * 2.5f64.powi(i as i32)).round();
            assert_eq!(p["rate_requested_per_sec"].as_f64().unwrap(), want, "{p}");
            assert_eq!(p["runs"], 1, "{p}");
            assert!(p["p99_us"]["median"].as_f64().unwrap() >= 1.0, "{p}");
            assert!(
                p["p99_us"]["median"].as_f64() >= p["p50_us"]["median"].as_f64(),
                "{p}"
            );
            if i + 1 < points.len() {
                assert_eq!(
                    p["kept"], true,
                    "{what}: step {i} not kept yet the ladder went on"
                );
            }
        }
        // 1,000 msg/s over 100 connections is kept by every model on any machine that runs
        // the tests: a saturation rate exists, and the stop reason says why it ended.
        assert_eq!(points[0]["kept"], true, "{what}: {curve}");
        assert!(
            row["msgs_per_sec"]["median"].as_f64().unwrap() > 0.0,
            "{what}"
        );
        assert!(row["stop_reason"].as_str().is_some(), "{what}");
    }
    assert!(report.contains("<h2>Latency against offered load</h2>"));
    assert!(report.contains("offered load, messages per second (log)"));
}

/// A results file with a rate scenario made by hand: `blocking` kept 1,000 and 2,000 msg/s,
/// `select` only 1,000.
fn handmade() -> serde_json::Value {
    let stat = |v: f64| serde_json::json!({"median": v, "min": v, "max": v});
    let point = |rate: f64, p50: f64, p99: f64, kept: bool| {
        serde_json::json!({
            "rate_requested_per_sec": rate,
            "rate_sent_per_sec": stat(rate),
            "rate_received_per_sec": stat(if kept { rate } else { rate / 2.0 }),
            "p50_us": stat(p50),
            "p99_us": stat(p99),
            "service_p99_us": stat(p99 / 2.0),
            "kept": kept,
            "runs": 1
        })
    };
    let row = |model: &str, points: Vec<serde_json::Value>, sat: f64| {
        serde_json::json!({
            "model": model, "ran": true,
            "msgs_per_sec": stat(sat), "mb_per_sec": null,
            "p50_us": stat(400.0), "p99_us": stat(2000.0), "p999_us": null,
            "cpu_secs_per_million": null, "server_cpu_percent": null,
            "ctx_switches_per_1k": null, "wakeups_per_msg": null, "syscalls_per_msg": null,
            "rss_per_conn_bytes": null, "conns_held": null,
            "stop_reason": "received 1,000 of 2,000 msg/s offered",
            "mismatches": 0, "errors": 0, "busy": null, "note": null,
            "curve": {
                "conns": 100, "size_bytes": 64, "step_secs": 1.0, "points": points,
                "p99_us_at_50_percent": stat(700.0), "p99_us_at_90_percent": stat(1900.0)
            }
        })
    };
    serde_json::json!({
        "machine": {"cpu_model": "test", "cores": 2, "kernel": "6", "os": "linux",
                    "placement": "test", "realtime": false},
        "date": "2026-12-05T00:00:00Z",
        "command": "iomodels bench --scenario rate64-100",
        "quick": false,
        "repeat": 1,
        "models": ["blocking", "select"],
        "scenarios": [{
            "name": "rate64-100",
            "description": "open loop",
            "kind": "rate",
            "rows": [
                row("blocking", vec![
                    point(1000.0, 300.0, 800.0, true),
                    point(2000.0, 400.0, 2000.0, true),
                    point(4000.0, 90000.0, 1500000.0, false),
                ], 2000.0),
                row("select", vec![
                    point(1000.0, 350.0, 900.0, true),
                    point(2000.0, 50000.0, 700000.0, false),
                ], 1000.0),
            ]
        }]
    })
}

#[test]
fn results_with_a_curve_print_its_matrix_and_draw_its_chart_without_running() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rate.json");
    std::fs::write(&json, handmade().to_string()).unwrap();
    let (text, report) = bench_results(&json, &[]);
    let words: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let head = words
        .iter()
        .position(|l| l == "offered msg/s blocking select")
        .unwrap_or_else(|| panic!("no matrix in:\n{text}"));
    assert_eq!(words[head + 1], "1,000 300 / 800 350 / 900");
    assert_eq!(words[head + 2], "2,000 400 / 2,000 50,000 / 700,000 !");
    assert_eq!(words[head + 3], "4,000 90,000 / 1,500,000 !");
    assert!(text.contains("saturation msg/s"), "{text}");
    assert!(report.contains("<h2>Latency against offered load</h2>"));
    assert_eq!(report.matches("<circle").count(), 5, "a dot per step");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn results_from_before_the_rate_scenario_still_load() {
    let json = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/bench-udp-2026-11-27.json"
    );
    assert!(
        !std::fs::read_to_string(json).unwrap().contains("\"curve\""),
        "the old file is expected without curves"
    );
    let (_, report) = bench_results(std::path::Path::new(json), &[]);
    assert!(!report.contains("Latency against offered load"));
}
