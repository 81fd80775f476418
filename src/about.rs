//! Where a result came from, in every JSON this tool writes (`bench --json`, `load --json`
//! in every mode, `udp send|recv --json`, `udp discover --probe --json`): `build` — the
//! version and the git commit it was built from (`None` outside a checkout; `-modified` when
//! the checkout had uncommitted changes; `build.rs`) — and `machine`, the one it ran on (CPU
//! model, cores, kernel, OS). One [`Build`] and one [`Machine`] type for all of them, so a
//! reader parses them one way: the bench results embed the same two objects (bench's machine
//! adds how it placed the processes), and [`stamped`] adds them to any other report.

use serde::{Deserialize, Serialize};

/// The build: `version` and `commit`. A file written before these were recorded reads as
/// version `unknown`, no commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Build {
    /// The crate's version.
    pub version: String,
    /// The git commit, when built from a checkout.
    pub commit: Option<String>,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            version: "unknown".into(),
            commit: None,
        }
    }
}

impl std::fmt::Display for Build {
    /// `iomodels 0.1.0 (commit 1a2b3c4d5e6f)`, or without the commit when there is none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Build::default() {
            return f.write_str("not recorded (a run before builds were)");
        }
        write!(f, "iomodels {}", self.version)?;
        match &self.commit {
            Some(c) => write!(f, " (commit {c})"),
            None => Ok(()),
        }
    }
}

/// The machine a result was measured on. The same keys in every JSON (bench's `machine`
/// flattens this and adds its own two).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// CPU model name ([`cpu_model`]).
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release ([`kernel`]).
    pub kernel: String,
    /// Operating system (`linux`, `windows`).
    pub os: String,
    /// The Wine version when a Windows build ran under Wine (ntdll's `wine_get_version`):
    /// its figures measure Wine's socket layer, not Windows'. Absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wine: Option<String>,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        Machine {
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: kernel(),
            os: std::env::consts::OS.to_string(),
            wine: wine(),
        }
    }

    /// The OS as the table and the report say it: `linux`, `windows`, or under Wine
    /// `windows (under Wine 8.0)`.
    pub fn os_label(&self) -> String {
        match &self.wine {
            Some(v) => format!("{} (under Wine {v})", self.os),
            None => self.os.clone(),
        }
    }
}

/// The Wine version this Windows build runs under, if it does.
fn wine() -> Option<String> {
    #[cfg(windows)]
    return iomodels_server::sys::wine_version();
    #[cfg(not(windows))]
    None
}

/// A report with this binary's `build` and this `machine` after its own keys.
#[derive(Serialize)]
struct Stamped<'a, T: Serialize> {
    #[serde(flatten)]
    report: &'a T,
    build: Build,
    machine: Machine,
}

/// `report` as one line of JSON, with `build` and `machine` added (see the module doc).
pub fn stamped<T: Serialize>(report: &T) -> String {
    let s = Stamped {
        report,
        build: build(),
        machine: Machine::this(),
    };
    serde_json::to_string(&s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// This binary's build.
pub fn build() -> Build {
    Build {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: option_env!("IOMODELS_GIT_COMMIT").map(str::to_string),
    }
}

/// The CPU model name (Linux: /proc/cpuinfo; Windows: the `PROCESSOR_IDENTIFIER` variable),
/// or `unknown`.
pub fn cpu_model() -> String {
    #[cfg(windows)]
    if let Ok(id) = std::env::var("PROCESSOR_IDENTIFIER") {
        return id;
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The kernel release (Linux; on Windows, what `OS` says, e.g. `Windows_NT`), or `unknown`.
pub fn kernel() -> String {
    #[cfg(windows)]
    if let Ok(os) = std::env::var("OS") {
        return os;
    }
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_names_its_version_and_this_checkouts_commit() {
        let b = build();
        assert_eq!(b.version, env!("CARGO_PKG_VERSION"));
        // Tests run from the repository: its commit is known.
        let c = b.commit.expect("built from a checkout");
        assert!(
            c.len() >= 12 && c[..12].chars().all(|ch| ch.is_ascii_hexdigit()),
            "{c}"
        );
        assert_ne!(cpu_model(), "");
    }

    #[test]
    fn a_stamped_report_keeps_its_keys_and_adds_build_and_machine() {
        #[derive(Serialize)]
        struct R {
            elapsed_secs: f64,
            error: Option<String>,
        }
        let v: serde_json::Value = serde_json::from_str(&stamped(&R {
            elapsed_secs: 1.5,
            error: None,
        }))
        .unwrap();
        assert_eq!(v["elapsed_secs"], 1.5);
        assert!(v["error"].is_null());
        assert_eq!(v["build"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["machine"]["os"], std::env::consts::OS);
        // Only a Windows build under Wine says "wine"; Linux JSON has no such key.
        assert_eq!(v["machine"].get("wine").is_some(), wine().is_some());
        if cfg!(target_os = "linux") {
            assert_eq!(Machine::this().os_label(), "linux");
        }
        assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
        let m: Machine = serde_json::from_value(v["machine"].clone()).unwrap();
        assert_eq!(m, Machine::this());
    }
}
