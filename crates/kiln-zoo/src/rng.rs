//! A tiny deterministic RNG: SplitMix64 (Steele, Lea & Flood 2014) and
//! Box-Muller normals. Same seed, same numbers, on every platform.

/// SplitMix64 generator state.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

/// One SplitMix64 output for state `x` (also used as a 64-bit mixer).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Rng {
    /// The stream of tensor `name` under the model seed `seed`: each
    /// initializer draws from its own stream, so adding a layer does not
    /// change the others' weights.
    pub(crate) fn for_tensor(seed: u64, name: &str) -> Rng {
        // FNV-1a of the name, mixed with the seed.
        let h = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
        });
        Rng(mix(seed) ^ h)
    }

    fn next_u64(&mut self) -> u64 {
        let r = mix(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        r
    }

    /// Uniform in (0, 1] with 53 random bits.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// `n` samples of N(0, std^2) (Box-Muller, both outputs used).
    pub(crate) fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let t = std::f64::consts::TAU * u2;
            v.push((r * t.cos()) as f32);
            v.push((r * t.sin()) as f32);
        }
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_are_standard_and_deterministic() {
        let a = Rng::for_tensor(7, "w").normals(20_000, 1.0);
        assert_eq!(a, Rng::for_tensor(7, "w").normals(20_000, 1.0));
        assert_ne!(a, Rng::for_tensor(8, "w").normals(20_000, 1.0));
        assert_ne!(a, Rng::for_tensor(7, "v").normals(20_000, 1.0));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean}, var {var}"
        );
    }
}
