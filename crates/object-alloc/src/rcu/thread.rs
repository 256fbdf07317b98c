//! The hand-over thread's start, straight through `pthread_create`.
//!
//! `std::thread` registers every thread it starts and ends in a process-wide table behind a
//! mutex (for its stack-overflow reports). A process forked while another thread held that
//! mutex (starting or ending a thread) has it locked for ever, and the child's first
//! `std::thread::spawn` hangs there. The hand-over thread starts lazily, at the first deferral
//! of a process, so in a forked child it would start in exactly that state; started this way
//! it takes no lock of the standard library.

use std::ffi::{CStr, c_void};
use std::panic::AssertUnwindSafe;

type Body = Box<dyn FnOnce() + Send + 'static>;

/// Starts a detached thread named `name` with a stack of `stack` bytes that runs `body`;
/// `false` if the system refused. A panic in `body` ends the thread (it is caught, so that it
/// does not unwind into the C start routine), as it would end a `std` thread.
pub(super) fn spawn_detached(
    name: &'static CStr,
    stack: usize,
    body: impl FnOnce() + Send + 'static,
) -> bool {
    extern "C" fn start(arg: *mut c_void) -> *mut c_void {
        // SAFETY: `arg` is the `Box<Body>` leaked by `spawn_detached` for this thread alone,
        // taken back once, here.
        let (name, body) = *unsafe { Box::from_raw(arg.cast::<(&'static CStr, Body)>()) };
        // SAFETY: names this thread; `name` is a NUL-terminated string that lives for ever
        // (the kernel keeps at most 15 bytes of it).
        unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
        let _ = std::panic::catch_unwind(AssertUnwindSafe(body));
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new((name, Box::new(body) as Body)));
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is initialised by `pthread_attr_init` before any other use and destroyed
    // once; `start` takes ownership of `arg` exactly when `pthread_create` succeeds, and we
    // take it back otherwise.
    unsafe {
        if libc::pthread_attr_init(attr.as_mut_ptr()) != 0 {
            drop(Box::from_raw(arg));
            return false;
        }
        let attr = attr.as_mut_ptr();
        libc::pthread_attr_setstacksize(attr, stack.max(libc::PTHREAD_STACK_MIN));
        libc::pthread_attr_setdetachstate(attr, libc::PTHREAD_CREATE_DETACHED);
        let mut thread = std::mem::MaybeUninit::<libc::pthread_t>::uninit();
        let started = libc::pthread_create(thread.as_mut_ptr(), attr, start, arg.cast()) == 0;
        libc::pthread_attr_destroy(attr);
        if !started {
            drop(Box::from_raw(arg));
        }
        started
    }
}
