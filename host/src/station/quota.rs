//! Quotas: what one object may use. The station has defaults (`host serve --quota-*`); a deploy
//! may override any of them for that object (`host deploy --quota state-mb=64,rate=100`). The
//! overrides are kept with the version they were deployed with (so they travel with it to
//! replicas, migrations and failovers) and carry over to the next deploy unless it gives its own.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as Rate, RateLimiter};

/// Most instances one object may serve parallel reads with.
pub const MAX_READERS: u32 = 64;

/// The limits that apply to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Quota {
    /// Bytes of live state (keys and values) (→ 507 `state_quota_exceeded`).
    pub state_bytes: u64,
    /// Live keys (→ 507 `state_quota_exceeded`).
    pub keys: u64,
    /// Bytes one call may write (keys and values) (→ 413 `write_quota_exceeded`).
    pub write_bytes: u64,
    /// Bytes of the object's own log lines per second; lines over it are dropped and counted.
    pub log_bytes_per_sec: u64,
    /// Calls running or waiting for the object's turn (→ 429 `too_busy`).
    pub queue: u32,
    /// Calls per second (0 = unlimited) (→ 429 `rate_limited`).
    pub rate: u32,
    /// Instances that serve GET calls side by side, outside the turn queue (0 = GETs take the
    /// turn like every other call). A GET that writes state then traps.
    pub readers: u32,
}

impl Default for Quota {
    /// The station defaults `host serve` starts with.
    fn default() -> Quota {
        Quota {
            state_bytes: 1 << 30,
            keys: 1_000_000,
            write_bytes: 32 << 20,
            log_bytes_per_sec: 256 << 10,
            queue: 256,
            rate: 0,
            readers: 0,
        }
    }
}

/// A deploy's overrides, each `None` where the station default applies. Written and parsed as
/// `state-mb=64,keys=1000,write-mb=8,log-kb-s=64,queue=100,rate=50` (any subset, any order);
/// the empty string means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverrides {
    state_mb: Option<u64>,
    keys: Option<u64>,
    write_mb: Option<u64>,
    log_kb_s: Option<u64>,
    queue: Option<u32>,
    rate: Option<u32>,
    readers: Option<u32>,
}

/// A quota string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad quota {text:?}: {reason} (expected NAME=N,... with names state-mb, keys, write-mb, log-kb-s, queue, rate, readers)"
)]
pub struct BadQuota {
    text: String,
    reason: String,
}

impl QuotaOverrides {
    /// The limits with these overrides over `defaults`.
    pub fn over(&self, defaults: &Quota) -> Quota {
        Quota {
            state_bytes: self.state_mb.map_or(defaults.state_bytes, |mb| mb << 20),
            keys: self.keys.unwrap_or(defaults.keys),
            write_bytes: self.write_mb.map_or(defaults.write_bytes, |mb| mb << 20),
            log_bytes_per_sec: self
                .log_kb_s
                .map_or(defaults.log_bytes_per_sec, |kb| kb << 10),
            queue: self.queue.unwrap_or(defaults.queue),
            rate: self.rate.unwrap_or(defaults.rate),
            readers: self.readers.unwrap_or(defaults.readers),
        }
    }
}

impl FromStr for QuotaOverrides {
    type Err = BadQuota;

    fn from_str(text: &str) -> Result<QuotaOverrides, BadQuota> {
        let bad = |reason: String| BadQuota {
            text: text.to_string(),
            reason,
        };
        let mut overrides = QuotaOverrides::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} has no `=`")))?;
            let number: u64 = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("{name} is not a whole number: {value:?}")))?;
            let small =
                || u32::try_from(number).map_err(|_| bad(format!("{name} is too large: {number}")));
            let positive = |n: u64| {
                if n == 0 {
                    Err(bad(format!("{name} must be at least 1")))
                } else {
                    Ok(n)
                }
            };
            match name.trim() {
                "state-mb" => overrides.state_mb = Some(positive(number)?.min(1 << 40)),
                "keys" => overrides.keys = Some(positive(number)?),
                "write-mb" => overrides.write_mb = Some(positive(number)?.min(1 << 40)),
                "log-kb-s" => overrides.log_kb_s = Some(number.min(1 << 30)),
                "queue" => overrides.queue = Some(positive(small()? as u64)? as u32),
                "rate" => overrides.rate = Some(small()?),
                "readers" => overrides.readers = Some(small()?.min(MAX_READERS)),
                other => return Err(bad(format!("unknown quota {other:?}"))),
            }
        }
        Ok(overrides)
    }
}

