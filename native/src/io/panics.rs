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

/// Test-only fault injection (`NVGRED_FAILPOINTS=1` in the daemon's
/// environment): a frame from a VM that carries [`PANIC_MARK`] makes its
/// batch's handling panic, one that carries [`DIE_MARK`] makes the worker's
/// thread panic outside the per-batch guard. Off, the cost is one load of a
/// flag per batch. The fault tests use it: a bug cannot be had on demand.
pub mod failpoints {
    use std::sync::OnceLock;

    pub const PANIC_MARK: &[u8] = b"nvgred-failpoint-panic";
    pub const DIE_MARK: &[u8] = b"nvgred-failpoint-die";

    fn armed() -> bool {
        static ARMED: OnceLock<bool> = OnceLock::new();
        *ARMED.get_or_init(|| std::env::var_os("NVGRED_FAILPOINTS").is_some_and(|v| v == "1"))
    }

    /// Which mark, if any, one of these frames carries.
    pub fn hit<'a>(frames: impl Iterator<Item = &'a [u8]>) -> Option<&'static [u8]> {
        if !armed() {
            return None;
        }
        let has = |f: &[u8], mark: &[u8]| f.windows(mark.len()).any(|w| w == mark);
        frames.into_iter().find_map(|f| [PANIC_MARK, DIE_MARK].into_iter().find(|m| has(f, m)))
    }
}
