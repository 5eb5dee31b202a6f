//! Bugs the fuzzer found that are reported and not fixed yet. While one is
//! listed, an input that hits it is counted rather than reported as a crash,
//! so a short run (`make test`) stays green and a long run goes on past it;
//! with `NVGRED_FUZZ_STRICT=1` every panic is a crash, with
//! `NVGRED_FUZZ_STRICT=<id>` that bug's (to minimize its input with
//! `-minimize_crash=1`). Each entry's input is kept in
//! `crashes/<target>/<id>`, which `make test` replays: fixing the bug means
//! deleting its entry here, and the input then guards against its return.
//!
//! A panic matches an entry by the file it was raised in and a part of its
//! message, not by line, so edits around it do not unlist it.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Known {
    /// Short name, as the report and `crashes/` use it.
    pub id: &'static str,
    /// The end of the path of the file that panics.
    pub file: &'static str,
    /// A part of the panic message.
    pub message: &'static str,
}

pub const KNOWN: &[Known] = &[
    // Empty: every bug found so far is fixed; its input in crashes/ is a regression test.
];

/// Hits per entry of [`KNOWN`] in this process.
static HITS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

thread_local! {
    /// The entry of [`KNOWN`] the input running now hit for the first time.
    static FIRST_HIT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// After an input that panicked with a known bug: if it is that bug's first
/// hit and `NVGRED_FUZZ_KNOWN_DIR` names a directory, keep the input there
/// as `<id>` (an example for the report and `crashes/`).
pub fn keep_first_hit(input: &[u8]) {
    let Some(k) = FIRST_HIT.take() else { return };
    if let Some(dir) = std::env::var_os("NVGRED_FUZZ_KNOWN_DIR") {
        let path = std::path::Path::new(&dir).join(KNOWN[k].id);
        if let Err(e) = std::fs::write(&path, input) {
            eprintln!("nvgred-fuzz: writing {}: {e}", path.display());
        }
    }
}

fn matching(info: &PanicHookInfo) -> Option<usize> {
    let file = info.location()?.file();
    let message = message(info);
    KNOWN.iter().position(|k| file.ends_with(k.file) && message.contains(k.message))
}

fn message(info: &PanicHookInfo) -> String {
    match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => String::from("(not a string)"),
    }
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> i32;
}

extern "C" fn report_hits() {
    for (k, hits) in KNOWN.iter().zip(&HITS) {
        let n = hits.load(Ordering::Relaxed);
        if n > 0 {
            eprintln!("nvgred-fuzz: known bug {} hit {n} times (not counted as a crash)", k.id);
        }
    }
}

/// Known panics unwind quietly (counted, summed up at exit); any other is
/// printed with its backtrace and aborts the process for libFuzzer.
pub fn install_panic_hook() {
    assert!(KNOWN.len() <= HITS.len(), "more known bugs than counters");
    let strict = std::env::var("NVGRED_FUZZ_STRICT").unwrap_or_default();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(k) = matching(info).filter(|&k| strict != "1" && strict != KNOWN[k].id) {
            if HITS[k].fetch_add(1, Ordering::Relaxed) == 0 {
                FIRST_HIT.set(Some(k));
                eprintln!("nvgred-fuzz: known bug {} (not a new crash): {} at {}", KNOWN[k].id, message(info), location(info));
            }
            return;
        }
        eprintln!("\nnvgred-fuzz: panic: {}\n  at {}\n{}", message(info), location(info), Backtrace::force_capture());
        std::process::abort();
    }));
    // SAFETY: registers a plain function with no captured state; it only reads atomics.
    unsafe { atexit(report_hits) };
}

fn location(info: &PanicHookInfo) -> String {
    info.location().map(|l| l.to_string()).unwrap_or_default()
}
