//! The `rate64-100` scenario: latency against offered load, up to saturation.
//!
//! For each model, one server, a short closed-loop warm-up, then a *ladder* of offered rates:
//! [`CONNS`] connections of [`SIZE`]-byte messages driven open-loop (`load --rate`, depth 1:
//! as wrk2, a connection's next message waits for the echo of the last, timed from its due
//! time), starting at [`Ladder::start`] messages per second and multiplied by
//! [`Ladder::factor`] at each step. A step is *kept* when the messages sent per second of the
//! step reach [`KEPT_SHARE`] of the offered rate (with depth 1 a connection sends only once its
//! last message is answered, so a server that falls behind holds the sending back), at least
//! that share of them came back verified, and the p99 from the schedule has not *exploded*
//! (above [`EXPLODED_FACTOR`] × the first step's, and above [`EXPLODED_FLOOR_US`]). The send
//! rate is over the step's own span, so a late last echo (a scheduling hiccup at the very end)
//! does not end a ladder; the received rate (echoes per second until the last one) is the
//! figure reported. The ladder
//! stops after the first step not kept (that step is recorded: it shows the knee), or after
//! [`Ladder::steps`] steps; each step is bounded by its length plus a 1 s drain.
//!
//! The *saturation rate* of a repetition is the received rate of its highest kept step; the
//! p99 at 50 % and 90 % of it is interpolated between the steps (log-linear in the rate).
//! Depth 1 means the saturation is the closed loop's throughput at [`CONNS`] connections
//! (`pp64-100`'s msgs/s): beyond it the latency from the schedule grows with the backlog, which
//! a closed loop cannot show.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use iomodels_load::LoadConfig;

use super::results::{Curve, CurvePoint, Stat};

/// The scenario's name.
pub(super) const NAME: &str = "rate64-100";
/// Connections of every step.
pub(super) const CONNS: usize = 100;
/// Bytes per message.
pub(super) const SIZE: usize = 64;
/// A step is kept when its received rate is at least this share of the offered rate.
pub(super) const KEPT_SHARE: f64 = 0.9;
/// ... and its p99 from the schedule at most this many times the first step's ...
pub(super) const EXPLODED_FACTOR: u64 = 20;
/// ... or at most this (µs), whichever is higher.
pub(super) const EXPLODED_FLOOR_US: u64 = 50_000;

/// The offered rates of a ladder, and how long each is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ladder {
    /// The first step's rate, messages per second.
    pub(super) start: f64,
    /// Each step offers this many times the last.
    pub(super) factor: f64,
    /// At most this many steps.
    pub(super) steps: usize,
    /// Measured length of a step.
    pub(super) step: Duration,
}

impl Ladder {
    /// The full run's: 1,000 msg/s × 1.5 per step, up to 16 steps (~440,000 msg/s), 0.5 s
    /// each (a ladder takes ~8 s per model and repetition on the project's machine).
    pub(super) fn full() -> Ladder {
        Ladder {
            start: 1000.0,
            factor: 1.5,
            steps: 16,
            step: Duration::from_millis(500),
        }
    }

    /// `--quick`'s: 1,000 msg/s × 2.5 per step, up to 5 steps (~39,000 msg/s), 250 ms each.
    pub(super) fn quick() -> Ladder {
        Ladder {
            start: 1000.0,
            factor: 2.5,
            steps: 5,
            step: Duration::from_millis(250),
        }
    }

    /// The offered rate of step `i` (from 0), whole messages per second.
    pub(super) fn rate(&self, i: usize) -> u64 {
        (self.start * self.factor.powi(i as i32)).round() as u64
    }

