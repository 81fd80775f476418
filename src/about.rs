//! Where a result came from, in every JSON this tool writes (`bench --json`, `load --json`,
//! `udp recv --json`): the version, the git commit it was built from (`None` outside a
//! checkout; `-modified` when the checkout had uncommitted changes; `build.rs`), and the
//! machine it ran on.

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

/// The kernel release (Linux), or `unknown`.
pub fn kernel() -> String {
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
}
