//! Results: figures with their targets, scenario outcomes, the printed table and `results.json`.

use serde::Serialize;

use crate::machine::Machine;

/// Which way a target points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The figure must be at least the threshold (throughput, ratios).
    AtLeast,
    /// The figure must be below the threshold (latency, memory).
    Below,
}

/// A target from the issue, checked against a figure's value or its ratio to the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Direction.
    pub compare: Compare,
    /// The threshold, in the figure's unit (or as a ratio when `on_ratio`).
    pub threshold: f64,
    /// Whether the threshold applies to the ratio against the baseline instead of the value.
    pub on_ratio: bool,
    /// How the target reads in the table, e.g. `≥ 20,000/s`.
    pub label: String,
}

impl Target {
    /// The value must reach `threshold`.
    pub fn at_least(threshold: f64, label: &str) -> Target {
        Target {
            compare: Compare::AtLeast,
            threshold,
            on_ratio: false,
            label: label.to_string(),
        }
    }

    /// The value must stay below `threshold`.
    pub fn below(threshold: f64, label: &str) -> Target {
        Target {
            compare: Compare::Below,
            threshold,
            on_ratio: false,
            label: label.to_string(),
        }
    }

    /// The ratio to the baseline must reach `threshold`.
    pub fn ratio_at_least(threshold: f64, label: &str) -> Target {
        Target {
            on_ratio: true,
            ..Target::at_least(threshold, label)
        }
    }

    fn check(&self, value: f64, ratio: Option<f64>) -> Option<bool> {
        let subject = if self.on_ratio { ratio? } else { value };
        Some(match self.compare {
            Compare::AtLeast => subject >= self.threshold,
            Compare::Below => subject < self.threshold,
        })
    }
}

/// One measured number of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured, e.g. `throughput`.
    pub name: String,
    /// The number.
    pub value: f64,
    /// Its unit, e.g. `req/s`, `ms`, `µs`, `MiB`.
    pub unit: String,
    /// The baseline's figure in the same unit, when the scenario has one.
    pub baseline: Option<f64>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// The target for this figure, if any.
    pub target: Option<Target>,
    /// Whether the target is met (`None` without a target).
    pub met: Option<bool>,
}

impl Figure {
    /// A figure without baseline or target.
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.to_string(),
            baseline: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    /// Adds the baseline's figure and the ratio to it.
    pub fn with_baseline(mut self, baseline: Option<f64>) -> Figure {
        self.baseline = baseline;
        self.ratio = baseline.filter(|b| *b > 0.0).map(|b| self.value / b);
        self.met = self
            .target
            .as_ref()
            .and_then(|t| t.check(self.value, self.ratio));
        self
    }

    /// Adds the target and checks it.
    pub fn with_target(mut self, target: Target) -> Figure {
        self.met = target.check(self.value, self.ratio);
        self.target = Some(target);
        self
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran; its figures are valid.
    Ok,
    /// It failed; the message says where.
    Error {
        /// What went wrong.
        message: String,
    },
    /// It did not run, e.g. it needs Python objects or a cluster that do not exist yet.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name, as in the table.
    pub name: String,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What it measured.
    pub figures: Vec<Figure>,
    /// Remarks printed under the table (budget hit, extrapolations, request errors).
    pub notes: Vec<String>,
    /// Raw details (latency percentiles, per-repetition timings, …).
    pub details: serde_json::Value,
    /// Wall time the scenario took, in seconds.
    pub seconds: f64,
}

impl ScenarioResult {
    /// A successful scenario with these figures.
    pub fn ok(name: impl Into<String>, figures: Vec<Figure>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            outcome: Outcome::Ok,
            figures,
            notes: Vec::new(),
            details: serde_json::Value::Null,
            seconds: 0.0,
        }
    }

    /// A failed scenario.
    pub fn error(name: impl Into<String>, message: impl Into<String>) -> ScenarioResult {
        ScenarioResult {
            outcome: Outcome::Error {
                message: message.into(),
            },
            ..ScenarioResult::ok(name, Vec::new())
        }
    }

    /// A scenario that did not run.
    pub fn skipped(name: impl Into<String>, reason: impl Into<String>) -> ScenarioResult {
        ScenarioResult {
            outcome: Outcome::Skipped {
                reason: reason.into(),
            },
            ..ScenarioResult::ok(name, Vec::new())
        }
    }

    /// Adds raw details.
    pub fn with_details(mut self, details: serde_json::Value) -> ScenarioResult {
        self.details = details;
        self
    }

    /// Adds a remark.
    pub fn with_note(mut self, note: impl Into<String>) -> ScenarioResult {
        self.notes.push(note.into());
        self
    }
}

