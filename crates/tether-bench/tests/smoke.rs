//! Runs the benchmark's quick mode end to end against direct `panel serve` and tether (no
//! nginx, so `make test` needs none), and checks that every part produced numbers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

fn python() -> PathBuf {
    std::env::var_os("TETHER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

#[test]
fn quick_mode_measures_every_part() {
    let bench = env!("CARGO_BIN_EXE_tether-bench");
    // `cargo test --workspace` builds tether's binary next to ours (its own tests need it).
    let tether = Path::new(bench).with_file_name("tether");
    assert!(
        tether.is_file(),
        "no tether binary at {}; run `cargo build --bin tether` first",
        tether.display()
    );
    let out = tempfile::Builder::new()
        .prefix("tether-bench-smoke")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let status = Command::new(bench)
        .args(["--quick", "--setups", "direct,tether", "--tether"])
        .arg(&tether)
        .arg("--python")
        .arg(python())
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("tether-bench runs");
    eprintln!("quick benchmark took {:?}", started.elapsed());
    assert!(status.success(), "tether-bench --quick failed: {status}");

    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let rows = [
        "page_load_ms",
        "round_trip_ms",
        "large_patch_ms",
        "standin_round_trip_ms",
    ];
    for row in rows {
        for setup in ["direct", "tether"] {
            let s = &v[row][setup];
            assert!(s["n"].as_u64().unwrap_or(0) > 0, "{row} {setup}: {s}");
            assert!(
                s["median_ms"].as_f64().unwrap_or(0.0) > 0.0,
                "{row} {setup}: {s}"
            );
        }
    }
    assert!(v["large_patch_bytes"].as_u64().unwrap() > 100_000);
    assert!(v["cpu_per_message"]["tether"]["count"].as_u64().unwrap() >= 200);
    assert!(
        v["cpu_per_large_patch"]["tether"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
    for steps in ["10", "100"] {
        let r = &v["restore"]["by_steps"][steps];
        let n = r["n"].as_u64().unwrap();
        assert!(n > 0, "restore {steps}: {r}");
        assert_eq!(
            r["applied_total"].as_u64().unwrap(),
            n * steps.parse::<u64>().unwrap(),
            "every recorded step is replayed: {r}"
        );
    }
    assert_eq!(v["idle"]["reached"], 200, "{}", v["idle"]);
    assert!(v["idle"]["rss_kib_per_tab"].as_f64().unwrap() > 0.0);
    // The session cache: a live session of the demo app costs its worker memory, and the
    // flood against a bound of a few sessions is served.
    let cache = &v["session_cache"];
    assert!(
        cache["per_session_kib"].as_f64().unwrap_or(0.0) > 0.0,
        "{cache}"
    );
    assert!(cache["served"].as_u64().unwrap_or(0) > 0, "{cache}");
    // The cost curve: each point has round trips through both setups and tether's CPU.
    let curve = v["active_tabs_curve"].as_array().expect("a cost curve");
    assert_eq!(curve.len(), 2, "{curve:?}");
    for point in curve {
        for setup in ["direct", "tether"] {
            assert!(
                point["round_trip_ms"][setup]["n"].as_u64().unwrap_or(0) > 0,
                "{point}"
            );
        }
        assert!(
            point["cpu"]["tether"]["count"].as_u64().unwrap_or(0) > 0,
            "{point}"
        );
    }
    assert!(std::fs::read_to_string(out.path().join("results.md"))
        .unwrap()
        .contains("| widget round trip | tether |"));
}