    /// One sentence for the scenario's description.
    pub(super) fn describe(&self) -> String {
        format!(
            "open loop (load --rate, depth 1, latency from each message's due time): {CONNS} \
             connections of {SIZE} B messages offered {} msg/s, then ×{} per step, {:.2} s \
             each, up to {} steps; a step is kept when at least {:.0} % of the offered rate \
             is sent (depth 1: a message waits for the last echo) and echoed, and its p99 stays \
             under {EXPLODED_FACTOR}× the first step's (or {} ms); the ladder stops after the \
             first step not kept. Saturation: the received rate of the highest step kept",
            super::table::thousands(self.rate(0)),
            self.factor,
            self.step.as_secs_f64(),
            self.steps,
            KEPT_SHARE * 100.0,
            EXPLODED_FLOOR_US / 1000
        )
    }
}

/// One step of one repetition.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Step {
    pub(super) requested: u64,
    pub(super) sent_per_sec: f64,
    pub(super) received_per_sec: f64,
    /// Messages sent, and echoed back verified.
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) p50_us: u64,
    pub(super) p99_us: u64,
    pub(super) service_p99_us: Option<u64>,
    pub(super) kept: bool,
}

/// One repetition's ladder.
#[derive(Debug, Clone)]
pub(super) struct Run {
    /// The rates it offered.
    pub(super) ladder: Ladder,
    pub(super) steps: Vec<Step>,
    /// Why the ladder stopped.
    pub(super) stop_reason: String,
    pub(super) mismatches: u64,
    /// Connect and I/O errors (unanswered messages are not errors: they are measured).
    pub(super) errors: u64,
}

impl Run {
    /// A ladder not yet run.
    pub(super) fn new(ladder: Ladder) -> Run {
        Run {
            ladder,
            steps: Vec::new(),
            stop_reason: String::new(),
            mismatches: 0,
            errors: 0,
        }
    }

    /// The highest kept step.
    pub(super) fn saturation(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.kept)
    }

    /// The p99 from the schedule at `share` of the saturation rate: log-linear between the
    /// kept steps around it; `None` without saturation or below the first step.
    pub(super) fn p99_at(&self, share: f64) -> Option<f64> {
        let sat = self.saturation()?;
        let x = share * sat.received_per_sec;
        let kept: Vec<&Step> = self.steps.iter().filter(|s| s.kept).collect();
        let pos = |s: &Step| (s.requested as f64).ln();
        let lx = x.ln();
        for w in kept.windows(2) {
            let (a, b) = (w[0], w[1]);
            if (pos(a)..=pos(b)).contains(&lx) {
                let t = (lx - pos(a)) / (pos(b) - pos(a)).max(1e-12);
                return Some(a.p99_us as f64 + t * (b.p99_us as f64 - a.p99_us as f64));
            }
        }
        // At or past the last kept step's offered rate (saturation received a bit above it).
        let last = kept.last()?;
        (lx >= pos(last)).then_some(last.p99_us as f64)
    }
}

/// Whether a step is kept, given the first step's p99.
fn kept(step: &Step, first_p99: u64) -> bool {
    rate_kept(step) && step.p99_us <= (EXPLODED_FACTOR * first_p99).max(EXPLODED_FLOOR_US)
}

/// Whether a step sent at the offered rate and got its echoes back.
fn rate_kept(step: &Step) -> bool {
    step.sent_per_sec >= KEPT_SHARE * step.requested as f64
        && step.received as f64 >= KEPT_SHARE * step.sent as f64
}

