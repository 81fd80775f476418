//! The terminal rendering of bench results: a header, then one aligned table per scenario.
//!
//! The column definitions and number formatting here are shared with the HTML report
//! (`super::report`), so both show the same columns with the same formatting.

use super::results::*;

/// What a missing value looks like.
pub(crate) const DASH: &str = "—";

/// How the numbers of a column are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fmt {
    /// Whole numbers with thousands separators (`1,234,567`).
    Count,
    /// Two to three significant digits (`0.0123`, `1.23`, `123`, `12,345`).
    Sig,
    /// Bytes with a binary unit (`512 B`, `3.25 KiB`).
    Bytes,
}

impl Fmt {
    /// `v` written this way.
    pub(crate) fn format(self, v: f64) -> String {
        match self {
            Fmt::Count => fmt_count(v),
            Fmt::Sig => fmt_sig(v),
            Fmt::Bytes => fmt_bytes(v),
        }
    }
}

/// What a column shows.
#[derive(Clone, Copy)]
pub(crate) enum ColKind {
    /// A measured [`Stat`]: its median, plus `[min-max]` when `range` is set.
    Stat {
        /// Picks the metric out of a row.
        get: fn(&Row) -> Option<Stat>,
        /// How to write it.
        fmt: Fmt,
        /// Also show the min-max of the repetitions.
        range: bool,
    },
    /// Connections held.
    Conns,
    /// A count that is not a [`Stat`] (summed over the repetitions).
    Count(fn(&Row) -> Option<u64>),
    /// Why the connection ramp stopped.
    StopReason,
    /// Connect and I/O errors.
    Errors,
    /// A figure of the soak.
    Soak(fn(&Soak) -> String),
}

/// One column of a scenario table.
#[derive(Clone, Copy)]
pub(crate) struct Column {
    /// Column heading.
    pub(crate) header: &'static str,
    /// What the cells show.
    pub(crate) kind: ColKind,
}

impl Column {
    const fn stat(header: &'static str, get: fn(&Row) -> Option<Stat>, fmt: Fmt) -> Column {
        Column {
            header,
            kind: ColKind::Stat {
                get,
                fmt,
                range: false,
            },
        }
    }

    /// The cell for `row` (of a row that ran).
    pub(crate) fn cell(&self, row: &Row) -> String {
        match self.kind {
            ColKind::Stat { get, fmt, range } => match get(row) {
                None => DASH.to_string(),
                Some(s) if range => format!(
                    "{} [{}-{}]",
                    fmt.format(s.median),
                    fmt.format(s.min),
                    fmt.format(s.max)
                ),
                Some(s) => fmt.format(s.median),
            },
            ColKind::Conns => row.conns_held.map_or_else(|| DASH.to_string(), thousands),
            ColKind::Count(get) => get(row).map_or_else(|| DASH.to_string(), thousands),
            ColKind::StopReason => row.stop_reason.clone().unwrap_or_else(|| DASH.to_string()),
            ColKind::Errors => thousands(row.errors),
            ColKind::Soak(f) => row.soak.as_ref().map_or_else(|| DASH.to_string(), f),
        }
    }

    /// The full spread of a measured cell (`median …, min …, max …`), for tooltips.
    pub(crate) fn spread(&self, row: &Row) -> Option<String> {
        match self.kind {
            ColKind::Stat { get, fmt, .. } => get(row).map(|s| {
                format!(
                    "median {}, min {}, max {}",
                    fmt.format(s.median),
                    fmt.format(s.min),
                    fmt.format(s.max)
                )
            }),
            _ => None,
        }
    }

    /// Whether the cells are numbers (right-aligned).
    pub(crate) fn numeric(&self) -> bool {
        !matches!(self.kind, ColKind::StopReason | ColKind::Soak(_))
    }
}

/// Columns only some OSes fill (Windows' private bytes): shown when a row has a value.
const OPTIONAL: [&str; 1] = ["private/conn"];

/// The columns shown for scenario `sc`: those of its kind, less the [`OPTIONAL`] ones no row
/// has a value in (so Linux tables stay as they were).
pub(crate) fn columns_of(sc: &ScenarioResult) -> Vec<Column> {
    columns(&sc.kind)
        .into_iter()
        .filter(|c| {
            !OPTIONAL.contains(&c.header)
                || sc.rows.iter().any(|r| match c.kind {
                    ColKind::Stat { get, .. } => get(r).is_some(),
                    _ => true,
                })
        })
        .collect()
}