impl fmt::Display for QuotaOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("state-mb", self.state_mb),
            ("keys", self.keys),
            ("write-mb", self.write_mb),
            ("log-kb-s", self.log_kb_s),
            ("queue", self.queue.map(u64::from)),
            ("rate", self.rate.map(u64::from)),
            ("readers", self.readers.map(u64::from)),
        ];
        let mut first = true;
        for (name, value) in parts {
            if let Some(value) = value {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{name}={value}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// An object's quota with the meters that enforce its rates; one per live version.
pub(super) struct Meters {
    pub(super) quota: Quota,
    /// Calls per second, when limited.
    calls: Option<DefaultDirectRateLimiter>,
    /// Log bytes per second, when limited.
    log: Option<DefaultDirectRateLimiter>,
    /// Lines dropped since the last summary line, and their bytes.
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
    /// When the last summary line was written.
    last_summary: Mutex<Option<Instant>>,
}

/// What to do with an object's log line.
pub(super) enum LogAdmission {
    /// Write it.
    Write,
    /// Write it, after this summary of the lines dropped before it.
    WriteAfterSummary(String),
    /// Drop it (counted).
    Drop,
}

impl Meters {
    /// Meters for `quota`.
    pub(super) fn new(quota: Quota) -> Meters {
        let calls =
            NonZeroU32::new(quota.rate).map(|rate| RateLimiter::direct(Rate::per_second(rate)));
        let log = u32::try_from(quota.log_bytes_per_sec)
            .ok()
            .and_then(NonZeroU32::new)
            .map(|bytes| RateLimiter::direct(Rate::per_second(bytes)));
        Meters {
            quota,
            calls,
            log,
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            last_summary: Mutex::new(None),
        }
    }

    /// Takes a call from the rate; `Err(wait)` when the object is over it.
    pub(super) fn admit_call(&self) -> Result<(), Duration> {
        let Some(calls) = &self.calls else {
            return Ok(());
        };
        calls
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Whether a log line of `bytes` fits the object's log rate. A quota of 0 drops every line.
    pub(super) fn admit_log(&self, bytes: usize) -> LogAdmission {
        let admitted = match &self.log {
            None => self.quota.log_bytes_per_sec > 0,
            Some(log) => NonZeroU32::new(bytes.max(1).min(u32::MAX as usize) as u32)
                .is_some_and(|n| matches!(log.check_n(n), Ok(Ok(())))),
        };
        if !admitted {
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            return LogAdmission::Drop;
        }
        if self.dropped_lines.load(Ordering::Relaxed) == 0 {
            return LogAdmission::Write;
        }
        // At most one summary a second, so a steady flood writes one line per second of it.
        {
            let mut last = self.last_summary.lock().expect("summary lock");
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return LogAdmission::Write;
            }
            *last = Some(Instant::now());
        }
        let lines = self.dropped_lines.swap(0, Ordering::Relaxed);
        let bytes = self.dropped_bytes.swap(0, Ordering::Relaxed);
        LogAdmission::WriteAfterSummary(format!(
            "{lines} log lines ({bytes} bytes) dropped: over the log quota of {} KiB/s",
            self.quota.log_bytes_per_sec >> 10
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_print_and_apply_over_the_defaults() {
        let overrides: QuotaOverrides = " rate=5, state-mb=2,keys=10 ".parse().unwrap();
        assert_eq!(overrides.to_string(), "state-mb=2,keys=10,rate=5");
        assert_eq!(
            overrides.to_string().parse::<QuotaOverrides>().unwrap(),
            overrides
        );
        let quota = overrides.over(&Quota::default());
        assert_eq!(quota.state_bytes, 2 << 20);
        assert_eq!(quota.keys, 10);
        assert_eq!(quota.rate, 5);
        assert_eq!(quota.queue, Quota::default().queue);
        assert_eq!(
            quota.readers, 0,
            "GETs take the turn unless readers are given"
        );
        let readers: QuotaOverrides = "readers=4".parse().unwrap();
        assert_eq!(readers.to_string(), "readers=4");
        assert_eq!(readers.over(&Quota::default()).readers, 4);
        let capped: QuotaOverrides = "readers=1000".parse().unwrap();
        assert_eq!(capped.over(&Quota::default()).readers, MAX_READERS);
        assert_eq!(
            "".parse::<QuotaOverrides>().unwrap(),
            QuotaOverrides::default()
        );
        for bad in [
            "state-mb",
            "state-mb=x",
            "nope=1",
            "queue=0",
            "rate=99999999999",
            "keys=-1",
        ] {
            assert!(bad.parse::<QuotaOverrides>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_call_rate_refuses_past_its_burst_and_says_how_long_to_wait() {
        let meters = Meters::new(Quota {
            rate: 3,
            ..Quota::default()
        });
        for _ in 0..3 {
            meters.admit_call().expect("within the burst");
        }
        let wait = meters.admit_call().expect_err("over the rate");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(Meters::new(Quota::default()).admit_call().is_ok());
    }

    #[test]
    fn log_lines_over_the_rate_are_dropped_and_summarised_once() {
        let meters = Meters::new(Quota {
            log_bytes_per_sec: 1000,
            ..Quota::default()
        });
        assert!(matches!(meters.admit_log(600), LogAdmission::Write));
        assert!(matches!(meters.admit_log(600), LogAdmission::Drop));
        assert!(matches!(meters.admit_log(5000), LogAdmission::Drop));
        // Room again for a small line: it comes with the summary of the two dropped.
        match meters.admit_log(100) {
            LogAdmission::WriteAfterSummary(summary) => {
                assert!(
                    summary.starts_with("2 log lines (5600 bytes) dropped"),
                    "{summary}"
                )
            }
            _ => panic!("no summary"),
        }
    }
}
