//! Static memory planning: one arena, an offset per intermediate buffer.
//!
//! Every buffer has a size and a lifetime `[first, last]` in execution steps
//! (inclusive: written at `first`, last read at `last`). Buffers whose
//! lifetimes intersect get disjoint byte ranges; others may share memory.
//! Placement is TensorFlow Lite's "greedy by size" heuristic (Lee et al.,
//! "On-Device Neural Net Inference with Mobile GPUs", 2019, §4.2): buffers
//! in decreasing size, each at the lowest offset that fits beside the
//! already placed buffers it overlaps in time. Offsets are multiples of
//! [`ALIGN`] elements (64 bytes), so every buffer starts on a cache line.
//!
//! In-place execution (an element-wise op or a residual convolution writing
//! over an input that dies there) is decided before this, by making the
//! output an alias of that input's buffer with a longer lifetime.

/// Alignment of every buffer, in f32 elements (64 bytes).
pub const ALIGN: usize = 16;

/// One buffer to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Size in f32 elements.
    pub len: usize,
    /// Step that writes it first.
    pub first: usize,
    /// Step that reads it last (`>= first`).
    pub last: usize,
}

/// Offsets (in elements) of `bufs`, in their order, and the arena length.
pub fn plan_offsets(bufs: &[Buffer]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by(|&a, &b| {
        bufs[b]
            .len
            .cmp(&bufs[a].len)
            .then(bufs[a].first.cmp(&bufs[b].first))
    });
    let mut offs = vec![usize::MAX; bufs.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(bufs.len());
    let mut total = 0usize;
    for &i in &order {
        let b = bufs[i];
        let len = b.len.div_ceil(ALIGN) * ALIGN;
        // Occupied ranges of placed buffers alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| bufs[j].first <= b.last && b.first <= bufs[j].last)
            .map(|&j| (offs[j], offs[j] + bufs[j].len.div_ceil(ALIGN) * ALIGN))
            .collect();
        busy.sort_unstable();
        let mut at = 0usize;
        for (s, e) in busy {
            if s >= at + len {
                break;
            }
            at = at.max(e);
        }
        offs[i] = at;
        total = total.max(at + len);
        placed.push(i);
    }
    (offs, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chain_reuses_memory() {
        // a -> b -> c -> d: each buffer dies when the next is written... one step later.
        let bufs: Vec<Buffer> = (0..4)
            .map(|i| Buffer {
                len: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let (offs, total) = plan_offsets(&bufs);
        assert_eq!(total, 2 * 112, "{offs:?}");
    }

    proptest! {
        #[test]
        fn live_buffers_never_overlap(spec in proptest::collection::vec((1usize..500, 0usize..20, 0usize..6), 1..40)) {
            let bufs: Vec<Buffer> = spec.iter().map(|&(len, first, dur)| Buffer { len, first, last: first + dur }).collect();
            let (offs, total) = plan_offsets(&bufs);
            let sum: usize = bufs.iter().map(|b| b.len.div_ceil(ALIGN) * ALIGN).sum();
            prop_assert!(total <= sum);
            for i in 0..bufs.len() {
                prop_assert_eq!(offs[i] % ALIGN, 0);
                prop_assert!(offs[i] + bufs[i].len <= total);
                for j in 0..i {
                    let (a, b) = (bufs[i], bufs[j]);
                    if a.first <= b.last && b.first <= a.last {
                        let disjoint = offs[i] + a.len <= offs[j] || offs[j] + b.len <= offs[i];
                        prop_assert!(disjoint, "buffers {} and {} overlap", i, j);
                    }
                }
            }
        }
    }
}