/// The columns shown for a scenario of `kind` (unknown kinds get the ping-pong columns).
pub(crate) fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "soak" => soak_columns(),
        "idle" => vec![
            Column::CONNS,
            Column::stat("RSS/conn", |r| r.rss_per_conn_bytes, Fmt::Bytes),
            Column::stat("private/conn", |r| r.private_per_conn_bytes, Fmt::Bytes),
        ],
        "c12k" => vec![
            Column::CONNS,
            Column::stat("server CPU %", |r| r.server_cpu_percent, Fmt::Sig),
            Column::CPU_PER_MILLION,
            Column::WAKEUPS,
            Column::stat("p50 µs", |r| r.p50_us, Fmt::Sig),
            Column::stat("p99 µs", |r| r.p99_us, Fmt::Sig),
        ],
        "c100k" => c100k_columns(),
        "rate" => rate_columns(),
        "max-conns" => vec![Column::CONNS, Column::STOP_REASON],
        "udp" => udp_columns(),
        _ => vec![
            Column::stat("msgs/s", |r| r.msgs_per_sec, Fmt::Count),
            Column::stat("MB/s", |r| r.mb_per_sec, Fmt::Sig),
            Column::stat("p50 µs", |r| r.p50_us, Fmt::Sig),
            Column::stat("p99 µs", |r| r.p99_us, Fmt::Sig),
            Column::stat("p99.9 µs", |r| r.p999_us, Fmt::Sig),
            Column::CPU_PER_MILLION,
            Column::stat("ctx sw/1k msgs", |r| r.ctx_switches_per_1k, Fmt::Sig),
            Column::WAKEUPS,
            Column::stat("syscalls/msg", |r| r.syscalls_per_msg, Fmt::Sig),
            Column::ERRORS,
        ],
    }
}

impl Column {
    /// Server CPU seconds per million messages, with its range.
    const CPU_PER_MILLION: Column = Column {
        header: "CPU s/M msgs",
        kind: ColKind::Stat {
            get: |r| r.cpu_s_per_million,
            fmt: Fmt::Sig,
            range: true,
        },
    };
    /// Connections held.
    const CONNS: Column = Column {
        header: "conns held",
        kind: ColKind::Conns,
    };
    /// The server's wake-ups per message.
    const WAKEUPS: Column = Column::stat("wake-ups/msg", |r| r.wakeups_per_msg, Fmt::Sig);
    /// Connect and I/O errors.
    const ERRORS: Column = Column {
        header: "errors",
        kind: ColKind::Errors,
    };
    /// Why the connection ramp stopped.
    const STOP_REASON: Column = Column {
        header: "stop reason",
        kind: ColKind::StopReason,
    };

    /// A figure of the soak.
    const fn soak(header: &'static str, f: fn(&Soak) -> String) -> Column {
        Column {
            header,
            kind: ColKind::Soak(f),
        }
    }
}

/// The soak's columns: memory and descriptors from start to end, echoes, faults, alive.
fn soak_columns() -> Vec<Column> {
    let soak = Column::soak;
    vec![
        soak("RSS start→end", |k| {
            format!(
                "{} → {}",
                fmt_bytes(k.rss.start as f64),
                fmt_bytes(k.rss.end as f64)
            )
        }),
        soak("RSS min–max", |k| {
            format!(
                "{}–{}",
                fmt_bytes(k.rss.min as f64),
                fmt_bytes(k.rss.max as f64)
            )
        }),
        soak("RSS MiB/min", |k| fmt_sig(k.rss_mib_per_min)),
        soak("fds start→end", |k| {
            format!("{} → {}", k.fds.start, k.fds.end)
        }),
        soak("fds min–max", |k| format!("{}–{}", k.fds.min, k.fds.max)),
        soak("fds/min", |k| fmt_sig(k.fds_per_min)),
        soak("fds idle before/after", |k| {
            format!("{}/{}", k.fds_before, k.fds_after)
        }),
        soak("echoes", |k| thousands(k.echoes)),
        Column {
            header: "echo errors",
            ..Column::ERRORS
        },
        soak("fault cycles (errors)", |k| {
            let c: u64 = k.faults.iter().map(|f| f.cycles).sum();
            let e: u64 = k.faults.iter().map(|f| f.errors).sum();
            format!("{} ({})", thousands(c), thousands(e))
        }),
        soak("alive", |k| if k.alive { "yes" } else { "NO" }.to_string()),
    ]
}