/// Settings of the run, recorded with the results.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `quick` or `full`.
    pub mode: String,
    /// Concurrent connections of the load generator.
    pub connections: u32,
    /// Load generator threads.
    pub threads: u32,
    /// Seconds measured per HTTP scenario.
    pub duration_s: f64,
    /// Seconds of warm-up load before each HTTP measurement.
    pub warmup_s: f64,
    /// The load generator and its version, or why there is none.
    pub load_generator: String,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the run ran on.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// Every scenario, in the order run.
    pub scenarios: Vec<ScenarioResult>,
    /// Wall time of the whole driver run, in seconds.
    pub total_seconds: f64,
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let header = [
            "scenario", "measure", "figure", "unit", "baseline", "ratio", "target", "result",
        ];
        let mut rows: Vec<[String; 8]> = Vec::new();
        for s in &self.scenarios {
            match &s.outcome {
                Outcome::Ok if !s.figures.is_empty() => {
                    for (i, f) in s.figures.iter().enumerate() {
                        rows.push([
                            if i == 0 {
                                s.name.clone()
                            } else {
                                String::new()
                            },
                            f.name.clone(),
                            format_number(f.value),
                            f.unit.clone(),
                            f.baseline.map(format_number).unwrap_or_default(),
                            f.ratio.map(|r| format!("{r:.2}×")).unwrap_or_default(),
                            f.target
                                .as_ref()
                                .map(|t| t.label.clone())
                                .unwrap_or_default(),
                            match f.met {
                                Some(true) => "met".into(),
                                Some(false) => "SHORT".into(),
                                None => String::new(),
                            },
                        ]);
                    }
                }
                Outcome::Ok => rows.push(row_with_message(&s.name, "no figures")),
                Outcome::Error { message } => {
                    rows.push(row_with_message(&s.name, &format!("error: {message}")))
                }
                Outcome::Skipped { reason } => rows.push(row_with_message(&s.name, reason)),
            }
        }
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            // A message row spans the columns after the name; it does not widen them.
            if !row[2].is_empty() || !row[3].is_empty() {
                for (w, cell) in widths.iter_mut().zip(row.iter()) {
                    *w = (*w).max(cell.chars().count());
                }
            } else {
                widths[0] = widths[0].max(row[0].chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                // Numbers right-aligned, words left-aligned.
                if matches!(i, 2 | 4 | 5) {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                }
                text.push_str("  ");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        line(&header, &mut out);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule, &mut out);
        for row in &rows {
            if row[2].is_empty() && row[3].is_empty() && !row[1].is_empty() {
                // Message rows: the name, then the message across the remaining columns.
                let pad = widths[0].saturating_sub(row[0].chars().count());
                out.push_str(&format!("{}{}  {}\n", row[0], " ".repeat(pad), row[1]));
            } else {
                line(row, &mut out);
            }
        }
        let notes: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|s| s.notes.iter().map(move |n| format!("- {}: {n}", s.name)))
            .collect();
        if !notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in notes {
                out.push_str(&note);
                out.push('\n');
            }
        }
        out
    }
}

fn row_with_message(name: &str, message: &str) -> [String; 8] {
    let mut row: [String; 8] = Default::default();
    row[0] = name.to_string();
    row[1] = message.to_string();
    row
}

/// A number for the table: thousands separators for large values, a few significant digits
/// for small ones.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(format_number(78_123.4), "78,123");
        assert_eq!(format_number(1_000_000.0), "1,000,000");
        assert_eq!(format_number(512.4), "512");
        assert_eq!(format_number(12.34), "12.3");
        assert_eq!(format_number(2.456), "2.46");
        assert_eq!(format_number(0.1234), "0.123");
    }

    #[test]
    fn checks_targets_on_value_and_ratio() {
        let f = Figure::new("throughput", 30_000.0, "req/s")
            .with_target(Target::at_least(20_000.0, "≥ 20,000/s"));
        assert_eq!(f.met, Some(true));
        let f = Figure::new("warm call", 25.0, "µs").with_target(Target::below(20.0, "< 20 µs"));
        assert_eq!(f.met, Some(false));
        let f = Figure::new("throughput", 50.0, "req/s")
            .with_baseline(Some(100.0))
            .with_target(Target::ratio_at_least(0.7, "≥ 0.7×"));
        assert_eq!(f.ratio, Some(0.5));
        assert_eq!(f.met, Some(false));
        let f = Figure::new("throughput", 50.0, "req/s")
            .with_target(Target::ratio_at_least(0.7, "≥ 0.7×"))
            .with_baseline(None);
        assert_eq!(f.met, None);
    }

    #[test]
    fn table_lists_every_scenario() {
        let report = Report {
            machine: Machine::default(),
            settings: Settings {
                mode: "quick".into(),
                connections: 32,
                threads: 1,
                duration_s: 3.0,
                warmup_s: 1.0,
                load_generator: "wrk".into(),
            },
            scenarios: vec![
                ScenarioResult::ok(
                    "hello GET",
                    vec![
                        Figure::new("throughput", 40_000.0, "req/s")
                            .with_baseline(Some(80_000.0))
                            .with_target(Target::ratio_at_least(0.7, "≥ 0.7×")),
                    ],
                ),
                ScenarioResult::error("counter POST", "station did not start"),
                ScenarioResult::skipped("replication lag", "not available yet"),
            ],
            total_seconds: 1.0,
        };
        let table = report.table();
        assert!(table.contains("0.50×"), "{table}");
        assert!(table.contains("SHORT"), "{table}");
        assert!(table.contains("error: station did not start"), "{table}");
        assert!(table.contains("replication lag"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenarios"][1]["status"], "error");
        assert_eq!(json["scenarios"][2]["status"], "skipped");
    }
}
