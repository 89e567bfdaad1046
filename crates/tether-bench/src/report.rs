//! The results: a Markdown report for people, JSON for tools, and the targets checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cache::Cache;
use crate::restore::Restores;
use crate::scenarios::{Cpu, ThreeWay};
use crate::setups::Kind;
use crate::standin::{Idle, StandIn};
use crate::stats::{summarize, Row, Steps};

/// Everything one run measured.
pub struct Results {
    /// Facts about the run: mode, binaries, machine.
    pub facts: Vec<(String, String)>,
    pub three_way: Option<ThreeWay>,
    pub restores: Option<Restores>,
    pub standin: Option<StandIn>,
    pub cache: Option<Cache>,
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

/// Picks one measurement out of the results.
type RowOf = fn(&Results) -> Option<&Row>;

fn median(row: &Row, k: Kind) -> Option<f64> {
    row.summary(k).map(|s| s.median)
}

fn p99(row: &Row, k: Kind) -> Option<f64> {
    row.summary(k).map(|s| s.p99)
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

fn page(r: &Results) -> Option<&Row> {
    r.three_way.as_ref().map(|w| &w.page)
}
fn round_trip(r: &Results) -> Option<&Row> {
    r.three_way.as_ref().map(|w| &w.round_trip)
}
fn patch(r: &Results) -> Option<&Row> {
    r.three_way.as_ref().map(|w| &w.patch)
}
fn echo(r: &Results) -> Option<&Row> {
    r.standin.as_ref().map(|s| &s.echo)
}

fn idle(r: &Results) -> Option<&Idle> {
    r.standin.as_ref()?.idle.as_ref()
}

fn cpu_json(cpu: &BTreeMap<Kind, Cpu>) -> Value {
    cpu.iter()
        .map(|(k, c)| {
            let v = json!({"count": c.messages, "cpu_ms": c.cpu_ms, "wall_ms": c.wall_ms,
                "cpu_ms_per_1000": c.per_thousand_ms()});
            (k.name().to_owned(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn steps_json(s: &Steps) -> Value {
    let [page, socket, pull] = s.medians();
    json!({"page_get_median_ms": page, "socket_and_ack_median_ms": socket, "pull_median_ms": pull})
}

impl Results {
    /// The targets, checked against this run.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let ratio = |row: RowOf, what: &'static str, bound: f64| {
            let r =
                row(self).and_then(|r| Some(median(r, Kind::Tether)? / median(r, Kind::Direct)?));
            Target {
                what,
                value: r.map_or("-".into(), |r| format!("{:+.1}% median", (r - 1.0) * 100.0)),
                met: r.map(|r| r <= bound),
            }
        };
        t.push(ratio(
            page,
            "page load + pull at or below direct (median)",
            1.0,
        ));
        t.push(ratio(
            round_trip,
            "widget round trip at or below direct (median)",
            1.0,
        ));
        t.push(ratio(patch, "large patch <= 1.05x direct (median)", 1.05));
        let vs_nginx =
            patch(self).and_then(|r| Some(median(r, Kind::Tether)? / median(r, Kind::Nginx)?));
        t.push(Target {
            what: "large patch <= nginx (median)",
            value: vs_nginx.map_or("-".into(), |r| format!("{r:.3}x nginx")),
            met: vs_nginx.map(|r| r <= 1.0),
        });
        let cpu = self.three_way.as_ref().and_then(|w| {
            Some(
                w.cpu.get(&Kind::Tether)?.per_thousand_ms()
                    / w.cpu.get(&Kind::Nginx)?.per_thousand_ms(),
            )
        });
        t.push(Target {
            what: "proxy CPU per 1,000 messages <= 2x nginx's",
            value: cpu.map_or("-".into(), |r| format!("{r:.2}x nginx")),
            met: cpu.map(|r| r <= 2.0),
        });
        for (what, stat) in [
            (
                "stand-in round trip: tether's addition <= nginx's (p50)",
                median as fn(&Row, Kind) -> Option<f64>,
            ),
            (
                "stand-in round trip: tether's addition <= nginx's (p99)",
                p99,
            ),
        ] {
            let added = echo(self).and_then(|r| {
                let direct = stat(r, Kind::Direct)?;
                Some((
                    (stat(r, Kind::Tether)? - direct),
                    (stat(r, Kind::Nginx)? - direct),
                ))
            });
            t.push(Target {
                what,
                value: added.map_or("-".into(), |(a, n)| {
                    format!("+{:.0} us against +{:.0} us", a * 1000.0, n * 1000.0)
                }),
                met: added.map(|(a, n)| a <= n),
            });
        }
        let flat = self.standin.as_ref().and_then(|s| {
            let per =
                |a: &crate::standin::Active| Some(a.cpu.get(&Kind::Tether)?.per_thousand_ms());
            let (first, last) = (s.curve.first()?, s.curve.last()?);
            (s.curve.len() > 1).then_some((last.tabs, per(last)? / per(first)?))
        });
        t.push(Target {
            what: "flat CPU per message from the fewest to the most active tabs (within 1.5x)",
            value: flat.map_or("-".into(), |(n, r)| format!("{r:.2}x at {n} tabs")),
            met: flat.map(|(_, r)| r <= 1.5),
        });
        let rs = self.restores.as_ref().and_then(|r| {
            let cold = summarize(&r.cold).median;
            Some(summarize(r.restore.get(&100)?).median / cold)
        });
        t.push(Target {
            what: "restore of 100 steps <= 1.5x a cold page load",
            value: rs.map_or("-".into(), |r| format!("{r:.2}x cold")),
            met: rs.map(|r| r <= 1.5),
        });
        if let Some(r) = &self.restores {
            for (n, inside) in &r.inside {
                let live = summarize(r.live.get(n).map_or(&[][..], |v| v)).median;
                let added = summarize(inside).median - live;
                t.push(Target {
                    what: match n {
                        10 => "restore of 10 steps: tether adds < 30 ms to the worker's own time",
                        100 => "restore of 100 steps: tether adds < 30 ms to the worker's own time",
                        _ => "restore of 1,000 steps: tether adds < 30 ms to the worker's own time",
                    },
                    value: format!("{added:+.0} ms"),
                    met: Some(added < 30.0),
                });
            }
            for sr in &r.sessions {
                let cold = summarize(&sr.cold).median;
                let restore = summarize(&sr.restore).median;
                let (what, value, met) = if sr.label.contains("periodic") {
                    (
                        "periodic app, 5 steps: restore <= cold page + 300 ms",
                        format!("{:+.0} ms over cold", restore - cold),
                        restore - cold <= 300.0,
                    )
                } else {
                    (
                        "realistic session restored with its page <= 1.5x a cold page load",
                        format!("{:.2}x cold", restore / cold),
                        restore / cold <= 1.5,
                    )
                };
                t.push(Target {
                    what,
                    value,
                    met: (!sr.restore.is_empty()).then_some(met),
                });
            }
        }
        if let Some(c) = &self.cache {
            t.push(Target {
                what:
                    "a flood of new visitors under --worker-memory: no 503, memory under the bound",
                value: format!(
                    "{} refused, peak {:.1}% of the bound",
                    c.refused,
                    c.peak_percent()
                ),
                met: Some(c.refused == 0 && c.peak_kib <= c.bound_kib),
            });
        }
        let kib = idle(self).map(Idle::per_tab_kib);
        t.push(Target {
            what: "<= 16 KiB RSS per idle websocket",
            value: kib.map_or("-".into(), |k| format!("{k:.1} KiB")),
            met: kib.map(|k| k <= 16.0),
        });
        t
    }

    pub fn to_json(&self) -> Value {
        let facts: serde_json::Map<_, _> = self
            .facts
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut v = json!({"facts": facts, "runtime_secs": self.runtime_secs});
        if let Some(w) = &self.three_way {
            v["page_load_ms"] = w.page.to_json();
            v["page_load_steps"] = w
                .page_steps
                .iter()
                .map(|(k, s)| (k.name().to_owned(), steps_json(s)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            v["round_trip_ms"] = w.round_trip.to_json();
            v["large_patch_ms"] = w.patch.to_json();
            v["large_patch_bytes"] = json!(w.patch_bytes);
            v["cpu_per_message"] = cpu_json(&w.cpu);
            v["cpu_per_large_patch"] = cpu_json(&w.patch_cpu);
        }
        if let Some(c) = &self.cache {
            v["session_cache"] = json!({"first_kib": c.first_kib, "per_session_kib": c.per_session_kib,
                "sessions": c.sessions, "bound_kib": c.bound_kib, "served": c.served,
                "refused": c.refused, "peak_kib": c.peak_kib, "evicted": c.evicted});
        }
        if let Some(s) = &self.standin {
            v["standin_round_trip_ms"] = s.echo.to_json();
            v["active_tabs_curve"] = s
                .curve
                .iter()
                .map(|p| json!({"tabs": p.tabs, "round_trip_ms": p.round_trip.to_json(), "cpu": cpu_json(&p.cpu)}))
                .collect::<Vec<_>>()
                .into();
        }
        if let Some(r) = &self.restores {
            let cold = summarize(&r.cold);
            let sizes: serde_json::Map<_, _> = r
                .restore
                .iter()
                .map(|(n, s)| {
                    let s = summarize(s);
                    let of = |m: &BTreeMap<usize, Vec<f64>>| {
                        summarize(m.get(n).map_or(&[][..], |v| v)).median
                    };
                    let (a, k) = r.applied.get(n).copied().unwrap_or_default();
                    let v = json!({"n": s.n, "median_ms": s.median, "p99_ms": s.p99,
                        "ratio_to_cold": s.median / cold.median,
                        "tether_restore_median_ms": of(&r.inside),
                        "worker_live_apply_median_ms": of(&r.live),
                        "steps": r.steps.get(n).map(steps_json),
                        "applied_total": a, "skipped_total": k});
                    (n.to_string(), v)
                })
                .collect();
            let sessions: Vec<Value> = r
                .sessions
                .iter()
                .map(|sr| {
                    let (c, x) = (summarize(&sr.cold), summarize(&sr.restore));
                    json!({"session": sr.label, "n": x.n, "cold_median_ms": c.median,
                        "median_ms": x.median, "p99_ms": x.p99,
                        "tether_restore_median_ms": summarize(&sr.inside).median,
                        "applied_total": sr.applied.0, "skipped_total": sr.applied.1})
                })
                .collect();
            v["restore"] = json!({
                "cold_ms": {"n": cold.n, "median": cold.median, "p99": cold.p99,
                    "steps": steps_json(&r.cold_steps)},
                "by_steps": sizes,
                "sessions": sessions,
            });
        }
        if let Some(i) = idle(self) {
            v["idle"] = json!({"target": i.target, "reached": i.reached, "capped_by": i.capped_by,
                "baseline_rss_kib": i.baseline_kib, "points": i.points,
                "rss_kib_per_tab": i.per_tab_kib(), "open_secs": i.open_secs});
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
        s.push_str("## Three setups, interleaved (milliseconds)\n\n");
        s.push_str("| measurement | setup | n | median | p99 | median / direct | p99 / direct |\n");
        s.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        if let Some(w) = &self.three_way {
            let patch_name = format!("large patch ({:.1} MB JSON)", w.patch_bytes as f64 / 1e6);
            table_rows(&mut s, "page load + pull", &w.page);
            table_rows(&mut s, "widget round trip", &w.round_trip);
            table_rows(&mut s, &patch_name, &w.patch);
        }
        if let Some(st) = &self.standin {
            table_rows(&mut s, "round trip, stand-in worker", &st.echo);
        }
        if let Some(w) = &self.three_way {
            s.push_str("\n### Page load steps (medians, milliseconds)\n\n");
            s.push_str(
                "| setup | page GET | websocket + ACK | pull |\n| --- | ---: | ---: | ---: |\n",
            );
            for (k, st) in &w.page_steps {
                let [a, b, c] = st.medians();
                let _ = writeln!(s, "| {k} | {a:.2} | {b:.2} | {c:.2} |");
            }
            cpu_table(
                &mut s,
                "Proxy CPU per 1,000 Bokeh messages",
                "messages",
                "per 1,000 messages",
                1000.0,
                &w.cpu,
            );
            cpu_table(
                &mut s,
                "Proxy CPU per large patch",
                "patches",
                "per patch",
                1.0,
                &w.patch_cpu,
            );
        }
        if let Some(r) = &self.restores {
            restore_tables(&mut s, r);
        }
        if let Some(i) = idle(self) {
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
                let per = (*rss as f64 - i.baseline_kib as f64) / *n as f64;
                let _ = writeln!(s, "| {n} | {rss} | {per:.1} |");
            }
        }
        if let Some(st) = self.standin.as_ref().filter(|st| !st.curve.is_empty()) {
            curve_table(&mut s, &st.curve);
        }
        if let Some(c) = &self.cache {
            let _ = write!(
                s,
                "\n## Live sessions as a cache (tether, demo app, one Panel worker)\n\n\
                 - worker memory with its first session: {} KiB; each further live session \
                 added {:.0} KiB (over {} sessions)\n\
                 - `--worker-memory {}KiB` (the first session and {:.0} more): {} new visitors \
                 served, {} refused; the worker's memory peaked at {} KiB ({:.1}% of the \
                 bound); {} idle sessions dropped for memory\n",
                c.first_kib,
                c.per_session_kib,
                c.sessions,
                c.bound_kib,
                (c.bound_kib - c.first_kib) as f64 / c.per_session_kib.max(64.0),
                c.served,
                c.refused,
                c.peak_kib,
                c.peak_percent(),
                c.evicted
            );
        }
        s.push_str("\n## Targets\n\n| target | this run | verdict |\n| --- | --- | --- |\n");
        for t in self.targets() {
            let _ = writeln!(s, "| {} | {} | {} |", t.what, t.value, verdict(t.met));
        }
        s
    }
}

fn table_rows(s: &mut String, name: &str, row: &Row) {
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
            "| {name} | {kind} | {} | {:.3} | {:.3} | {rm} | {rp} |",
            x.n, x.median, x.p99
        );
    }
}

fn cpu_table(
    s: &mut String,
    title: &str,
    unit: &str,
    per_label: &str,
    per: f64,
    cpu: &BTreeMap<Kind, Cpu>,
) {
    if cpu.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "\n### {title} (user + system, from /proc/PID/stat)\n\n\
         | setup | {unit} | CPU ms | wall ms | CPU ms {per_label} |\n\
         | --- | ---: | ---: | ---: | ---: |\n"
    );
    for (k, c) in cpu {
        let each = c.cpu_ms / c.messages as f64 * per;
        let _ = writeln!(
            s,
            "| {k} | {} | {:.0} | {:.0} | {each:.1} |",
            c.messages, c.cpu_ms, c.wall_ms
        );
    }
}

fn restore_tables(s: &mut String, r: &Restores) {
    let cold = summarize(&r.cold);
    s.push_str("\n## Restore after a restart (tether; page load + pull, milliseconds)\n\n");
    s.push_str(
        "| state log | n | median | p99 | median / cold | tether's restore (its log), median \
         | worker applying the steps live, median | steps applied / skipped per restore |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let _ = writeln!(
        s,
        "| cold page load | {} | {:.2} | {:.2} | 1.000 | - | - | - |",
        cold.n, cold.median, cold.p99
    );
    let of = |m: &BTreeMap<usize, Vec<f64>>, n: &usize| {
        summarize(m.get(n).map_or(&[][..], |v| v)).median
    };
    for (n, v) in &r.restore {
        let x = summarize(v);
        let (a, k) = r.applied.get(n).copied().unwrap_or_default();
        let per = x.n.max(1);
        let _ = writeln!(
            s,
            "| {n} steps | {} | {:.2} | {:.2} | {:.3} | {:.0} | {:.0} | {} / {} |",
            x.n,
            x.median,
            x.p99,
            x.median / cold.median,
            of(&r.inside, n),
            of(&r.live, n),
            a / per,
            k / per
        );
    }
    if !r.sessions.is_empty() {
        s.push_str("\n### Recorded sessions, each against cold loads of its own app\n\n");
        s.push_str("| session | n | cold page load, median | restore + page, median | p99 | median / cold | median - cold | tether's restore (its log), median | steps applied / skipped per restore |\n");
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for sr in &r.sessions {
            let (c, x) = (summarize(&sr.cold), summarize(&sr.restore));
            let per = x.n.max(1);
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:+.1} | {:.0} | {} / {} |",
                sr.label,
                x.n,
                c.median,
                x.median,
                x.p99,
                x.median / c.median,
                x.median - c.median,
                summarize(&sr.inside).median,
                sr.applied.0 / per,
                sr.applied.1 / per
            );
        }
    }
    s.push_str("\n### Restoring page loads by step (medians, milliseconds)\n\n");
    s.push_str("| state log | page GET | websocket + ACK (holds the restore) | pull |\n| --- | ---: | ---: | ---: |\n");
    let [a, b, c] = r.cold_steps.medians();
    let _ = writeln!(s, "| cold page load | {a:.2} | {b:.2} | {c:.2} |");
    for (n, st) in &r.steps {
        let [a, b, c] = st.medians();
        let _ = writeln!(s, "| {n} steps | {a:.2} | {b:.2} | {c:.2} |");
    }
}

/// The cost curve: per number of active tabs and setup, the round trip and the proxy's CPU.
fn curve_table(s: &mut String, curve: &[crate::standin::Active]) {
    s.push_str(
        "\n## Cost curve: active tabs (stand-in worker; all tabs together send one rate)\n\n\
         | active tabs | setup | round trips | median ms | p99 ms | proxy CPU ms per 1,000 messages | CPU / at the fewest tabs |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let first = curve.first();
    for point in curve {
        for (kind, v) in &point.round_trip.samples {
            let x = summarize(v);
            let cpu = point.cpu.get(kind).map(Cpu::per_thousand_ms);
            let base = first
                .and_then(|f| f.cpu.get(kind))
                .map(Cpu::per_thousand_ms);
            let (c, r) = match (cpu, base) {
                (Some(c), Some(b)) => (format!("{c:.1}"), format!("{:.2}", c / b)),
                (Some(c), None) => (format!("{c:.1}"), "-".into()),
                _ => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {kind} | {} | {:.3} | {:.3} | {c} | {r} |",
                point.tabs, x.n, x.median, x.p99
            );
        }
    }
}