/// c100k's columns: connections held and still open, the paced echoes, the server's cost.
fn c100k_columns() -> Vec<Column> {
    vec![
        Column::CONNS,
        Column {
            header: "still open",
            kind: ColKind::Count(|r| r.conns_still_open),
        },
        Column::stat("verified echoes", |r| r.verified_echoes, Fmt::Count),
        Column {
            header: "late rounds",
            kind: ColKind::Count(|r| r.late_rounds),
        },
        Column::stat("server CPU %", |r| r.server_cpu_percent, Fmt::Sig),
        Column::CPU_PER_MILLION,
        Column::stat("RSS/conn", |r| r.rss_per_conn_bytes, Fmt::Bytes),
        Column::stat("p50 µs", |r| r.p50_us, Fmt::Sig),
        Column::stat("p99 µs", |r| r.p99_us, Fmt::Sig),
        Column::ERRORS,
    ]
}

/// The rate scenario's columns: the saturation and the latency at fractions of it.
fn rate_columns() -> Vec<Column> {
    vec![
        Column {
            header: "saturation msg/s",
            kind: ColKind::Stat {
                get: |r| r.msgs_per_sec,
                fmt: Fmt::Count,
                range: true,
            },
        },
        Column::stat(
            "p99 µs at 50 %",
            |r| r.curve.as_ref().and_then(|c| c.p99_us_at_50_percent),
            Fmt::Sig,
        ),
        Column::stat(
            "p99 µs at 90 %",
            |r| r.curve.as_ref().and_then(|c| c.p99_us_at_90_percent),
            Fmt::Sig,
        ),
        Column::stat("p50 µs at sat.", |r| r.p50_us, Fmt::Sig),
        Column::stat("p99 µs at sat.", |r| r.p99_us, Fmt::Sig),
        Column {
            header: "steps",
            kind: ColKind::Count(|r| r.curve.as_ref().map(|c| c.points.len() as u64)),
        },
        Column::ERRORS,
        Column::STOP_REASON,
    ]
}

/// The UDP scenario's columns: the ping-pong ones per datagram, with the loss.
fn udp_columns() -> Vec<Column> {
    vec![
        Column::stat("datagrams/s", |r| r.msgs_per_sec, Fmt::Count),
        Column::stat("MB/s", |r| r.mb_per_sec, Fmt::Sig),
        Column::stat("p50 µs", |r| r.p50_us, Fmt::Sig),
        Column::stat("p99 µs", |r| r.p99_us, Fmt::Sig),
        Column::stat("loss %", |r| r.loss_percent, Fmt::Sig),
        Column {
            header: "CPU s/M dgrams",
            ..Column::CPU_PER_MILLION
        },
        Column::stat("ctx sw/1k dgrams", |r| r.ctx_switches_per_1k, Fmt::Sig),
        Column {
            header: "wake-ups/dgram",
            ..Column::WAKEUPS
        },
        Column::stat("syscalls/dgram", |r| r.syscalls_per_msg, Fmt::Sig),
        Column::ERRORS,
    ]
}

/// The curves of a rate scenario as a matrix of strings: a header line (`offered msg/s`, then
/// each model with a curve), then one line per offered rate with `p50 / p99` (µs, from the
/// schedule) of each model, `!` after a step not kept, `(n of N)` when only n of the N
/// repetitions reached it, empty where none did. `None` when no row has a curve.
pub(crate) fn curve_matrix(sc: &ScenarioResult) -> Option<Vec<Vec<String>>> {
    let rows: Vec<(&Row, &Curve)> = sc
        .rows
        .iter()
        .filter_map(|r| Some((r, r.curve.as_ref()?)))
        .collect();
    let longest = rows.iter().max_by_key(|(_, c)| c.points.len())?.1;
    let mut m = vec![std::iter::once("offered msg/s".to_string())
        .chain(rows.iter().map(|(r, _)| r.model.clone()))
        .collect::<Vec<_>>()];
    for (i, p) in longest.points.iter().enumerate() {
        let mut line = vec![thousands(p.rate_requested_per_sec.round() as u64)];
        for (_, c) in &rows {
            let all = c.points.first().map_or(0, |p| p.runs);
            line.push(c.points.get(i).map_or_else(String::new, |q| {
                format!(
                    "{} / {}{}{}",
                    fmt_sig(q.p50_us.median),
                    fmt_sig(q.p99_us.median),
                    if q.kept { "" } else { " !" },
                    if q.runs < all {
                        format!(" ({} of {all})", q.runs)
                    } else {
                        String::new()
                    }
                )
            }));
        }
        m.push(line);
    }
    Some(m)
}

/// `n` with thousands separators: `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<String> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    groups.join(",")
}

/// A count, rounded, with thousands separators (small non-integers keep 3 significant digits).
pub(crate) fn fmt_count(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 100.0 && v.fract() != 0.0 {
        return fmt_sig(v);
    }
    let s = thousands(v.abs().round() as u64);
    if v < 0.0 && s != "0" {
        format!("-{s}")
    } else {
        s
    }
}

