//! What every VM adapter's device shares, whatever its kind: whether it
//! works, and if not, why. The worker that finds a device broken says so
//! here; the control plane reads it for `nvgre_vm_adapter_up`, the API and
//! the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Health {
    /// The device stopped working; true for the first report only.
    pub fn fail(&self, why: impl FnOnce() -> String) -> bool {
        if self.down.swap(true, Ordering::AcqRel) {
            return false;
        }
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why());
        true
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Why the device is down (None while it is up).
    pub fn error(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
