//! Test-only hook (cargo feature `ffi-panic-test`): makes every exported function panic inside
//! its catch-all wrapper, so a test can show that no panic crosses the C boundary. The switch is
//! per thread, so tests running in parallel do not disturb each other.

use std::cell::Cell;

thread_local! {
    static FORCE_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Turns forced panics on or off for the calling thread.
pub fn set_force_panic(on: bool) {
    FORCE_PANIC.with(|f| f.set(on));
}

/// Panics, naming the entry point, when forced panics are on for this thread.
pub(crate) fn maybe_panic(name: &str) {
    if FORCE_PANIC.with(|f| f.get()) {
        panic!("forced test panic in {name}");
    }
}
