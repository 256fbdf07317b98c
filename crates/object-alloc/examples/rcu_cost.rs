//! Rough cost of the read-side section and of one deferred free, in ns per call, beside the
//! same operations done straight on crossbeam-epoch's default collector (pin; pin, clone an
//! `Arc` and defer a closure that drops it) for reference:
//! `cargo run --release -p object-alloc --example rcu_cost`.

use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use object_alloc::rcu::{self, DeferTarget, Deferrer};

struct Discard;

impl DeferTarget for Discard {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        black_box(object);
    }
}

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    const N: u32 = 5_000_000;
    let deferrer = Deferrer::new(Discard);
    let object = NonNull::<u8>::dangling();
    for round in 0..3 {
        let read = per_call(N, || drop(black_box(rcu::read())));
        let nested = {
            let _outer = rcu::read();
            per_call(N, || drop(black_box(rcu::read())))
        };
        // SAFETY: `Discard` never touches the token.
        let defer = per_call(N, || unsafe { deferrer.defer_free(black_box(object)) });
        deferrer.barrier();
        let pin = per_call(N, || drop(black_box(crossbeam_epoch::pin())));
        let state = Arc::new(0_u64);
        let plain_defer = per_call(N, || {
            let guard = crossbeam_epoch::pin();
            let state = Arc::clone(&state);
            let object = black_box(object).as_ptr() as usize;
            guard.defer(move || black_box((state, object)));
        });
        crossbeam_epoch::pin().flush();
        println!(
            "round {round}: read {read:.2} ns (crossbeam pin {pin:.2}), nested read {nested:.2} ns, \
             defer_free {defer:.2} ns (crossbeam defer {plain_defer:.2})"
        );
    }
}
