//! A small thread pool for intra-op parallelism at batch 1.
//!
//! `run(parts, f)` calls `f(part)` once for every `part` in `0..parts`: part
//! `i` runs on thread `i % threads` (the caller is thread 0), a static split,
//! so which thread computes which output tile never depends on timing, and
//! every kernel computes each output element in one fixed order: results are
//! bit-identical for any thread count.
//!
//! Workers spin (bounded, about 50 µs) waiting for the next job, since the
//! steps of one inference come back to back, then park on a condvar. A job
//! is published as a generation number; the caller waits for every worker to
//! acknowledge the generation before returning, so the job closure (borrowed
//! from the caller's stack) is never used after `run` returns. Dispatching a
//! job allocates nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job (valid while `gen` is odd... see `run`).
    job: UnsafeCell<Option<*const Job>>,
    parts: AtomicUsize,
    gen: AtomicU64,
    /// Per worker: the last generation it finished.
    done: Vec<AtomicU64>,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    threads: usize,
}

// SAFETY: `job` is written only by the owner between generations, while no
// worker reads it (all acknowledged the previous generation), and read by
// workers only after observing the new generation (Acquire/Release).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A pool of `threads - 1` workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.shared.threads)
    }
}

const SPIN: u32 = 20_000;

impl ThreadPool {
    /// A pool running jobs on `threads` threads in all (at least 1; the
    /// caller of [`ThreadPool::run`] is one of them).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            parts: AtomicUsize::new(0),
            gen: AtomicU64::new(0),
            done: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            threads,
        });
        let handles = (1..threads)
            .map(|w| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{w}"))
                    .spawn(move || worker(&s, w))
                    .expect("spawning a kiln worker thread")
            })
            .collect();
        ThreadPool { shared, handles }
    }

    /// Threads in all.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `f(i)` for every `i` in `0..parts` and returns when all are done.
    /// Part `i` runs on thread `i % threads`.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if s.threads == 1 || parts <= 1 {
            for i in 0..parts {
                f(i);
            }
            return;
        }
        // SAFETY: every worker acknowledged the previous generation, so none
        // reads `job` now; the pointer is cleared before returning.
        unsafe {
            let p: *const Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(p);
        }
        s.parts.store(parts, Ordering::Relaxed);
        let g = s.gen.load(Ordering::Relaxed) + 1;
        // SeqCst (not Release): the store must be visible before `sleepers`
        // is read, or a worker going to sleep between the two is never woken
        // (a store-load reordering; regression test `no_lost_wakeup_...`).
        s.gen.store(g, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let mut i = 0;
        while i < parts {
            f(i);
            i += s.threads;
        }
        for w in 1..s.threads {
            let mut spins = 0u32;
            while s.done[w].load(Ordering::Acquire) != g {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        unsafe {
            *s.job.get() = None;
        }
    }
}

fn worker(s: &Shared, w: usize) {
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
        // SAFETY: the owner published `job` before `gen` (Release) and keeps
        // it alive until we store `done[w] = g`.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job {
            let parts = s.parts.load(Ordering::Relaxed);
            let f = unsafe { &*job };
            let mut i = w;
            while i < parts {
                f(i);
                i += s.threads;
            }
        }
        s.done[w].store(g, Ordering::Release);
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
