//! A small thread pool for intra-op parallelism at batch 1.
//!
//! `run(parts, f)` calls `f(part)` exactly once for every `part` in
//! `0..parts`. A part is a fixed output tile chosen by the caller, and every
//! kernel computes each output element in one fixed order, so results are
//! bit-identical for any thread count and any timing.
//!
//! Part `i` belongs to thread `i % threads` (the caller is thread 0): the same
//! thread computes the same region of consecutive layers, so it reads its
//! own results from its own cache. A part is taken by setting its bit in a
//! claim word; a thread that finished its own parts takes the ones still
//! unclaimed (after a short grace), so a worker the OS has not scheduled (a
//! busy core) does not hold the step up.
//!
//! Workers spin (about a millisecond) waiting for the next job, since the
//! steps of one inference come back to back, then park on a condvar. The
//! claim word also holds the job's generation, so a late worker can never
//! claim a part of a finished job, and the caller returns only when every
//! part has finished: the job closure (borrowed from the caller's stack) is
//! never used after `run` returns. Dispatching a job allocates nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = dyn Fn(usize) + Sync;

/// Parts per published round (bits of the claim word).
const ROUND: usize = 40;
const MASK: u64 = (1 << ROUND) - 1;
const GEN_MASK: u64 = (1 << (64 - ROUND)) - 1;

struct Shared {
    /// The current job; written by the owner only while no part is claimable.
    job: UnsafeCell<Option<*const Job>>,
    /// First part index of the current round.
    base: AtomicUsize,
    /// Generation of the current round.
    gen: AtomicU64,
    /// `generation << 40 | claimed-parts bitmask` of the current round.
    claim: AtomicU64,
    /// Parts of the current round finished.
    finished: AtomicUsize,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    threads: AtomicUsize,
    /// Workers that have started running.
    started: AtomicUsize,
}

// SAFETY: `job` is written by the owner before a generation is published and
// after all parts of the previous one finished; it is dereferenced only by a
// thread holding a claimed part of the current generation.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// Claims part `i` (0..ROUND) of generation `g`, if still free.
    fn claim_part(&self, g: u64, i: usize) -> bool {
        let bit = 1u64 << i;
        let mut c = self.claim.load(Ordering::Acquire);
        loop {
            if c >> ROUND != g & GEN_MASK || c & bit != 0 {
                return false;
            }
            match self
                .claim
                .compare_exchange_weak(c, c | bit, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
    }

    /// Claims any free part of generation `g`.
    fn claim_any(&self, g: u64) -> Option<usize> {
        let mut c = self.claim.load(Ordering::Acquire);
        loop {
            let free = !c & MASK;
            if c >> ROUND != g & GEN_MASK || free == 0 {
                return None;
            }
            let i = free.trailing_zeros() as usize;
            match self
                .claim
                .compare_exchange_weak(c, c | (1 << i), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(i),
                Err(now) => c = now,
            }
        }
    }

    /// Whether every part of generation `g` is claimed (or `g` is over).
    fn all_claimed(&self, g: u64) -> bool {
        let c = self.claim.load(Ordering::Acquire);
        c >> ROUND != g & GEN_MASK || c & MASK == MASK
    }

    /// Runs claimed part `i` of the current round.
    ///
    /// # Safety
    /// The caller claimed part `i` of the current generation.
    unsafe fn run_part(&self, i: usize) {
        // A claimed, unfinished part keeps the owner waiting: the job is alive.
        if let Some(job) = *self.job.get() {
            (*job)(self.base.load(Ordering::Acquire) + i);
        }
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    /// Thread `t` of `threads`: its own parts of generation `g`, then, after
    /// `grace` spins, any part still free.
    ///
    /// # Safety
    /// `g` is a generation this thread observed being published.
    unsafe fn work(&self, g: u64, t: usize, threads: usize, grace: u32) {
        let mut i = t;
        while i < ROUND {
            if self.claim_part(g, i) {
                self.run_part(i);
            }
            i += threads;
        }
        let mut spins = 0;
        while spins < grace && !self.all_claimed(g) {
            std::hint::spin_loop();
            spins += 1;
        }
        while let Some(i) = self.claim_any(g) {
            self.run_part(i);
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
/// Spins the caller grants late workers before taking their parts.
const GRACE: u32 = 300;

impl ThreadPool {
    /// A pool running jobs on up to `threads` threads in all (at least 1; the
    /// caller of [`ThreadPool::run`] is one of them). If the OS refuses to
    /// start a worker, the pool keeps the ones it got ([`ThreadPool::threads`]).
    pub fn new(threads: usize) -> ThreadPool {
        let want = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            base: AtomicUsize::new(0),
            gen: AtomicU64::new(0),
            claim: AtomicU64::new(MASK),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            threads: AtomicUsize::new(1),
            started: AtomicUsize::new(0),
        });
        let mut handles = Vec::new();
        for w in 1..want {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("kiln-worker-{w}"))
                .spawn(move || worker(&s, w))
            {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        shared.threads.store(handles.len() + 1, Ordering::Release);
        // Wait until every worker runs: a thread's start-up allocates (the
        // standard library's per-thread set-up), which must not happen
        // inside a later run (`tests/no_alloc.rs`).
        while shared.started.load(Ordering::Acquire) < handles.len() {
            std::thread::yield_now();
        }
        ThreadPool { shared, handles }
    }

    /// Threads in all (the caller included).
    pub fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..parts`, each exactly once, and
    /// returns when all are done. Part `i` preferably runs on thread
    /// `i % threads` (the caller is thread 0).
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if self.handles.is_empty() || parts <= 1 {
            for i in 0..parts {
                f(i);
            }
            return;
        }
        let threads = self.threads();
        // SAFETY: no part of any earlier generation is claimable or running.
        unsafe {
            let p: *const Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(p);
        }
        let mut base = 0;
        while base < parts {
            let n = (parts - base).min(ROUND);
            s.base.store(base, Ordering::Release);
            s.finished.store(0, Ordering::Release);
            let g = s.gen.load(Ordering::Relaxed) + 1;
            // Parts past `n` start claimed.
            s.claim.store(
                ((g & GEN_MASK) << ROUND) | (MASK & !((1u64 << n) - 1)),
                Ordering::SeqCst,
            );
            // SeqCst (not Release): the store must be visible before
            // `sleepers` is read, or a worker going to sleep between the two
            // is never woken (regression test `no_lost_wakeup_...`).
            s.gen.store(g, Ordering::SeqCst);
            if s.sleepers.load(Ordering::SeqCst) > 0 {
                let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.cv.notify_all();
            }
            // SAFETY: g was just published.
            unsafe { s.work(g, 0, threads, GRACE) };
            let mut spins = 0u32;
            while s.finished.load(Ordering::Acquire) != n {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            base += n;
        }
        // Every part of every round finished; none is claimable.
        unsafe {
            *s.job.get() = None;
        }
    }
}

fn worker(s: &Shared, w: usize) {
    s.started.fetch_add(1, Ordering::AcqRel);
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
        let threads = s.threads.load(Ordering::Acquire);
        // SAFETY: claims are checked against generation g.
        unsafe { s.work(g, w, threads, 0) };
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
