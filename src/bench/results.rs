//! What a bench run measured: the data behind the table, the JSON file and the HTML report.

use serde::{Deserialize, Serialize};

/// Everything one `iomodels bench` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResults {
    /// The binary that ran it: version and git commit (`src/about.rs`; absent from files of
    /// runs before it was recorded).
    #[serde(default)]
    pub build: crate::about::Build,
    /// The machine it ran on.
    pub machine: Machine,
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    /// The exact command line.
    pub command: String,
    /// True for `--quick` (a short subset, numbers not to be trusted).
    pub quick: bool,
    /// Repetitions per model and scenario (the rows give median and min-max over them).
    pub repeat: usize,
    /// The models (and reference servers) compared, in order.
    pub models: Vec<String>,
    /// One entry per scenario, in the order run.
    pub scenarios: Vec<ScenarioResult>,
}

/// The machine and how the run used it: the `machine` object of every JSON this tool
/// writes (`cpu_model`, `cores`, `kernel`, `os`: [`crate::about::Machine`]), plus how the
/// bench placed its processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model, cores, kernel, OS (flattened: the same keys as in `load --json`).
    #[serde(flatten)]
    pub host: crate::about::Machine,
    /// How server and load generator were placed, e.g. "server on CPU 0, load on CPU 1", or
    /// why they could not be pinned.
    pub placement: String,
    /// Whether SCHED_RR was used (`--realtime`).
    pub realtime: bool,
}

impl Machine {
    /// What `--realtime` was on the OS that ran: `SCHED_RR`, or on Windows
    /// `HIGH_PRIORITY_CLASS`.
    pub fn realtime_name(&self) -> &'static str {
        if self.host.os == "windows" {
            "HIGH_PRIORITY_CLASS"
        } else {
            "SCHED_RR"
        }
    }

    /// What a reader must know of the OS the figures come from, one sentence each (none on
    /// Linux): under Wine, that they measure Wine; on Windows, where each figure comes from and
    /// which ones the OS did not give.
    pub fn os_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(v) = &self.host.wine {
            notes.push(format!(
                "Measured under Wine {v}: these figures measure Wine's user-space socket layer \
                 (wineserver and the host's Linux sockets), not Winsock; they show the Windows \
                 code runs, not how the models compare on Windows. wineserver's CPU, which \
                 carries much of the server's socket work, counts as other processes' (*)."
            ));
        }
        if self.host.os == "windows" {
            notes.push(
                "Windows figures: server CPU is GetProcessTimes (kernel + user); RSS is the \
                 working set (GetProcessMemoryInfo), private bytes are shown where the OS gives \
                 them; descriptors are kernel handles; context switches are the server threads' \
                 ContextSwitches summed (NtQuerySystemInformation), \"-\" where not counted \
                 (Wine leaves them, and private bytes, at 0)."
                    .to_string(),
            );
        }
        notes
    }
}

/// What one scenario measured for every model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Short name, as `--scenario` takes it: `pp64-1`, `pp64-100`, `pp64-1000`, `pp4k-100`,
    /// `pp64k-10`, `udp64-100`, `udp1400-100`, `rate64-100`, `idle`, `c12k`, `c100k`,
    /// `max-conns`, `soak`.
    pub name: String,
    /// One sentence: what it does.
    pub description: String,
    /// `pingpong`, `udp`, `rate`, `idle`, `c12k`, `c100k`, `max-conns` or `soak`: which
    /// columns matter.
    pub kind: String,
    /// One row per model, in the order of `BenchResults::models`.
    pub rows: Vec<Row>,
}

/// A median with the spread of the repetitions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    /// Median over the repetitions.
    pub median: f64,
    /// Smallest repetition.
    pub min: f64,
    /// Largest repetition.
    pub max: f64,
}

