//! What a bench run measured: the data behind the table, the JSON file and the HTML report.

use serde::{Deserialize, Serialize};

/// Everything one `iomodels bench` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResults {
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

/// The machine and how the run used it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name (from /proc/cpuinfo).
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release (uname -r).
    pub kernel: String,
    /// Operating system.
    pub os: String,
    /// How server and load generator were placed, e.g. "server on CPU 0, load on CPU 1", or
    /// why they could not be pinned.
    pub placement: String,
    /// Whether SCHED_RR was used (`--realtime`).
    pub realtime: bool,
}

/// What one scenario measured for every model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Short name, as `--scenario` takes it: `pp64-1`, `pp64-100`, `pp64-1000`, `pp4k-100`,
    /// `pp64k-10`, `idle`, `c12k`, `max-conns`.
    pub name: String,
    /// One sentence: what it does.
    pub description: String,
    /// `pingpong`, `idle`, `c12k` or `max-conns`: which columns matter.
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
    /// Server RSS growth per open connection, bytes (idle, c12k, max-conns).
    pub rss_per_conn_bytes: Option<Stat>,
    /// Connections held (idle, c12k, max-conns).
    pub conns_held: Option<u64>,
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
            conns_held: None,
            stop_reason: None,
            mismatches: 0,
            errors: 0,
            busy: None,
            note: Some(why),
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
}
