//! Records the git commit the binary is built from (when built from a checkout), for the
//! `version` and `commit` every JSON output carries (`src/about.rs`). Outside a checkout, or
//! without git, there is none, and the build goes on.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    if let Some(c) = commit {
        let c = if dirty { format!("{c}-modified") } else { c };
        println!("cargo:rustc-env=IOMODELS_GIT_COMMIT={c}");
    }
    // A new commit or a checkout changes HEAD or the ref it names.
    for path in [".git/HEAD", ".git/index"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
