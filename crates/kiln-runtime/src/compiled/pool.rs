//! A small thread pool for intra-op parallelism at batch 1.
//!
//! `run(parts, f)` calls `f(part)` exactly once for every `part` in
//! `0..parts`, the parts being claimed by whichever threads (the caller and
//! the workers) get to them first. A part is a fixed output tile chosen by
//! the caller, and every kernel computes each output element in one fixed
//! order, so results are bit-identical for any thread count and any timing.
//! Claiming (rather than assigning part `i` to thread `i`) means a worker that
//! the OS has not scheduled (a busy core) never holds the step up: the caller
//! runs its parts too.
//!
//! Workers spin (about a millisecond) waiting for the next job, since the
//! steps of one inference come back to back, then park on a condvar. A job
//! is published as a generation number; a part is claimed by a compare-and-
//! swap on `(generation, next part)`, so a late worker can never claim a part
//! of a finished job, and the caller returns only when every claimed part has
//! finished: the job closure (borrowed from the caller's stack) is never used
//! after `run` returns. Dispatching a job allocates nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job; written by the owner only while no part is claimable.
    job: UnsafeCell<Option<*const Job>>,
    parts: AtomicUsize,
    /// Generation of the current job.
    gen: AtomicU64,
    /// `generation << 32 | next unclaimed part`.
    claim: AtomicU64,
    /// Parts of the current job finished.
    finished: AtomicUsize,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

// SAFETY: `job` is written by the owner before a generation is published and
// after all its claimed parts finished; it is dereferenced only by a thread
// holding a claimed part of that generation.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// Claims the next part of generation `g`, if any is left.
    fn claim(&self, g: u64) -> Option<usize> {
        let parts = self.parts.load(Ordering::Acquire) as u64;
        let mut c = self.claim.load(Ordering::Acquire);
        loop {
            if c >> 32 != g & 0xffff_ffff || c & 0xffff_ffff >= parts {
                return None;
            }
            match self
                .claim
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some((c & 0xffff_ffff) as usize),
                Err(now) => c = now,
            }
        }
    }

    /// Runs claimed parts of generation `g` until none is left.
    ///
    /// # Safety
    /// `job` must be generation `g`'s job while any part of `g` is claimable.
    unsafe fn work(&self, g: u64) {
        while let Some(i) = self.claim(g) {
            // A claimed part keeps the owner waiting, so the job is alive.
            if let Some(job) = *self.job.get() {
                (*job)(i);
            }
            self.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A pool of `threads - 1` workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads())
    }
}

const SPIN: u32 = 20_000;

impl ThreadPool {
    /// A pool running jobs on up to `threads` threads in all (at least 1; the
    /// caller of [`ThreadPool::run`] is one of them). If the OS refuses to
    /// start a worker, the pool keeps the ones it got ([`ThreadPool::threads`]).
    pub fn new(threads: usize) -> ThreadPool {
        let want = threads.max(1);
        let mut handles = Vec::new();
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            parts: AtomicUsize::new(0),
            gen: AtomicU64::new(0),
            claim: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        for w in 1..want {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("kiln-worker-{w}"))
                .spawn(move || worker(&s))
            {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        ThreadPool { shared, handles }
    }

    /// Threads in all (the caller included).
    pub fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..parts`, each exactly once, on the
    /// calling thread and the workers, and returns when all are done.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if self.handles.is_empty() || parts <= 1 {
            for i in 0..parts {
                f(i);
            }
            return;
        }
        assert!(parts < 1 << 32, "too many parts");
        // SAFETY: the previous job's parts all finished (checked before the
        // last `run` returned) and its generation is no longer claimable.
        unsafe {
            let p: *const Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(p);
        }
        s.parts.store(parts, Ordering::Release);
        s.finished.store(0, Ordering::Release);
        let g = s.gen.load(Ordering::Relaxed) + 1;
        s.claim.store((g & 0xffff_ffff) << 32, Ordering::SeqCst);
        // SeqCst (not Release): the store must be visible before `sleepers`
        // is read, or a worker going to sleep between the two is never woken
        // (a store-load reordering; regression test `no_lost_wakeup_...`).
        s.gen.store(g, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        // SAFETY: the job is generation g's.
        unsafe { s.work(g) };
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) != parts {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Nothing of generation g is claimable (all parts claimed) or running.
        unsafe {
            *s.job.get() = None;
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, then park.
        let mut spins = 0u32;
        let g = loop {
            let g = s.gen.load(Ordering::Acquire);
            if g != seen || s.stop.load(Ordering::Relaxed) {
                break g;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                while s.gen.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst) {
                    l = s.cv.wait(l).unwrap_or_else(|e| e.into_inner());
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                spins = 0;
            }
        };
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = g;
        // SAFETY: claims are checked against generation g.
        unsafe { s.work(g) };
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_for_any_thread_count() {
        for threads in 1..=4 {
            let pool = ThreadPool::new(threads);
            for parts in [0usize, 1, 2, 3, 7, 64] {
                let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                for _ in 0..50 {
                    pool.run(parts, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
            }
        }
    }

    /// Regression: the worker parks while the owner publishes a job; with a
    /// Release store of the generation, the owner could read `sleepers == 0`
    /// before its store was visible and never wake the worker (a hang seen
    /// in `kiln bench --server` at 2 threads). Jobs are published right as
    /// the worker's spin budget runs out, many times.
    #[test]
    fn no_lost_wakeup_when_the_worker_parks_during_publish() {
        let pool = ThreadPool::new(2);
        let n = AtomicUsize::new(0);
        for i in 0..300u64 {
            // Sleep around the worker's spin budget (up to a few ms), varying.
            std::thread::sleep(std::time::Duration::from_micros((i * 37) % 2000));
            pool.run(2, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(n.load(Ordering::Relaxed), 600);
    }

    #[test]
    fn parks_and_wakes() {
        let pool = ThreadPool::new(2);
        let n = AtomicUsize::new(0);
        pool.run(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        pool.run(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }
}
