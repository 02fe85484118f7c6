//! The kernel tests' deterministic generator, so every failure reproduces from its seed:
//! xorshift64 ([`Rng::new`]) or, for the tests written against it, xorshift64* ([`Rng::star`],
//! the same steps with the output multiplied by a constant). One file for the unit tests in
//! `src/kernels` (as `kernels::test_rng`) and the integration tests (include it with
//! `#[path = "common/rng.rs"] mod rng;`); each uses a part of it.
#![allow(dead_code)]

pub struct Rng {
    state: u64,
    /// The output multiplier: 1 for xorshift64, xorshift64*'s constant for [`Rng::star`].
    mul: u64,
}

impl Rng {
    /// xorshift64 from `seed` (non-zero).
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            mul: 1,
        }
    }

    /// xorshift64* from `seed` (non-zero).
    pub fn star(seed: u64) -> Self {
        Rng {
            state: seed,
            mul: 0x2545_F491_4F6C_DD1D,
        }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.wrapping_mul(self.mul)
    }

    /// Uniform in `[-1, 1)`.
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}