/// One model in one scenario. Fields a scenario does not measure are `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Model name (`event-select`, ...) or `reference: tokio`.
    pub model: String,
    /// False when the model could not run here; `note` says why.
    pub ran: bool,
    /// Echoed messages per second.
    pub msgs_per_sec: Option<Stat>,
    /// Echoed payload MB (1e6 bytes) per second.
    pub mb_per_sec: Option<Stat>,
    /// Round-trip latency percentiles, microseconds.
    pub p50_us: Option<Stat>,
    /// 99th percentile, microseconds.
    pub p99_us: Option<Stat>,
    /// 99.9th percentile, microseconds.
    pub p999_us: Option<Stat>,
    /// Server CPU seconds (user + system) per million echoed messages: the headline.
    /// `cpu_secs_per_million` in JSON (`cpu_s_per_million` in files of earlier versions).
    #[serde(rename = "cpu_secs_per_million", alias = "cpu_s_per_million")]
    pub cpu_s_per_million: Option<Stat>,
    /// Server CPU use during the run, % of one core.
    pub server_cpu_percent: Option<Stat>,
    /// Server context switches (voluntary + involuntary, all threads) per thousand messages.
    pub ctx_switches_per_1k: Option<Stat>,
    /// Times the model's wait call returned, per message.
    pub wakeups_per_msg: Option<Stat>,
    /// Socket system calls (or io_uring operations) the model issued, per message.
    pub syscalls_per_msg: Option<Stat>,
    /// UDP scenarios: datagrams not echoed within the loss timeout, % of those sent.
    #[serde(default)]
    pub loss_percent: Option<Stat>,
    /// Server RSS growth per open connection, bytes (idle, c12k, c100k, max-conns).
    pub rss_per_conn_bytes: Option<Stat>,
    /// Server private-bytes growth per open connection, bytes (idle, c12k, c100k, max-conns):
    /// Windows only (`PrivateUsage`; Wine reports none), absent from Linux results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_per_conn_bytes: Option<Stat>,
    /// Connections held (idle, c12k, c100k, max-conns; max-conns: those still echoing).
    pub conns_held: Option<u64>,
    /// Paced echoes that came back right while the connections were held (c100k).
    #[serde(default)]
    pub verified_echoes: Option<Stat>,
    /// Connections still open when the hold ended (c100k): none closed by the server.
    #[serde(default)]
    pub conns_still_open: Option<u64>,
    /// Paced rounds the load generator could not finish within their interval, over all
    /// repetitions (c100k).
    #[serde(default)]
    pub late_rounds: Option<u64>,
    /// Why the ramp stopped (max-conns).
    pub stop_reason: Option<String>,
    /// Echoed bytes that differed from what was sent, over all repetitions: must be 0.
    pub mismatches: u64,
    /// Connect and I/O errors, over all repetitions.
    pub errors: u64,
    /// Set when other processes used the CPU during a repetition (how much).
    pub busy: Option<String>,
    /// Anything else worth knowing (e.g. why a model did not run).
    pub note: Option<String>,
    /// The soak scenario: the server's RSS and descriptors over time under mixed load with
    /// faults.
    #[serde(default)]
    pub soak: Option<Soak>,
    /// The rate scenario: latency against offered load (absent from files of runs before it
    /// existed). With it, `msgs_per_sec` is the saturation rate (the received rate of the
    /// highest step kept) and `p50_us` / `p99_us` the latency from the schedule there.
    #[serde(default)]
    pub curve: Option<Curve>,
}

/// A latency–throughput curve: a ladder of offered rates (open loop, `load --rate`), each
/// step's latency measured from the messages' due times, up to the step the model no longer
/// kept. Over the repetitions: the median and min-max of the repetitions that ran a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    /// Connections of every step (one message unanswered at most on each, as wrk2's).
    pub conns: usize,
    /// Bytes per message.
    pub size_bytes: usize,
    /// Seconds each step was measured.
    pub step_secs: f64,
    /// The steps run, lowest offered rate first.
    pub points: Vec<CurvePoint>,
    /// The p99 from the schedule at half the saturation rate (interpolated between steps,
    /// log-linear); `null` below the first step.
    pub p99_us_at_50_percent: Option<Stat>,
    /// The p99 from the schedule at 90 % of the saturation rate (interpolated).
    pub p99_us_at_90_percent: Option<Stat>,
}

/// One offered rate of a [`Curve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The offered load, messages per second in total.
    pub rate_requested_per_sec: f64,
    /// Messages sent per second.
    pub rate_sent_per_sec: Stat,
    /// Echoes verified per second.
    pub rate_received_per_sec: Stat,
    /// Median latency from the schedule, µs.
    pub p50_us: Stat,
    /// 99th percentile from the schedule, µs.
    pub p99_us: Stat,
    /// 99th percentile from the actual write (service), µs; `null` when nothing came back.
    pub service_p99_us: Option<Stat>,
    /// Whether every repetition that ran it kept this rate: sent and echoed at least 90 % of
    /// it, p99 not exploded (see the scenario's description).
    pub kept: bool,
    /// Repetitions that ran this step.
    pub runs: usize,
}