/// Runs the ladder against the echo server at `addr`.
pub(super) fn ladder(addr: SocketAddr, ladder: &Ladder) -> Result<Run> {
    let mut run = Run::new(*ladder);
    let mut first_p99 = None;
    for i in 0..ladder.steps {
        let requested = ladder.rate(i);
        let report = iomodels_load::run(&LoadConfig {
            connect: addr,
            conns: CONNS,
            size: SIZE,
            duration: ladder.step,
            drain_timeout: Duration::from_secs(1),
            rate: Some(requested),
            ..LoadConfig::default()
        })?;
        run.mismatches += report.mismatches;
        run.errors += report.connect_errors + report.io_errors + report.tls_errors;
        // Not one echo: no latency to draw; the ladder ends here.
        let Some(latency) = report.latency_us.as_ref() else {
            run.stop_reason = format!(
                "no echo at {} msg/s{}",
                super::table::thousands(requested),
                report
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!(": {e}"))
            );
            return Ok(run);
        };
        let mut step = Step {
            requested,
            sent_per_sec: report.rate_sent_per_sec.unwrap_or(0.0),
            received_per_sec: report.rate_received_per_sec.unwrap_or(0.0),
            sent: report.rate_sent.unwrap_or(0),
            received: report.messages,
            p50_us: latency.p50,
            p99_us: latency.p99,
            service_p99_us: report.service_latency_us.as_ref().map(|l| l.p99),
            kept: false,
        };
        let first = *first_p99.get_or_insert(step.p99_us.max(1));
        step.kept = kept(&step, first) && report.conns_established == CONNS;
        let why = if report.conns_established < CONNS {
            Some(format!(
                "{} of {CONNS} connections at {} msg/s",
                report.conns_established,
                super::table::thousands(requested)
            ))
        } else if !rate_kept(&step) {
            Some(format!(
                "sent {}, received {} of {} msg/s offered",
                super::table::thousands(step.sent_per_sec.round() as u64),
                super::table::thousands(step.received_per_sec.round() as u64),
                super::table::thousands(requested)
            ))
        } else if !step.kept {
            Some(format!(
                "p99 {} ms at {} msg/s (first step: {} ms)",
                super::table::fmt_sig(step.p99_us as f64 / 1000.0),
                super::table::thousands(requested),
                super::table::fmt_sig(first as f64 / 1000.0)
            ))
        } else {
            None
        };
        run.steps.push(step);
        if let Some(why) = why {
            run.stop_reason = why;
            return Ok(run);
        }
    }
    run.stop_reason = format!(
        "kept all {} steps (up to {} msg/s)",
        ladder.steps,
        super::table::thousands(ladder.rate(ladder.steps - 1))
    );
    Ok(run)
}

