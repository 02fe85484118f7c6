//! The few system calls `owlet` makes itself (Unix only; elsewhere they are no-ops).
//!
//! Two signals are handled:
//! - **SIGBUS**: the model's weights are read from a memory-mapped file, so a file truncated
//!   while a computation reads it faults. The library refuses a changed file before every
//!   step; a truncation in the middle of one still lands here, and becomes one line naming the
//!   file and exit code 1 instead of "Bus error".
//! - **SIGINT** in `owlet chat`: Ctrl-C during an answer sets the session's cancel flag (the
//!   answer stops before its next token and the conversation goes on). At a prompt read
//!   without the line editor (no terminal), Ctrl-C ends the program as usual.
//!
//! Both handlers are async-signal-safe: they only load atomics, store one, `write(2)` a message
//! formatted beforehand and `_exit(2)`.

#[cfg(unix)]
mod imp {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The SIGBUS message (leaked, never freed) and its length.
    static BUS_MSG: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    static BUS_LEN: AtomicUsize = AtomicUsize::new(0);
    /// The running session's cancel flag (one leaked `Arc` reference), or null.
    static CANCEL: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
    /// Set while a plain (non-editor) prompt waits for a line: Ctrl-C then quits.
    static AT_PROMPT: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_sigbus(_: libc::c_int) {
        let (p, n) = (
            BUS_MSG.load(Ordering::Acquire),
            BUS_LEN.load(Ordering::Acquire),
        );
        if !p.is_null() {
            // SAFETY: `p` points to `n` bytes leaked by `report_sigbus_for` (never freed);
            // write(2) and _exit(2) are async-signal-safe.
            unsafe { libc::write(2, p.cast(), n) };
        }
        // SAFETY: async-signal-safe; ends the process without running anything else.
        unsafe { libc::_exit(1) };
    }

    extern "C" fn on_sigint(_: libc::c_int) {
        if AT_PROMPT.load(Ordering::Acquire) {
            // SAFETY: as in `on_sigbus`; a newline ends the "^C" the terminal echoed.
            unsafe {
                libc::write(2, b"\n".as_ptr().cast(), 1);
                libc::_exit(130);
            }
        }
        let flag = CANCEL.load(Ordering::Acquire);
        if !flag.is_null() {
            // SAFETY: `flag` is a leaked `Arc<AtomicBool>` reference (never released); an
            // atomic store is async-signal-safe.
            unsafe { (*flag).store(true, Ordering::Relaxed) };
        }
    }

    /// Installs `handler` for `sig`, restarting interrupted system calls.
    fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
        // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags) that is then
        // filled in; `handler` has the signature `sa_handler` expects and is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }

    /// From now on a SIGBUS prints one line naming `model` and exits with code 1. Call it
    /// before the model is mapped (validation reads the file too).
    pub fn report_sigbus_for(model: &Path) {
        let msg = format!(
            "owlet: {}: the model file changed or was truncated while in use; \
             do not modify a model file while owlet reads it\n",
            model.display()
        )
        .into_bytes()
        .into_boxed_slice();
        let n = msg.len();
        let old = BUS_MSG.swap(Box::leak(msg).as_mut_ptr(), Ordering::AcqRel);
        BUS_LEN.store(n, Ordering::Release);
        if old.is_null() {
            install(libc::SIGBUS, on_sigbus);
        }
        // A replaced message stays leaked: the handler may be reading it right now.
    }

    /// From now on Ctrl-C sets `cancel` (the session's flag) instead of ending the program.
    pub fn cancel_on_sigint(cancel: &Arc<AtomicBool>) {
        let p = Arc::into_raw(Arc::clone(cancel)).cast_mut();
        if CANCEL.swap(p, Ordering::AcqRel).is_null() {
            install(libc::SIGINT, on_sigint);
        }
    }

    /// Whether Ctrl-C quits (at a plain prompt) or cancels (while answering).
    pub fn sigint_quits(yes: bool) {
        AT_PROMPT.store(yes, Ordering::Release);
    }

    /// Drops what was typed on the terminal and not read yet (the rest of a line the editor
    /// refused), so that it does not come back as the next line.
    pub fn discard_typed_input() {
        // SAFETY: tcflush on a descriptor only acts on the terminal's queue; on a non-terminal
        // it fails harmlessly with ENOTTY.
        unsafe { libc::tcflush(0, libc::TCIFLUSH) };
    }
}

#[cfg(not(unix))]
mod imp {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    pub fn report_sigbus_for(_: &Path) {}
    pub fn cancel_on_sigint(_: &Arc<AtomicBool>) {}
    pub fn sigint_quits(_: bool) {}
    pub fn discard_typed_input() {}
}

pub use imp::{cancel_on_sigint, discard_typed_input, report_sigbus_for, sigint_quits};