/// What a soak run saw of one server: its memory and descriptors over time (flat is the goal)
/// while steady echo clients ran beside clients that misbehave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Soak {
    /// Soak length after the warm-up, seconds.
    pub duration_secs: f64,
    /// Warm-up before the first sample, seconds (the load already runs).
    pub warmup_secs: f64,
    /// Time between samples, seconds.
    pub interval_secs: f64,
    /// Descriptors of the idle server before any load.
    pub fds_before: u64,
    /// Descriptors of the server after every client closed (and a short settle).
    pub fds_after: u64,
    /// RSS of the idle server before any load, bytes (`rss_before_bytes` in JSON;
    /// `rss_before` in files of earlier versions).
    #[serde(rename = "rss_before_bytes", alias = "rss_before")]
    pub rss_before: u64,
    /// RSS after every client closed, bytes (`rss_after_bytes`; earlier: `rss_after`).
    #[serde(rename = "rss_after_bytes", alias = "rss_after")]
    pub rss_after: u64,
    /// The time series, from the end of the warm-up.
    pub samples: Vec<SoakSample>,
    /// RSS (bytes): first sample, last, smallest, largest (`rss_bytes`; earlier: `rss`).
    #[serde(rename = "rss_bytes", alias = "rss")]
    pub rss: Span,
    /// Open descriptors: first sample, last, smallest, largest.
    pub fds: Span,
    /// Least-squares slope of RSS over the samples, MiB per minute.
    pub rss_mib_per_min: f64,
    /// Least-squares slope of the descriptor count, descriptors per minute.
    pub fds_per_min: f64,
    /// Verified echoes: the steady clients' round trips plus the half-close clients' streams.
    pub echoes: u64,
    /// What each fault client did and how often it saw an error (errors are expected: the
    /// faults provoke them).
    pub faults: Vec<FaultCount>,
    /// The server process was still running at the end and answered a fresh echo.
    pub alive: bool,
}

/// One sample of a soak: seconds since the warm-up ended, RSS and descriptors then.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SoakSample {
    /// Seconds since the end of the warm-up (`t_secs`; earlier: `t`).
    #[serde(rename = "t_secs", alias = "t")]
    pub t: f64,
    /// Resident set size, bytes (`rss_bytes`; earlier: `rss`).
    #[serde(rename = "rss_bytes", alias = "rss")]
    pub rss: u64,
    /// Open descriptors.
    pub fds: u64,
}

/// First, last, smallest and largest value of a series.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Span {
    /// First sample.
    pub start: u64,
    /// Last sample.
    pub end: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
}

/// One kind of fault client in a soak and what it saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultCount {
    /// What it does, e.g. `reset mid-message`.
    pub fault: String,
    /// Cycles it completed.
    pub cycles: u64,
    /// Errors it saw (connect, I/O, timeouts): expected, counted.
    pub errors: u64,
    /// The first of them, as text (`None` without errors), so a count says what it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Span {
    /// The span of `values` (empty: all zero).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Span {
        let v: Vec<u64> = values.into_iter().collect();
        Span {
            start: v.first().copied().unwrap_or(0),
            end: v.last().copied().unwrap_or(0),
            min: v.iter().copied().min().unwrap_or(0),
            max: v.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Least-squares slope of `y` over `x` (fewer than two points, or no spread in `x`: 0).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

impl Stat {
    /// Median, min and max of `values` (empty: `None`).
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

impl Row {
    /// A row for a model that did not run, saying why.
    pub fn not_run(model: &str, why: String) -> Row {
        Row {
            model: model.to_string(),
            ran: false,
            msgs_per_sec: None,
            mb_per_sec: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            cpu_s_per_million: None,
            server_cpu_percent: None,
            ctx_switches_per_1k: None,
            wakeups_per_msg: None,
            syscalls_per_msg: None,
            loss_percent: None,
            rss_per_conn_bytes: None,
            private_per_conn_bytes: None,
            conns_held: None,
            verified_echoes: None,
            conns_still_open: None,
            late_rounds: None,
            stop_reason: None,
            mismatches: 0,
            errors: 0,
            busy: None,
            note: Some(why),
            soak: None,
            curve: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(
            Stat::of(&[3.0, 1.0, 2.0]),
            Some(Stat {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(Stat::of(&[4.0, 1.0]).unwrap().median, 2.5);
        assert_eq!(Stat::of(&[]), None);
    }

    #[test]
    fn least_squares_slope_and_span() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), 2.0);
        assert_eq!(slope(&[(0.0, 7.0), (1.0, 7.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 7.0)]), 0.0);
        let s = Span::of([5, 2, 9, 4]);
        assert_eq!((s.start, s.end, s.min, s.max), (5, 4, 2, 9));
    }
}
