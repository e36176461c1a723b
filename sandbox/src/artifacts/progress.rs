//! What a build shows while it runs: a bar sized by the previous build's output (the kernel's
//! `make` prints one line per object), the current phase (`==> ...` lines of our scripts), and
//! on a non-terminal stderr just the phases.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Artifact;

/// Lines a kernel build printed last time we measured; the first build's bar uses it.
const KERNEL_LINES_GUESS: u64 = 1000;
const PHASE_PREFIX: &str = "==> ";

pub(super) struct BuildProgress {
    bar: ProgressBar,
    plain: bool,
    lines: u64,
    lines_file: PathBuf,
}

impl BuildProgress {
    pub(super) fn start(artifact: Artifact, cache_name: &str, cache: &Path) -> BuildProgress {
        let lines_file = cache.join(format!("{cache_name}.lines"));
        let expected = std::fs::read_to_string(&lines_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(KERNEL_LINES_GUESS);
        let plain = !std::io::stderr().is_terminal();
        eprintln!(
            "nodeos-vm: building the {} (once, then cached; {})",
            artifact.name(),
            artifact.first_build_estimate()
        );
        let bar = if plain {
            ProgressBar::hidden()
        } else if artifact == Artifact::Kernel {
            let bar = ProgressBar::new(expected);
            bar.set_style(
                ProgressStyle::with_template(
                    "  [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
                )
                .expect("valid template"),
            );
            bar
        } else {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("  [{elapsed_precise}] {spinner} {msg}")
                    .expect("valid template"),
            );
            bar
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        BuildProgress {
            bar,
            plain,
            lines: 0,
            lines_file,
        }
    }

    pub(super) fn line(&mut self, line: &str) {
        self.lines += 1;
        if self.bar.length().is_some_and(|len| self.lines < len) {
            self.bar.set_position(self.lines);
        }
        if let Some(phase) = line.strip_prefix(PHASE_PREFIX) {
            if self.plain {
                eprintln!("  {phase}");
            }
            self.bar.set_message(phase.to_string());
        }
    }

    pub(super) fn finish(self) {
        let _ = std::fs::write(&self.lines_file, self.lines.to_string());
        self.bar.finish_and_clear();
    }

    pub(super) fn fail(self) {
        self.bar.abandon();
    }
}
