//! Coverage-guided fuzz targets over the packet core, without I/O. Each
//! file of `src/bin/` is one libFuzzer target (`fuzz_target!`), built by
//! `fuzz.sh` with rustc's coverage instrumentation and Debian's libFuzzer.
//! What the targets share lives here:
//! - [`input`]: how a target's bytes become frames, packets and selectors
//!   (and the writers the seed tool uses to build inputs);
//! - [`reference`]: the one policy every packet is decided against;
//! - [`check`]: the invariants every outcome must hold;
//! - [`known`]: bugs found and reported but not fixed yet.

pub mod check;
pub mod input;
pub mod known;
pub mod reference;

use std::sync::Once;

/// Declares the libFuzzer entry point of a target binary (`#![no_main]`),
/// running `$body: fn(&[u8])` on each input. Links libFuzzer, whose `main`
/// drives the target; only target binaries link it.
#[macro_export]
macro_rules! fuzz_target {
    ($body:expr) => {
        #[link(name = "Fuzzer", kind = "static")]
        #[link(name = "stdc++")]
        extern "C" {}

        // libFuzzer's ABI: it guarantees the pointer, the function cannot be `unsafe`.
        #[no_mangle]
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn LLVMFuzzerTestOneInput(data: *const u8, size: usize) -> i32 {
            let input: &[u8] = if size == 0 {
                &[]
            } else {
                // SAFETY: libFuzzer passes `size` readable bytes at `data`, alive for the call.
                unsafe { std::slice::from_raw_parts(data, size) }
            };
            $crate::run(input, $body)
        }
    };
}

static INIT: Once = Once::new();

/// Run one input. A panic listed in [`known`] unwinds to here and the input
/// is kept out of the corpus (-1); any other panic aborts in the hook, which
/// libFuzzer reports as a crash with the input saved.
#[doc(hidden)]
pub fn run(input: &[u8], body: fn(&[u8])) -> i32 {
    INIT.call_once(known::install_panic_hook);
    match std::panic::catch_unwind(|| body(input)) {
        Ok(()) => 0,
        Err(_) => {
            known::keep_first_hit(input);
            -1
        }
    }
}