/// The repetitions' ladders as one curve (`None` without any).
pub(super) fn merge(runs: &[&Run]) -> Option<Curve> {
    let ladder = runs.first()?.ladder;
    let longest = runs.iter().map(|r| r.steps.len()).max().unwrap_or(0);
    let points = (0..longest)
        .map(|i| {
            let at: Vec<&Step> = runs.iter().filter_map(|r| r.steps.get(i)).collect();
            let stat = |f: &dyn Fn(&Step) -> f64| {
                Stat::of(&at.iter().map(|s| f(s)).collect::<Vec<_>>()).expect("a step ran")
            };
            let service: Vec<f64> = at
                .iter()
                .filter_map(|s| s.service_p99_us.map(|v| v as f64))
                .collect();
            CurvePoint {
                rate_requested_per_sec: ladder.rate(i) as f64,
                rate_sent_per_sec: stat(&|s| s.sent_per_sec),
                rate_received_per_sec: stat(&|s| s.received_per_sec),
                p50_us: stat(&|s| s.p50_us as f64),
                p99_us: stat(&|s| s.p99_us as f64),
                service_p99_us: Stat::of(&service),
                kept: at.iter().all(|s| s.kept),
                runs: at.len(),
            }
        })
        .collect();
    let at = |share| {
        Stat::of(
            &runs
                .iter()
                .filter_map(|r| r.p99_at(share))
                .collect::<Vec<_>>(),
        )
    };
    Some(Curve {
        conns: CONNS,
        size_bytes: SIZE,
        step_secs: ladder.step.as_secs_f64(),
        points,
        p99_us_at_50_percent: at(0.5),
        p99_us_at_90_percent: at(0.9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(requested: u64, received: f64, p99: u64) -> Step {
        Step {
            requested,
            sent_per_sec: requested as f64,
            received_per_sec: received,
            sent: requested / 2,
            received: (received / 2.0) as u64,
            p50_us: p99 / 2,
            p99_us: p99,
            service_p99_us: Some(p99 / 3),
            kept: false,
        }
    }

    #[test]
    fn the_ladders_rates_grow_geometrically_and_quick_is_shorter() {
        let full = Ladder::full();
        assert_eq!(
            (0..4).map(|i| full.rate(i)).collect::<Vec<_>>(),
            [1000, 1500, 2250, 3375]
        );
        let quick = Ladder::quick();
        assert!(quick.steps < full.steps && quick.step < full.step);
        assert_eq!(quick.rate(4), 39_063);
    }

    #[test]
    fn a_step_is_kept_while_the_rate_comes_back_and_p99_does_not_explode() {
        assert!(kept(&step(1000, 990.0, 2000), 2000));
        assert!(!kept(&step(1000, 800.0, 2000), 2000), "received 80 %");
        // Sent 80 % of the offered rate (held back by late echoes): not kept.
        let mut held = step(1000, 1000.0, 2000);
        held.sent_per_sec = 800.0;
        assert!(!kept(&held, 2000));
        // A late last echo lowers the received rate, not the count: kept.
        let mut tail = step(1000, 850.0, 2000);
        tail.received = tail.sent;
        assert!(kept(&tail, 2000));
        // 20 × 2 ms = 40 ms is under the 50 ms floor: 45 ms is kept, 60 ms is not.
        assert!(kept(&step(1000, 1000.0, 45_000), 2000));
        assert!(!kept(&step(1000, 1000.0, 60_000), 2000));
        // A higher first p99 raises the bound: 20 × 5 ms = 100 ms.
        assert!(kept(&step(1000, 1000.0, 90_000), 5000));
    }

    #[test]
    fn saturation_and_the_p99_at_a_share_of_it_are_read_off_the_kept_steps() {
        let mut run = Run::new(Ladder::full());
        for (r, got, p99, k) in [
            (1000, 1000.0, 1000, true),
            (2000, 2000.0, 2000, true),
            (4000, 4000.0, 4000, true),
            (8000, 5000.0, 900_000, false),
        ] {
            let mut s = step(r, got, p99);
            s.kept = k;
            run.steps.push(s);
        }
        assert_eq!(run.saturation().unwrap().requested, 4000);
        // 50 % of 4000 is the 2000 step; 90 % (3600) is 0.848 of the way from 2000 to 4000 in
        // log(rate): 2000 + 0.848 × 2000.
        assert_eq!(run.p99_at(0.5), Some(2000.0));
        let p = run.p99_at(0.9).unwrap();
        assert!((p - 3696.0).abs() < 5.0, "{p}");
        // Below the first step: nothing to read.
        assert_eq!(run.p99_at(0.1), None);
        // Saturation at the very top: its own p99.
        assert_eq!(run.p99_at(1.0), Some(4000.0));
    }

    #[test]
    fn repetitions_merge_per_step_with_the_runs_that_reached_it() {
        let ladder = Ladder::full();
        let mut a = Run::new(ladder);
        let mut b = Run::new(ladder);
        for (run, n) in [(&mut a, 3), (&mut b, 2)] {
            for i in 0..n {
                let mut s = step(ladder.rate(i), ladder.rate(i) as f64, 1000 * (i as u64 + 1));
                s.kept = i + 1 < n;
                run.steps.push(s);
            }
        }
        let c = merge(&[&a, &b]).unwrap();
        assert!(merge(&[]).is_none());
        assert_eq!(c.points.len(), 3);
        assert_eq!(c.points[0].runs, 2);
        assert_eq!(c.points[2].runs, 1);
        assert!(c.points[0].kept && !c.points[1].kept && !c.points[2].kept);
        assert_eq!(c.points[1].rate_requested_per_sec, 1500.0);
        assert_eq!(c.points[0].p99_us.median, 1000.0);
        assert_eq!((c.conns, c.size_bytes, c.step_secs), (CONNS, SIZE, 0.5));
    }
}
