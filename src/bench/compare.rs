//! `bench --baseline OLD.json`: this run against an earlier one, scenario by scenario and model
//! by model, the way hyperfine compares commands: the ratio of the medians, and whether the
//! two min–max ranges overlap. Ranges that overlap mean the difference is within what the
//! repetitions of either run spread over: no change shown. Ranges apart are a change, better
//! or worse by which way the metric wants to go.
//!
//! Only what both runs measured is compared: a scenario (by name: `--quick`'s `c12k at 200
//! conns` is not `c12k`) and a model both ran, and per scenario kind its headline metrics.

use super::results::{BenchResults, Row, Stat};
use super::table::{self, Fmt};

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// A metric compared: its label, how to read it from a row, which way is better, its format.
struct Metric {
    label: &'static str,
    get: fn(&Row) -> Option<Stat>,
    better: Better,
    fmt: Fmt,
}

/// The metrics compared for a scenario kind (the ones its table leads with).
fn metrics(kind: &str) -> Vec<Metric> {
    let cpu = Metric {
        label: "CPU s/M msgs",
        get: |r| r.cpu_s_per_million,
        better: Better::Lower,
        fmt: Fmt::Sig,
    };
    let rate = Metric {
        label: "msgs/s",
        get: |r| r.msgs_per_sec,
        better: Better::Higher,
        fmt: Fmt::Count,
    };
    let p99 = Metric {
        label: "p99 µs",
        get: |r| r.p99_us,
        better: Better::Lower,
        fmt: Fmt::Sig,
    };
    let server_cpu = Metric {
        label: "server CPU %",
        get: |r| r.server_cpu_percent,
        better: Better::Lower,
        fmt: Fmt::Sig,
    };
    let rss = Metric {
        label: "RSS/conn",
        get: |r| r.rss_per_conn_bytes,
        better: Better::Lower,
        fmt: Fmt::Bytes,
    };
    match kind {
        "pingpong" => vec![cpu, rate, p99],
        "udp" => vec![cpu, rate, p99],
        "idle" => vec![rss],
        "c12k" | "c100k" => vec![server_cpu, cpu],
        "max-conns" => vec![rss],
        "rate" => vec![
            Metric {
                label: "saturation msg/s",
                ..rate
            },
            Metric {
                label: "p99 µs at 90 %",
                get: |r| r.curve.as_ref().and_then(|c| c.p99_us_at_90_percent),
                ..p99
            },
        ],
        _ => Vec::new(),
    }
}

/// One metric of one model in one scenario, in both runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub scenario: String,
    pub model: String,
    pub metric: &'static str,
    fmt: Fmt,
    better: Better,
    pub old: Stat,
    pub new: Stat,
}

/// What the two runs say about a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The min–max ranges overlap: no change shown.
    Overlap,
    Better,
    Worse,
}

impl Line {
    /// New median over old (`None` when the old one is 0).
    pub fn ratio(&self) -> Option<f64> {
        (self.old.median != 0.0).then(|| self.new.median / self.old.median)
    }

    pub fn verdict(&self) -> Verdict {
        let (o, n) = (self.old, self.new);
        if n.min <= o.max && o.min <= n.max {
            return Verdict::Overlap;
        }
        let lower = n.median < o.median;
        if lower == (self.better == Better::Lower) {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    }

    pub(crate) fn verdict_text(&self) -> &'static str {
        match self.verdict() {
            Verdict::Overlap => "ranges overlap",
            Verdict::Better => "better",
            Verdict::Worse => "WORSE",
        }
    }

    pub(crate) fn ratio_text(&self) -> String {
        self.ratio()
            .map_or_else(|| table::DASH.to_string(), |r| format!("{r:.2}×"))
    }

    pub(crate) fn range(&self, s: Stat) -> String {
        format!(
            "{} [{}–{}]",
            self.fmt.format(s.median),
            self.fmt.format(s.min),
            self.fmt.format(s.max)
        )
    }
}

