//! A panic in a packet worker is a bug in nvgred met by one batch of
//! packets: the worker drops that batch and goes on (see `worker`). The
//! process-wide panic hook must then not print a backtrace to stderr per
//! panicking packet (a VM could send a million a second): on worker threads
//! it only records what happened, for the worker to report rate-limited.
//! Other threads (Node's, tests') keep the hook they had.

use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::Once;

/// Worker threads are named this, then their number.
pub const WORKER_THREAD: &str = "nvgre-worker-";

thread_local! {
    /// The last panic on this thread: where, and its message.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn on_worker_thread() -> bool {
    std::thread::current().name().is_some_and(|n| n.starts_with(WORKER_THREAD))
}

fn describe(info: &PanicHookInfo) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    match info.location() {
        Some(l) => format!("{message} at {}:{}:{}", l.file(), l.line(), l.column()),
        None => message,
    }
}

/// Install the hook (once per process).
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if on_worker_thread() {
                LAST.with(|l| *l.borrow_mut() = Some(describe(info)));
            } else {
                previous(info);
            }
        }));
    });
}

/// What the last panic on this thread was (taking it).
pub fn take_last() -> String {
    LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "a panic".to_string())
}
