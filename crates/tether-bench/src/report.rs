//! The results: a Markdown report for people, JSON for tools, and the targets checked.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::idle::Idle;
use crate::restore::Restores;
use crate::scenarios::ThreeWay;
use crate::setups::Kind;
use crate::stats::{summarize, Row};

/// Everything one run measured.
pub struct Results {
    /// Facts about the run: mode, binaries, machine.
    pub facts: Vec<(String, String)>,
    pub three_way: Option<ThreeWay>,
    pub restores: Option<Restores>,
    pub idle: Option<Idle>,
    /// Wall time of the whole run, in seconds.
    pub runtime_secs: f64,
}

/// One target and whether it was met.
pub struct Target {
    pub what: &'static str,
    pub value: String,
    /// None when this run did not measure it.
    pub met: Option<bool>,
}

fn median(row: &Row, k: Kind) -> Option<f64> {
    row.summary(k).map(|s| s.median)
}

fn p99(row: &Row, k: Kind) -> Option<f64> {
    row.summary(k).map(|s| s.p99)
}

/// Picks one measurement out of the three-way results.
type RowOf = fn(&ThreeWay) -> &Row;

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

impl Results {
    /// The targets, checked against this run.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let tw = self.three_way.as_ref();
        let ratio = |row: RowOf, what: &'static str, bound: f64| {
            let r = tw
                .and_then(|w| Some(median(row(w), Kind::Tether)? / median(row(w), Kind::Direct)?));
            Target {
                what,
                value: r.map_or("-".into(), |r| format!("{:+.1}% median", (r - 1.0) * 100.0)),
                met: r.map(|r| r <= bound),
            }
        };
        t.push(ratio(
            |w| &w.page,
            "tether adds <= 2% to page load plus pull",
            1.02,
        ));
        let rt = tw.and_then(|w| {
            Some(p99(&w.round_trip, Kind::Tether)? - p99(&w.round_trip, Kind::Direct)?)
        });
        t.push(Target {
            what: "tether adds <= 100 us p99 to a widget round trip",
            value: rt.map_or("-".into(), |d| format!("{:+.0} us p99", d * 1000.0)),
            met: rt.map(|d| d <= 0.1),
        });
        t.push(ratio(
            |w| &w.patch,
            "tether adds <= 5% to a large patch",
            1.05,
        ));
        let rows: [(&'static str, RowOf); 3] = [
            ("tether no slower than nginx: page load (median)", |w| {
                &w.page
            }),
            ("tether no slower than nginx: round trip (median)", |w| {
                &w.round_trip
            }),
            ("tether no slower than nginx: large patch (median)", |w| {
                &w.patch
            }),
        ];
        for (what, row) in rows {
            let r =
                tw.and_then(|w| Some(median(row(w), Kind::Tether)? / median(row(w), Kind::Nginx)?));
            t.push(Target {
                what,
                value: r.map_or("-".into(), |r| format!("{r:.3}x nginx")),
                met: r.map(|r| r <= 1.0),
            });
        }
        let rs = self.restores.as_ref().and_then(|r| {
            let cold = summarize(&r.cold).median;
            Some(summarize(r.restore.get(&100)?).median / cold)
        });
        t.push(Target {
            what: "restore of 100 steps <= 1.5x a cold page load",
            value: rs.map_or("-".into(), |r| format!("{r:.2}x cold")),
            met: rs.map(|r| r <= 1.5),
        });
        let kib = self.idle.as_ref().map(Idle::per_tab_kib);
        t.push(Target {
            what: "<= 20 KiB RSS per idle websocket",
            value: kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            met: kib.map(|k| k <= 20.0),
        });
        t
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "facts": self.facts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "runtime_secs": self.runtime_secs,
        });
        if let Some(w) = &self.three_way {
            v["page_load_ms"] = w.page.to_json();
            v["round_trip_ms"] = w.round_trip.to_json();
            v["large_patch_ms"] = w.patch.to_json();
            v["large_patch_bytes"] = json!(w.patch_bytes);
            v["cpu"] = w
                .cpu
                .iter()
                .map(|(k, c)| {
                    (
                        k.name().to_owned(),
                        json!({
                            "messages": c.messages, "cpu_ms": c.cpu_ms, "wall_ms": c.wall_ms,
                            "cpu_ms_per_1000_messages": c.per_thousand_ms(),
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(r) = &self.restores {
            let cold = summarize(&r.cold);
            v["restore"] = json!({
                "cold_ms": {"n": cold.n, "median": cold.median, "p99": cold.p99},
                "by_steps": r.restore.iter().map(|(n, s)| {
                    let s = summarize(s);
                    let inside = summarize(r.inside.get(n).map_or(&[][..], |v| v));
                    let (a, k) = r.applied.get(n).copied().unwrap_or_default();
                    (n.to_string(), json!({"n": s.n, "median_ms": s.median, "p99_ms": s.p99,
                        "ratio_to_cold": s.median / cold.median, "tether_restore_median_ms": inside.median,
                        "worker_live_apply_median_ms": summarize(r.live.get(n).map_or(&[][..], |v| v)).median,
                        "applied_total": a, "skipped_total": k}))
                }).collect::<serde_json::Map<_, _>>(),
            });
        }
        if let Some(i) = &self.idle {
            v["idle"] = json!({"target": i.target, "reached": i.reached, "capped_by": i.capped_by,
                "baseline_rss_kib": i.baseline_kib, "points": i.points, "rss_kib_per_tab": i.per_tab_kib(),
                "open_secs": i.open_secs});
        }
        v["targets"] = self
            .targets()
            .iter()
            .map(|t| json!({"target": t.what, "value": t.value, "met": t.met}))
            .collect();
        v
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# tether-bench results\n\n");
        for (k, v) in &self.facts {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s, "- runtime: {:.0} s\n", self.runtime_secs);
        if let Some(w) = &self.three_way {
            s.push_str("## Three setups, interleaved (milliseconds)\n\n");
            s.push_str(
                "| measurement | setup | n | median | p99 | median / direct | p99 / direct |\n",
            );
            s.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
            let patch_name = format!("large patch ({:.1} MB JSON)", w.patch_bytes as f64 / 1e6);
            for (name, row) in [
                ("page load + pull", &w.page),
                ("widget round trip", &w.round_trip),
                (patch_name.as_str(), &w.patch),
            ] {
                let direct = row.summary(Kind::Direct);
                for kind in row.samples.keys() {
                    let x = row.summary(*kind).unwrap_or_default();
                    let (rm, rp) = direct.map_or(("-".into(), "-".into()), |d| {
                        (
                            format!("{:.3}", x.median / d.median),
                            format!("{:.3}", x.p99 / d.p99),
                        )
                    });
                    let _ = writeln!(
                        s,
                        "| {name} | {kind} | {} | {:.2} | {:.2} | {rm} | {rp} |",
                        x.n, x.median, x.p99
                    );
                }
            }
            if !w.cpu.is_empty() {
                s.push_str("\n## Proxy CPU per 1,000 Bokeh messages (user + system)\n\n");
                s.push_str("| setup | messages | CPU ms | wall ms | CPU ms per 1,000 messages |\n| --- | ---: | ---: | ---: | ---: |\n");
                for (k, c) in &w.cpu {
                    let _ = writeln!(
                        s,
                        "| {k} | {} | {:.0} | {:.0} | {:.1} |",
                        c.messages,
                        c.cpu_ms,
                        c.wall_ms,
                        c.per_thousand_ms()
                    );
                }
            }
        }
        if let Some(r) = &self.restores {
            let cold = summarize(&r.cold);
            s.push_str("\n## Restore after a restart (tether; page load + pull, milliseconds)\n\n");
            s.push_str("| state log | n | median | p99 | median / cold | tether's restore (its log), median | steps applied / skipped per restore |\n");
            s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            let _ = writeln!(
                s,
                "| cold page load | {} | {:.2} | {:.2} | 1.000 | - | - |",
                cold.n, cold.median, cold.p99
            );
            for (n, v) in &r.restore {
                let x = summarize(v);
                let inside = summarize(r.inside.get(n).map_or(&[][..], |v| v));
                let (a, k) = r.applied.get(n).copied().unwrap_or_default();
                let per = x.n.max(1);
                let _ = writeln!(
                    s,
                    "| {n} steps | {} | {:.2} | {:.2} | {:.3} | {:.0} | {} / {} |",
                    x.n,
                    x.median,
                    x.p99,
                    x.median / cold.median,
                    inside.median,
                    a / per,
                    k / per
                );
            }
        }
        if let Some(i) = &self.idle {
            s.push_str("\n## Idle websockets (tether with a stand-in worker)\n\n");
            let _ = writeln!(
                s,
                "- asked for {} idle tabs, held {} (opened in {:.1} s)",
                i.target, i.reached, i.open_secs
            );
            if let Some(why) = &i.capped_by {
                let _ = writeln!(s, "- capped: {why}");
            }
            let _ = writeln!(s, "- tether RSS before the tabs: {} KiB\n", i.baseline_kib);
            s.push_str(
                "| idle tabs | tether RSS (KiB) | added per tab (KiB) |\n| ---: | ---: | ---: |\n",
            );
            for (n, rss) in &i.points {
                let _ = writeln!(
                    s,
                    "| {n} | {rss} | {:.1} |",
                    (*rss as f64 - i.baseline_kib as f64) / *n as f64
                );
            }
        }
        s.push_str("\n## Targets\n\n| target | this run | verdict |\n| --- | --- | --- |\n");
        for t in self.targets() {
            let _ = writeln!(s, "| {} | {} | {} |", t.what, t.value, verdict(t.met));
        }
        s
    }
}
