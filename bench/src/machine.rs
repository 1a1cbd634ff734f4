//! What a run ran on: cores, CPU model, memory, kernel, date and the repository's revision.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The machine and the code a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// Cores available to the process (`nproc`).
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// When the run started, UTC, RFC 3339.
    pub date: String,
    /// `git rev-parse HEAD` of the repository.
    pub git_rev: String,
    /// Whether the work tree had uncommitted changes.
    pub git_dirty: bool,
    /// `rustc --version`.
    pub rustc: String,
}

impl Machine {
    /// Reads everything it can; a field it cannot read stays empty.
    pub fn detect(repo: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            memory_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib / 1024)
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            date: rfc3339_utc(std::time::SystemTime::now()),
            git_rev: output(
                Command::new("git")
                    .arg("-C")
                    .arg(repo)
                    .args(["rev-parse", "HEAD"]),
            ),
            git_dirty: !output(
                Command::new("git")
                    .arg("-C")
                    .arg(repo)
                    .args(["status", "--porcelain"]),
            )
            .is_empty(),
            rustc: output(Command::new("rustc").arg("--version")),
        }
    }
}

/// The value of the first `key : value` line of a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// A command's trimmed stdout, or empty if it fails.
fn output(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `2025-01-31T12:34:56Z`.
pub fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(rfc3339_utc(t), "2000-02-29T01:01:01Z");
        assert_eq!(rfc3339_utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn reads_proc_fields() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\n";
        assert_eq!(field(text, "model name").as_deref(), Some("AMD EPYC"));
        assert_eq!(field(text, "flags"), None);
    }
}
