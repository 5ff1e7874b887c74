//! What a comparison run produced, and how it is written: the Markdown
//! table with its conditions and ratios, and every run's figures as JSON.
//!
//! Guarantees: a figure in the table is the median of the runs of its row
//! that were verified (see `benches/README.md`); a row with no verified run
//! shows why instead of a number; nothing here computes a figure that a run
//! did not measure.

use std::fmt::Write as _;

use serde::Serialize;

use super::tally::median;

/// One verified run of one case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// Events per second over the throughput phase.
    pub rate: f64,
    /// End-to-end latency of the paced phase, median, ms.
    pub p50_ms: f64,
    /// End-to-end latency of the paced phase, 99th percentile, ms.
    pub p99_ms: f64,
    /// CPU seconds of the contender process over the throughput phase.
    pub cpu_s: f64,
    /// Events the contender processed in the throughput phase (the
    /// denominator of `rate` and of [`Run::cpu_us_per_event`]); 0 unknown.
    pub events: u64,
    /// Peak resident set of the contender process over the run, MiB.
    pub rss_mib: f64,
    /// Outputs whose record id was seen before.
    pub duplicates: usize,
    /// Inputs with no output (at-most-once only; a loss fails other runs).
    pub lost: usize,
    /// Anything else worth saying about this run.
    pub note: String,
    /// Named figures of the dynamic scenarios (settle times, RSS at…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(String, f64)>,
    /// Time series of the dynamic scenarios: (seconds, a, b) — scenario 4:
    /// RSS MiB and backlog; scenario 5: concurrency and lag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<[f64; 3]>,
}

impl Run {
    /// CPU µs per event over the throughput phase: `cpu_s` ÷ `events`
    /// (NaN when the run counted no events).
    pub fn cpu_us_per_event(&self) -> f64 {
        if self.events == 0 {
            f64::NAN
        } else {
            self.cpu_s * 1e6 / self.events as f64
        }
    }

    /// A named figure of this run.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// One case: a contender on a scenario under a guarantee.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The scenario (`Kafka 128 B`, …).
    pub scenario: String,
    /// Who ran it (`spate`, `raw rdkafka`, `Quix Streams`, …).
    pub contender: String,
    /// Delivery guarantee or ordering.
    pub guarantee: String,
    /// Verified runs.
    pub runs: Vec<Run>,
    /// Runs that failed, with the reason.
    pub failures: Vec<String>,
    /// Why the case was not run at all.
    pub not_run: Option<String>,
    /// The theoretical maximum rate, where there is one (scenario 3).
    pub bound: Option<f64>,
}

impl Row {
    /// An empty row.
    pub fn new(scenario: &str, contender: &str, guarantee: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            contender: contender.to_owned(),
            guarantee: guarantee.to_owned(),
            runs: Vec::new(),
            failures: Vec::new(),
            not_run: None,
            bound: None,
        }
    }

    /// Median of one figure over the verified runs (NaN with none).
    pub fn median_of(&self, figure: impl Fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(figure).collect::<Vec<_>>())
    }

    /// Median of one of the runs' extra figures (NaN where a run lacks it).
    pub fn median_extra(&self, name: &str) -> f64 {
        self.median_of(|r| r.extra(name).unwrap_or(f64::NAN))
    }

    /// Median events per second.
    pub fn rate(&self) -> f64 {
        self.median_of(|r| r.rate)
    }

    /// Median CPU µs per event (of the runs' own figures).
    pub fn cpu_us_per_event(&self) -> f64 {
        self.median_of(Run::cpu_us_per_event)
    }

    /// Whether the row has a figure.
    pub fn measured(&self) -> bool {
        !self.runs.is_empty()
    }
}

/// Formats a number with thousands separators.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn fixed(value: f64, places: usize) -> String {
    if value.is_finite() {
        format!("{value:.places$}")
    } else {
        "–".to_owned()
    }
}

/// The row `contender` of `scenario` under `guarantee`, if measured.
pub fn find<'r>(
    rows: &'r [Row],
    scenario: &str,
    contender: &str,
    guarantee: &str,
) -> Option<&'r Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.contender == contender && r.guarantee == guarantee)
        .filter(|r| r.measured())
}

/// The guarantee a row is compared under: its first word
/// (`at-least-once (no recovery)` compares as `at-least-once`).
fn class(guarantee: &str) -> &str {
    guarantee.split(' ').next().unwrap_or(guarantee)
}

/// Whether `contender` is a loop with no engine: the raw clients, and
/// scenario 6's plain Rust loop.
pub fn is_floor(contender: &str) -> bool {
    contender.starts_with("raw") || contender.starts_with("plain")
}

/// Whether rows `a` and `b` of one scenario compare: the same guarantee,
/// or one of them is the plain loop (which has no guarantee to match).
fn comparable(a: &Row, b: &Row) -> bool {
    a.scenario == b.scenario
        && (class(&a.guarantee) == class(&b.guarantee)
            || a.contender.starts_with("plain")
            || b.contender.starts_with("plain"))
}

/// The raw floor a row is compared with: the raw client (or plain loop) of
/// the same scenario under the same guarantee.
fn floor<'r>(rows: &'r [Row], row: &Row) -> Option<&'r Row> {
    rows.iter()
        .find(|r| is_floor(&r.contender) && comparable(r, row) && r.measured())
}

/// spate's row a peer is compared with: same scenario and guarantee.
fn spate_peer<'r>(rows: &'r [Row], row: &Row) -> Option<&'r Row> {
    if row.contender == "spate" {
        return None;
    }
    rows.iter()
        .find(|r| r.contender == "spate" && comparable(r, row) && r.measured())
}

/// The comparison table (Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | contender | guarantee / ordering | events/s | p50 ms | p99 ms | CPU s | CPU µs per event | peak RSS MiB | verified runs | ÷ raw floor | spate ÷ this |\n");
    out.push_str(
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n",
    );
    for row in rows {
        let lead = format!(
            "| {} | {} | {} ",
            row.scenario, row.contender, row.guarantee
        );
        if let Some(reason) = &row.not_run {
            let _ = writeln!(out, "{lead}| not run: {reason} | | | | | | | | |");
            continue;
        }
        if !row.measured() {
            let why = row.failures.first().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{lead}| failed: {} | | | | | | 0 of {} | | |",
                why.replace('|', "/").replace('\n', " "),
                row.failures.len()
            );
            continue;
        }
        let rate = row.rate();
        let vs_floor = match (row.bound, floor(rows, row)) {
            (Some(bound), _) => format!("{} of bound", fixed(rate / bound, 2)),
            (None, Some(raw)) => fixed(rate / raw.rate(), 2),
            _ => String::new(),
        };
        let vs_spate = spate_peer(rows, row)
            .map(|s| fixed(s.rate() / rate, 2))
            .unwrap_or_default();
        let total = row.runs.len() + row.failures.len();
        let _ = writeln!(
            out,
            "{lead}| {} | {} | {} | {} | {} | {} | {} of {total} | {vs_floor} | {vs_spate} |",
            thousands(rate),
            fixed(row.median_of(|r| r.p50_ms), 1),
            fixed(row.median_of(|r| r.p99_ms), 1),
            fixed(row.median_of(|r| r.cpu_s), 2),
            fixed(row.cpu_us_per_event(), 2),
            fixed(row.median_of(|r| r.rss_mib), 0),
            row.runs.len(),
        );
    }
    out
}

/// Every row's runs (the figures behind every median) as JSON.
pub fn runs_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
