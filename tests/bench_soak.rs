//! `bench --scenario soak`: a short soak of one model writes the documented time series and
//! figures, with every echo right and the server alive at the end. Linux only (bench reads
//! /proc).
#![cfg(target_os = "linux")]

mod support;

#[test]
fn a_short_soak_samples_rss_and_descriptors_and_the_server_survives_the_faults() {
    let (v, report) = support::bench(&[
        "--scenario",
        "soak",
        "--duration",
        "3s",
        "--models",
        "event-select",
    ]);
    let scenarios = v["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1);
    assert_eq!(scenarios[0]["name"], "soak");
    assert_eq!(scenarios[0]["kind"], "soak");
    let rows = scenarios[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["model"], "event-select");
    assert_eq!(r["ran"], true, "did not run: {}", r["note"]);
    assert_eq!(r["mismatches"], 0, "echoed wrong bytes");
    let k = &r["soak"];
    assert_eq!(k["alive"], true, "the server did not survive");
    assert_eq!(k["duration_secs"].as_f64().unwrap(), 3.0);

    // Samples every 100 ms over 3 s, the first at 0 s and the last at the end.
    let samples = k["samples"].as_array().unwrap();
    assert!(samples.len() >= 20, "{} samples", samples.len());
    let t: Vec<f64> = samples
        .iter()
        .map(|s| s["t_secs"].as_f64().unwrap())
        .collect();
    assert!(t[0] < 0.5, "first sample at {} s", t[0]);
    assert!(*t.last().unwrap() >= 3.0, "last sample at {:?} s", t.last());
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    for s in samples {
        assert!(s["rss_bytes"].as_u64().unwrap() > 1 << 20, "{s}");
        assert!(s["fds"].as_u64().unwrap() >= 3, "{s}");
    }
    let first = &samples[0];
    let last = samples.last().unwrap();
    assert_eq!(k["rss_bytes"]["start"], first["rss_bytes"]);
    assert_eq!(k["rss_bytes"]["end"], last["rss_bytes"]);
    assert_eq!(k["fds"]["start"], first["fds"]);
    assert_eq!(k["fds"]["end"], last["fds"]);
    assert!(k["rss_bytes"]["min"].as_u64() <= k["rss_bytes"]["max"].as_u64());
    assert!(k["rss_mib_per_min"].as_f64().unwrap().is_finite());
    assert!(k["fds_per_min"].as_f64().unwrap().is_finite());

    // The steady clients echoed, and every fault client ran.
    assert!(k["echoes"].as_u64().unwrap() > 0);
    let faults = k["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 4);
    for f in faults {
        assert!(f["cycles"].as_u64().unwrap() > 0, "{f}");
        // An error count comes with the first error's text, and only then.
        let errors = f["errors"].as_u64().unwrap();
        assert_eq!(errors > 0, f["first_error"].is_string(), "{f}");
    }
    // Every client closed: the server holds no more descriptors than before the load.
    assert!(
        k["fds_after"].as_u64() <= k["fds_before"].as_u64(),
        "descriptors leaked: {} before, {} after",
        k["fds_before"],
        k["fds_after"]
    );

    assert!(report.contains("Soak: server memory over time"));
    assert!(report.contains("<svg"), "the report has no soak chart");
}