/// This run (`new`) against `old`: every metric both measured, in this run's order.
pub(crate) fn compare(old: &BenchResults, new: &BenchResults) -> Vec<Line> {
    let mut lines = Vec::new();
    for sc in &new.scenarios {
        let Some(old_sc) = old.scenarios.iter().find(|o| o.name == sc.name) else {
            continue;
        };
        for row in sc.rows.iter().filter(|r| r.ran) {
            let Some(old_row) = old_sc.rows.iter().find(|o| o.ran && o.model == row.model) else {
                continue;
            };
            for m in metrics(&sc.kind) {
                if let (Some(o), Some(n)) = ((m.get)(old_row), (m.get)(row)) {
                    lines.push(Line {
                        scenario: sc.name.clone(),
                        model: row.model.clone(),
                        metric: m.label,
                        fmt: m.fmt,
                        better: m.better,
                        old: o,
                        new: n,
                    });
                }
            }
        }
    }
    lines
}

/// The comparison as text: a header naming the baseline, one aligned line per metric, and a
/// count of what changed.
pub(crate) fn render_text(old: &BenchResults, lines: &[Line]) -> String {
    let mut out = format!(
        "\ncompared with the baseline of {} ({}; {}): median [min–max], new / old\n",
        old.date, old.command, old.machine.host.cpu_model
    );
    if lines.is_empty() {
        out.push_str("  nothing to compare: no scenario and model ran in both\n");
        return out;
    }
    let cells: Vec<[String; 7]> = lines
        .iter()
        .map(|l| {
            [
                l.scenario.clone(),
                l.model.clone(),
                l.metric.to_string(),
                l.range(l.old),
                l.range(l.new),
                l.ratio_text(),
                l.verdict_text().to_string(),
            ]
        })
        .collect();
    let head = [
        "scenario", "model", "metric", "baseline", "this run", "ratio", "",
    ];
    let mut widths = head.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[&str]| {
        let mut s = String::from(" ");
        for (c, w) in cols.iter().zip(widths) {
            s.push_str(&format!(" {c:<w$}"));
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&head));
    for row in &cells {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    let count = |v| lines.iter().filter(|l| l.verdict() == v).count();
    out.push_str(&format!(
        "  {} better, {} worse, {} within the repetitions' spread\n",
        count(Verdict::Better),
        count(Verdict::Worse),
        count(Verdict::Overlap)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::table::sample;
    use super::*;

    fn stat(median: f64, min: f64, max: f64) -> Stat {
        Stat { median, min, max }
    }

    #[test]
    fn ranges_apart_are_a_change_and_overlapping_ones_are_not() {
        let line = |better, old, new| Line {
            scenario: "pp64-100".into(),
            model: "select".into(),
            metric: "CPU s/M msgs",
            fmt: Fmt::Sig,
            better,
            old,
            new,
        };
        let lower = line(Better::Lower, stat(10.0, 9.0, 11.0), stat(8.0, 7.5, 8.5));
        assert_eq!(lower.verdict(), Verdict::Better);
        assert_eq!(lower.ratio(), Some(0.8));
        let worse = line(Better::Higher, stat(10.0, 9.0, 11.0), stat(8.0, 7.5, 8.5));
        assert_eq!(worse.verdict(), Verdict::Worse);
        let touching = line(Better::Lower, stat(10.0, 9.0, 11.0), stat(8.0, 7.5, 9.0));
        assert_eq!(touching.verdict(), Verdict::Overlap);
        let from_zero = line(Better::Lower, stat(0.0, 0.0, 0.0), stat(1.0, 1.0, 1.0));
        assert_eq!(from_zero.ratio(), None);
    }

    #[test]
    fn only_what_both_runs_measured_is_compared() {
        // (The sample's second model is one that did not run.)
        let old = sample::results(&["blocking", "io-uring", "select"], "old");
        let mut new = sample::results(&["select", "blocking", "event-select"], "new");
        new.scenarios.retain(|sc| sc.kind == "pingpong");
        let lines = compare(&old, &new);
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l.model == "select"));
        let pingpong = old
            .scenarios
            .iter()
            .filter(|s| s.kind == "pingpong")
            .count();
        assert_eq!(lines.len(), pingpong * 3, "{lines:?}");
        // The same results: every range overlaps itself, every ratio is 1.
        let same = compare(&new, &new);
        assert!(same.iter().all(|l| l.verdict() == Verdict::Overlap));
        assert!(same.iter().all(|l| l.ratio().is_none_or(|r| r == 1.0)));
        let text = render_text(&old, &lines);
        assert!(text.contains("compared with the baseline of"), "{text}");
        assert!(text.contains("within the repetitions' spread"), "{text}");
    }
}