/// `v` with about three significant digits; from 1000 up, whole with thousands separators.
pub(crate) fn fmt_sig(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if a >= 999.5 {
        return fmt_count(v.round());
    }
    let magnitude = a.log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// A byte count with a binary unit: `512 B`, `3.25 KiB`, `1.5 MiB`.
pub(crate) fn fmt_bytes(v: f64) -> String {
    let a = v.abs();
    if a < 1024.0 {
        format!("{} B", fmt_sig(v))
    } else if a < 1024.0 * 1024.0 {
        format!("{} KiB", fmt_sig(v / 1024.0))
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{} MiB", fmt_sig(v / (1024.0 * 1024.0)))
    } else {
        format!("{} GiB", fmt_sig(v / (1024.0 * 1024.0 * 1024.0)))
    }
}

/// The model cell: the name, `*` when the machine was busy, `!!` when the echo was wrong.
fn model_cell(row: &Row) -> String {
    let mut s = row.model.clone();
    if row.busy.is_some() {
        s.push_str(" *");
    }
    if row.mismatches > 0 {
        s.push_str(" !!");
    }
    s
}

/// Pads `s` to `width` characters (not bytes: `µ` and `—` are one column each).
fn pad(s: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(s.chars().count()));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

/// The results as plain text for the terminal: a header with the machine and the run, then
/// per scenario its name, description and an aligned table with one line per model. Rows that
/// did not run show their note; wrong echoes are flagged with `!!` and a `!! MISMATCH` line;
/// rows measured while the machine was busy are marked `*` with a footnote.
pub fn render_table(r: &BenchResults) -> String {
    let mut out = header_lines(r);
    for sc in &r.scenarios {
        out.push('\n');
        out.push_str(&format!(
            "== {} ({}): {}\n",
            sc.name, sc.kind, sc.description
        ));
        aligned_table(&mut out, sc);
        if let Some(m) = curve_matrix(sc) {
            out.push_str(
                "  latency from the schedule at each offered rate, p50 / p99 µs (! = not kept):\n",
            );
            let widths: Vec<usize> = (0..m[0].len())
                .map(|i| m.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
                .collect();
            for l in &m {
                let cells: Vec<String> = l
                    .iter()
                    .enumerate()
                    .map(|(i, c)| pad(c, widths[i], i > 0))
                    .collect();
                out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
            }
        }
        footnotes(&mut out, sc);
    }
    out
}

/// The header: the machine, the placement, the command, the build and the repetitions.
fn header_lines(r: &BenchResults) -> String {
    let m = &r.machine;
    let mut out = String::new();
    out.push_str(&format!("iomodels bench, {}\n", r.date));
    out.push_str(&format!(
        "machine:   {}, {} cores, kernel {}, {}\n",
        m.host.cpu_model,
        m.host.cores,
        m.host.kernel,
        m.host.os_label()
    ));
    for note in m.os_notes() {
        out.push_str(&format!("note:      {note}\n"));
    }
    out.push_str(&format!(
        "placement: {}{}\n",
        m.placement,
        if m.realtime {
            format!(" ({})", m.realtime_name())
        } else {
            String::new()
        }
    ));
    out.push_str(&format!("command:   {}\n", r.command));
    out.push_str(&format!("build:     {}\n", r.build));
    out.push_str(&format!(
        "repeat:    {} (median, [min-max] over the repetitions)\n",
        r.repeat
    ));
    if r.quick {
        out.push_str("QUICK RUN: a short subset, the numbers are not to be trusted\n");
    }
    out
}

/// A scenario's table: the header, a rule, one line per model (a not-run note spans the rest).
fn aligned_table(out: &mut String, sc: &ScenarioResult) {
    let cols = columns_of(sc);
    let mut header = vec!["model".to_string()];
    header.extend(cols.iter().map(|c| c.header.to_string()));
    let lines: Vec<(bool, Vec<String>)> = sc
        .rows
        .iter()
        .map(|row| {
            let mut cells = vec![model_cell(row)];
            if row.ran {
                cells.extend(cols.iter().map(|c| c.cell(row)));
                (true, cells)
            } else {
                let why = row.note.as_deref().unwrap_or("no reason given");
                cells.push(format!("not run: {why}"));
                (false, cells)
            }
        })
        .collect();

    // Column widths, from the header and the rows that ran (a not-run note spans the rest).
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (ran, cells) in &lines {
        for (i, c) in cells.iter().enumerate() {
            if *ran || i == 0 {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let numeric = |i: usize| i > 0 && cols[i - 1].numeric();
    let join = |cells: &[String], ran: bool| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if ran || i == 0 {
                    pad(c, widths[i], numeric(i))
                } else {
                    c.clone()
                }
            })
            .collect();
        format!("  {}\n", parts.join("  ").trim_end())
    };
    out.push_str(&join(&header, true));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("  {}\n", rule.join("  ")));
    for (ran, cells) in &lines {
        out.push_str(&join(cells, *ran));
    }
}

/// Below a scenario's table: the soak's first fault errors, wrong echoes, busy machines and
/// the notes of rows that ran.
fn footnotes(out: &mut String, sc: &ScenarioResult) {
    for row in &sc.rows {
        for f in row.soak.iter().flat_map(|k| &k.faults) {
            if let Some(e) = &f.first_error {
                out.push_str(&format!(
                    "  {} {}: {} error(s), the first: {e}\n",
                    row.model,
                    f.fault,
                    thousands(f.errors)
                ));
            }
        }
        if row.mismatches > 0 {
            out.push_str(&format!(
                "!! MISMATCH: {} echoed {} wrong bytes in {}\n",
                row.model,
                thousands(row.mismatches),
                sc.name
            ));
        }
    }
    for row in &sc.rows {
        if let Some(busy) = &row.busy {
            out.push_str(&format!(
                "   * {}: machine busy during the run ({busy})\n",
                row.model
            ));
        }
    }
    for row in sc.rows.iter().filter(|row| row.ran) {
        if let Some(note) = &row.note {
            out.push_str(&format!("   note: {}: {note}\n", row.model));
        }
    }
}

/// Synthetic results for the tests of this module and of `report`.
#[cfg(test)]
pub(crate) mod sample {
    use super::super::results::*;

    /// A rate scenario: `blocking` kept 1,000 and 2,000 msg/s and not 4,000 (p99 exploded
    /// there); `select` kept only 1,000 and stopped at 2,000; `io-uring` did not run.
    pub(crate) fn rate_scenario() -> ScenarioResult {
        let s = |v: f64| Stat {
            median: v,
            min: v * 0.9,
            max: v * 1.1,
        };
        let curve = |points: &[(f64, f64, f64, bool)]| Curve {
            conns: 100,
            size_bytes: 64,
            step_secs: 1.0,
            points: points
                .iter()
                .map(|&(rate, p50, p99, kept)| CurvePoint {
                    rate_requested_per_sec: rate,
                    rate_sent_per_sec: s(rate),
                    rate_received_per_sec: s(if kept { rate } else { rate / 2.0 }),
                    p50_us: s(p50),
                    p99_us: s(p99),
                    service_p99_us: Some(s(p99 / 2.0)),
                    kept,
                    runs: 3,
                })
                .collect(),
            p99_us_at_50_percent: Some(s(810.0)),
            p99_us_at_90_percent: Some(s(1_900.0)),
        };
        let row = |model: &str, c: Curve, sat: f64, why: &str| Row {
            ran: true,
            msgs_per_sec: Some(s(sat)),
            p50_us: Some(s(400.0)),
            p99_us: Some(s(2_000.0)),
            stop_reason: Some(why.to_string()),
            curve: Some(c),
            note: None,
            ..Row::not_run(model, String::new())
        };
        ScenarioResult {
            name: "rate64-100".into(),
            description: "open loop: a ladder of offered rates.".into(),
            kind: "rate".into(),
            rows: vec![
                row(
                    "blocking",
                    curve(&[
                        (1000.0, 300.0, 800.0, true),
                        (2000.0, 400.0, 2_000.0, true),
                        (4000.0, 90_000.0, 1_500_000.0, false),
                    ]),
                    2000.0,
                    "p99 1,500 ms at 4,000 msg/s (first step: 0.8 ms)",
                ),
                row(
                    "select",
                    curve(&[
                        (1000.0, 350.0, 900.0, true),
                        (2000.0, 50_000.0, 700_000.0, false),
                    ]),
                    1000.0,
                    "received 1,000 of 2,000 msg/s offered",
                ),
                Row::not_run("io-uring", "needs Linux 5.19".into()),
            ],
        }
    }

    fn stat(median: f64, spread: f64) -> Option<Stat> {
        Some(Stat {
            median,
            min: median * (1.0 - spread),
            max: median * (1.0 + spread),
        })
    }

    /// Results for `models` over four ping-pong scenarios, idle, c12k, c100k and max-conns.
    /// The second model does not run io_uring-style (`not run` in every scenario but
    /// max-conns), only the last model runs c100k,
    /// the third echoes wrong bytes in `pp64-100`, the last ran on a busy machine in `pp64-1`.
    pub(crate) fn results(models: &[&str], command: &str) -> BenchResults {
        let mut scenarios = pingpong(models);
        for (name, desc) in [
            (
                "idle",
                "10,000 connections open and silent: memory per connection.",
            ),
            (
                "c12k",
                "12,000 connections, each sends one 64-byte message a second.",
            ),
            (
                "c100k",
                "100,000 connections, each sends one 64-byte message every 10 s.",
            ),
            ("max-conns", "Opens connections until something gives."),
        ] {
            scenarios.push(ScenarioResult {
                name: name.into(),
                description: desc.into(),
                kind: name.into(),
                rows: models
                    .iter()
                    .enumerate()
                    .map(|(mi, m)| other_row(name, mi, m, models.len()))
                    .collect(),
            });
        }
        BenchResults {
            build: crate::about::build(),
            machine: Machine {
                host: crate::about::Machine {
                    cpu_model: "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz".into(),
                    cores: 2,
                    kernel: "6.8.0-1019-aws".into(),
                    os: "Ubuntu 24.04.1 LTS".into(),
                    wine: None,
                },
                placement: "server on CPU 0, load on CPU 1".into(),
                realtime: false,
            },
            date: "2025-03-14T09:26:53Z".into(),
            command: command.into(),
            quick: false,
            repeat: 3,
            models: models.iter().map(|m| m.to_string()).collect(),
            scenarios,
        }
    }

    /// The four ping-pong scenarios: the second model did not run, the third echoed wrong
    /// bytes in pp64-100, the last was busy in pp64-1.
    fn pingpong(models: &[&str]) -> Vec<ScenarioResult> {
        let pp = [
            (
                "pp64-1",
                "One connection echoes 64-byte messages back and forth.",
                1.0,
            ),
            (
                "pp64-100",
                "100 connections each echo 64-byte messages.",
                3.0,
            ),
            ("pp4k-100", "100 connections each echo 4 KiB messages.", 5.0),
            (
                "pp64k-10",
                "10 connections each echo 64 KiB messages.",
                40.0,
            ),
        ];
        let mut scenarios = Vec::new();
        for (si, (name, desc, cost)) in pp.iter().enumerate() {
            let rows = models
                .iter()
                .enumerate()
                .map(|(mi, m)| {
                    if mi == 1 {
                        return Row::not_run(
                            m,
                            "needs Linux 5.19 <io_uring> & CAP_SYS_ADMIN".into(),
                        );
                    }
                    let mut row = pingpong_row(m, mi, si, *cost);
                    if mi == 2 && *name == "pp64-100" {
                        row.mismatches = 1234;
                        row.errors = 3;
                    }
                    if mi + 1 == models.len() && *name == "pp64-1" {
                        row.busy = Some("other processes used 23% CPU".into());
                    }
                    row
                })
                .collect();
            scenarios.push(ScenarioResult {
                name: name.to_string(),
                description: desc.to_string(),
                kind: "pingpong".into(),
                rows,
            });
        }
        scenarios
    }

    /// Model `m` (number `mi`) in ping-pong scenario number `si`, whose messages cost `cost`.
    fn pingpong_row(m: &str, mi: usize, si: usize, cost: f64) -> Row {
        let f = 1.0 + 0.37 * ((mi * 7 + si * 3) % 9) as f64;
        let msgs = 180_000.0 / cost / f * (1.0 + si as f64);
        let mut row = Row::not_run(m, String::new());
        row.ran = true;
        row.note = None;
        row.msgs_per_sec = stat(msgs, 0.04);
        row.mb_per_sec = stat(msgs * 64.0 * cost / 1e6, 0.04);
        row.p50_us = stat(9.0 * f * cost, 0.05);
        row.p99_us = stat(31.0 * f * cost, 0.15);
        row.p999_us = if mi == 0 {
            None
        } else {
            stat(80.0 * f * cost, 0.3)
        };
        row.cpu_s_per_million = stat(1.9 * f * cost, 0.08);
        row.server_cpu_percent = stat(35.0 + 9.0 * f, 0.05);
        row.ctx_switches_per_1k = stat(120.0 / f, 0.1);
        row.wakeups_per_msg = stat(0.9 / f, 0.05);
        row.syscalls_per_msg = stat(2.0 + 0.5 * f, 0.01);
        row
    }

    /// Model `m` (number `mi` of `count`) in the scenario of `kind` (idle, c12k, c100k or
    /// max-conns): only the last holds c100k, the second has no io_uring.
    fn other_row(kind: &str, mi: usize, m: &str, count: usize) -> Row {
        if kind == "c100k" && mi + 1 != count {
            return Row::not_run(
                m,
                "cannot hold 100,000 connections: descriptors: its cap is 19,936 \
                 (RLIMIT_NOFILE 20,000 less 64)"
                    .into(),
            );
        }
        if mi == 1 && kind != "max-conns" {
            return Row::not_run(m, "io_uring is not available here".into());
        }
        let f = 1.0 + 0.41 * ((mi * 5 + 1) % 7) as f64;
        let mut row = Row::not_run(m, String::new());
        row.ran = true;
        row.note = None;
        match kind {
            "idle" => {
                row.conns_held = Some(10_000);
                row.rss_per_conn_bytes = stat(900.0 * f * f, 0.02);
            }
            "c12k" => {
                row.conns_held = Some(12_000 - (mi as u64 % 2) * 17);
                row.server_cpu_percent = stat(12.0 * f, 0.1);
                row.cpu_s_per_million = stat(4.0 * f, 0.1);
                row.wakeups_per_msg = if mi == 0 { None } else { stat(0.2 * f, 0.1) };
            }
            "c100k" => {
                row.conns_held = Some(100_000);
                row.verified_echoes = stat(300_000.0, 0.0);
                row.conns_still_open = Some(100_000);
                row.late_rounds = Some(0);
                row.server_cpu_percent = stat(9.0 * f, 0.1);
                row.cpu_s_per_million = stat(30.0 * f, 0.1);
                row.rss_per_conn_bytes = stat(410.0, 0.02);
            }
            _ => {
                row.conns_held = Some(20_000 + 9_000 * mi as u64);
                row.rss_per_conn_bytes = stat(1100.0 * f, 0.0);
                row.stop_reason = Some(if mi % 2 == 0 {
                    "EMFILE: too many open files".into()
                } else {
                    "reached --max 65000".into()
                });
                if mi == 0 {
                    row.note = Some("thread per connection: 8 MiB stacks".into());
                }
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODELS: [&str; 4] = ["blocking", "io-uring", "event-select", "epoll"];

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_count(123_456.7), "123,457");
        assert_eq!(fmt_sig(0.0), "0");
        assert_eq!(fmt_sig(0.012345), "0.0123");
        assert_eq!(fmt_sig(1.2345), "1.23");
        assert_eq!(fmt_sig(12.345), "12.3");
        assert_eq!(fmt_sig(123.45), "123");
        assert_eq!(fmt_sig(12_345.6), "12,346");
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(3.25 * 1024.0), "3.25 KiB");
    }

    #[test]
    fn one_line_per_model_per_scenario() {
        let r = sample::results(&MODELS, "iomodels bench <&>");
        let t = render_table(&r);
        for sc in &r.scenarios {
            let start = t.find(&format!("== {} (", sc.name)).unwrap();
            let block = &t[start..];
            let block = &block[..block[1..].find("\n== ").map_or(block.len(), |i| i + 1)];
            for m in MODELS {
                let n = block
                    .lines()
                    .filter(|l| l.starts_with(&format!("  {m} ")) || l == &format!("  {m}"))
                    .count();
                assert_eq!(n, 1, "{m} in {}:\n{block}", sc.name);
            }
            // Header, rule and one line per model, all indented by two spaces.
            assert_eq!(
                block
                    .lines()
                    .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
                    .count(),
                2 + MODELS.len()
            );
        }
    }

    #[test]
    fn the_machine_line_says_the_os_and_wine() {
        let mut r = sample::results(&MODELS, "iomodels bench");
        let t = render_table(&r);
        assert!(
            t.contains(", kernel 6.8.0-1019-aws, Ubuntu 24.04.1 LTS\n"),
            "{t}"
        );
        assert!(
            !t.contains("\nnote:"),
            "Linux results have no OS notes:\n{t}"
        );
        assert!(!t.contains("private/conn"), "{t}");
        r.machine.host.os = "windows".into();
        r.machine.host.wine = Some("8.0".into());
        r.machine.realtime = true;
        // Windows gives private bytes: the idle table shows them.
        for row in &mut r
            .scenarios
            .iter_mut()
            .find(|s| s.kind == "idle")
            .unwrap()
            .rows
        {
            row.private_per_conn_bytes = Some(Stat {
                median: 2048.0,
                min: 2048.0,
                max: 2048.0,
            });
        }
        let t = render_table(&r);
        assert!(t.contains(", windows (under Wine 8.0)\n"), "{t}");
        assert!(t.contains("note:      Measured under Wine 8.0: these figures measure Wine's user-space socket layer"), "{t}");
        assert!(t.contains("(HIGH_PRIORITY_CLASS)"), "{t}");
        assert!(t.contains("private/conn"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["machine"]["wine"], "8.0");
        let h = super::super::report::render_html(&r, None);
        assert!(h.contains("<dd>windows (under Wine 8.0)</dd>"), "OS line");
        assert!(
            h.contains("Wine&#39;s user-space socket layer"),
            "the Wine note"
        );
    }

    #[test]
    fn mismatch_busy_missing_and_not_run_are_shown() {
        let r = sample::results(&MODELS, "iomodels bench");
        let t = render_table(&r);
        assert!(t.contains("!! MISMATCH: event-select echoed 1,234 wrong bytes in pp64-100"));
        assert!(t.contains("  event-select !! "));
        assert!(t.contains("  epoll *"));
        assert!(t.contains("* epoll: machine busy during the run (other processes used 23% CPU)"));
        assert!(t.contains(DASH));
        assert!(t.contains("not run: needs Linux 5.19"));
        assert!(t.contains("2 cores"));
        assert!(!t.contains("QUICK RUN"));
        let mut q = r.clone();
        q.quick = true;
        assert!(render_table(&q).contains("QUICK RUN"));
    }

    #[test]
    fn columns_are_aligned() {
        let r = sample::results(&MODELS, "iomodels bench");
        let t = render_table(&r);
        let start = t.find("== pp64-100 (").unwrap();
        let lines: Vec<&str> = t[start..]
            .lines()
            .skip(1)
            .take(2 + MODELS.len())
            .filter(|l| !l.contains("not run"))
            .collect();
        let width = lines[0].chars().count();
        for l in &lines {
            assert_eq!(l.chars().count(), width, "{l}");
        }
    }

    #[test]
    fn c100k_shows_held_verified_cpu_and_rss_and_why_a_model_did_not_run() {
        let r = sample::results(&MODELS, "iomodels bench");
        let t = render_table(&r);
        let start = t.find("== c100k (c100k)").unwrap();
        let block = &t[start..t[start..].find("\n== ").map_or(t.len(), |i| start + i)];
        for want in [
            "conns held",
            "still open",
            "verified echoes",
            "late rounds",
            "server CPU %",
            "RSS/conn",
            "300,000",
            "100,000",
            "410 B",
        ] {
            assert!(block.contains(want), "{want} in\n{block}");
        }
        assert!(
            block.lines().any(|l| l.starts_with("  blocking ")
                && l.ends_with("not run: cannot hold 100,000 connections: descriptors: its cap is 19,936 (RLIMIT_NOFILE 20,000 less 64)")),
            "{block}"
        );
        assert_eq!(
            block.matches("not run:").count(),
            MODELS.len() - 1,
            "{block}"
        );
    }

    #[test]
    fn a_rate_scenario_shows_saturation_and_its_curves_as_a_matrix() {
        let mut r = sample::results(&["blocking"], "iomodels bench");
        r.scenarios = vec![sample::rate_scenario()];
        // Only two of the three repetitions of select reached its second step.
        r.scenarios[0].rows[1].curve.as_mut().unwrap().points[1].runs = 2;
        let t = render_table(&r);
        for needle in [
            "saturation msg/s",
            "p99 µs at 50 %",
            "p99 µs at 90 %",
            "stop reason",
            "p99 1,500 ms at 4,000 msg/s",
            "not run: needs Linux 5.19",
        ] {
            assert!(t.contains(needle), "{needle:?} not in:\n{t}");
        }
        let lines: Vec<&str> = t.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.trim_start().starts_with("offered msg/s"))
            .unwrap_or_else(|| panic!("no matrix in:\n{t}"));
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(head), "offered msg/s blocking select");
        assert_eq!(words(head + 1), "1,000 300 / 800 350 / 900");
        assert_eq!(
            words(head + 2),
            "2,000 400 / 2,000 50,000 / 700,000 ! (2 of 3)"
        );
        assert_eq!(words(head + 3), "4,000 90,000 / 1,500,000 !");
        // The saturation with its range; the p99 at 50 % and 90 % of it.
        let blocking = lines
            .iter()
            .find(|l| l.trim_start().starts_with("blocking") && l.contains("p99 1,500"))
            .unwrap();
        assert!(blocking.contains("2,000 [1,800-2,200]"), "{blocking}");
        assert!(
            blocking.contains("810") && blocking.contains("1,900"),
            "{blocking}"
        );
    }

    #[test]
    fn udp_scenarios_show_datagrams_loss_and_cpu_per_datagram() {
        let headers: Vec<&str> = columns("udp").iter().map(|c| c.header).collect();
        for want in [
            "datagrams/s",
            "p50 µs",
            "p99 µs",
            "loss %",
            "CPU s/M dgrams",
            "errors",
        ] {
            assert!(headers.contains(&want), "{want} in {headers:?}");
        }
        assert!(!columns("pingpong").iter().any(|c| c.header == "loss %"));
    }
}
