//! How the binary speaks on stderr: quiet or not, text or JSON lines, colour or not, and
//! which signal stopped it.
//!
//! Receives: the global flags (`-q`, `--log-format`, `--color`), `NO_COLOR`, whether stderr is
//! a terminal, the signal handler's word. Sends on: notices and the final error as text lines
//! or as JSON objects shaped like the log's (`timestamp`, `level`, `fields.message`, `target`).
//! Invariant: no ANSI escape reaches a file, a pipe or journald unless `--color always`.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

/// The settings every command's stderr follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub quiet: bool,
    /// `--log-format json`: notices, the summary and the final error are JSON objects too.
    pub json: bool,
}

static UI: OnceLock<Ui> = OnceLock::new();
/// Set by the signal handler when SIGTERM (not Ctrl-C) stopped the process.
static TERMINATED: AtomicBool = AtomicBool::new(false);

impl Ui {
    /// Fixes the settings for the process (the first call wins).
    pub fn install(self) {
        let _ = UI.set(self);
    }

    pub fn get() -> Ui {
        UI.get().copied().unwrap_or_default()
    }
}

/// Whether to colour: `always`/`never` as said; `auto` when stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn color_wanted(choice: ColorChoice, terminal: bool, no_color: Option<&str>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(str::is_empty),
    }
}

/// The width of the terminal stdout is, if it is one (tables are fitted to it); `COLUMNS`
/// overrides what the terminal says.
pub fn terminal_width() -> Option<usize> {
    let term = console::Term::stdout();
    if !term.is_term() {
        return None;
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    columns
        .or_else(|| term.size_checked().map(|(_, cols)| usize::from(cols)))
        .filter(|w| *w > 0)
}

/// Records that SIGTERM, not Ctrl-C, asked the process to stop.
pub fn set_terminated() {
    TERMINATED.store(true, Ordering::Relaxed);
}

/// `terminated` after SIGTERM, `interrupted` after Ctrl-C: the word for how the run ended.
pub fn stop_word() -> &'static str {
    if TERMINATED.load(Ordering::Relaxed) {
        "terminated"
    } else {
        "interrupted"
    }
}

/// A line for the person running the command (a summary, a hint), unless `-q`.
pub fn notice(text: &str) {
    let ui = Ui::get();
    if !ui.quiet {
        say(&ui, "INFO", text);
    }
}

/// A warning: shown unless `-q`, like the log's warnings.
pub fn warn(text: &str) {
    let ui = Ui::get();
    if !ui.quiet {
        say(&ui, if ui.json { "WARN" } else { "warning" }, text);
    }
}

/// The fatal error, always shown.
pub fn error(text: &str) {
    say(&Ui::get(), "ERROR", text);
}

/// A JSON value on one stderr line (the summary document with `--log-format json`).
pub fn json_line(value: &serde_json::Value) {
    let _ = writeln!(crate::cli::progress::LogWriter, "{value}");
}

fn say(ui: &Ui, level: &str, text: &str) {
    let mut w = crate::cli::progress::LogWriter;
    let _ = if ui.json {
        let doc = serde_json::json!({
            "timestamp": s3meta::model::timefmt::now(),
            "level": level,
            "fields": { "message": text },
            "target": "s3meta",
        });
        writeln!(w, "{doc}")
    } else {
        match level {
            "ERROR" => writeln!(w, "error: {text}"),
            "warning" => writeln!(w, "warning: {text}"),
            _ => writeln!(w, "{text}"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_a_terminal_without_no_color() {
        assert!(color_wanted(ColorChoice::Auto, true, None));
        assert!(color_wanted(ColorChoice::Auto, true, Some("")));
        assert!(!color_wanted(ColorChoice::Auto, true, Some("1")));
        assert!(!color_wanted(ColorChoice::Auto, false, None));
        assert!(color_wanted(ColorChoice::Always, false, Some("1")));
        assert!(!color_wanted(ColorChoice::Never, true, None));
    }
}
