//! Build script: records the git commit the binary is built from, for
//! `logship version` and `logship --version`.
//!
//! Sets `LOGSHIP_GIT_COMMIT` for the crate to one of:
//! - `$LOGSHIP_GIT_COMMIT` when set and not empty (a build without `.git`,
//!   such as `docker build --build-arg LOGSHIP_GIT_COMMIT=...`);
//! - the short hash of `HEAD` (`git rev-parse --short HEAD`), with `-dirty`
//!   when the files the binary is built from (`src/`, `build.rs`,
//!   `Cargo.toml`, `Cargo.lock`) differ from that commit;
//! - `unknown` without git, or outside a checkout of this repository (a
//!   source tarball, even one unpacked inside another repository).
//!
//! The script runs again when `HEAD`, the branch it points to or those
//! files change, so the commit is never stale; `.git` may be a directory or,
//! in a worktree, a file naming one (git resolves both).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the binary is built from; a change to any of it can make the tree
/// dirty, so the script runs again.
const SOURCES: [&str; 4] = ["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    for path in SOURCES {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=LOGSHIP_GIT_COMMIT");
    let commit = match std::env::var("LOGSHIP_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => {
            let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            git_commit(&root).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=LOGSHIP_GIT_COMMIT={commit}");
}

/// The short commit of the checkout at `root`, `-dirty` if its sources
/// differ from it; `None` without git or when `root` is not the top of a
/// checkout.
fn git_commit(root: &Path) -> Option<String> {
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    watch_head(root);
    let hash = git(root, &["rev-parse", "--short", "HEAD"])?;
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = git(root, &status).is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Asks cargo to run the script again when `HEAD` moves: `HEAD` itself (in
/// the worktree's own git dir), the branch it names and `packed-refs` (in
/// the git dir shared by all worktrees).
fn watch_head(root: &Path) {
    let absolute = |dir: String| {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        }
    };
    let Some(git_dir) = git(root, &["rev-parse", "--git-dir"]).map(absolute) else {
        return;
    };
    let common_dir = git(root, &["rev-parse", "--git-common-dir"])
        .map(absolute)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        // A packed branch has no file of its own until its next commit
        // writes one: watch the directory it will appear in (a missing
        // path would make cargo run the script on every build).
        let branch = common_dir.join(branch);
        match branch.parent().filter(|_| !branch.exists()) {
            Some(dir) => watched.push(dir.to_path_buf()),
            None => watched.push(branch),
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Runs `git -C root ARGS`; its trimmed stdout on success. Never takes
/// git's optional locks (a `git status` here must not rewrite the index).
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
