//! The tests' error rates, by simulation: A/A experiments must come out
//! "significant" about 5% of the time at alpha 0.05, and a real 10% lift
//! must be found about as often as the power calculation says.

use guidon_stats::{MetricKind, VariantStats, welch_relative};

/// xorshift64*: a small deterministic generator, so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1_u64 << 53) as f64
    }

    fn conversions(&mut self, units: u64, rate: f64) -> u64 {
        (0..units).filter(|_| self.uniform() < rate).count() as u64
    }
}

/// How many of `seeds` experiments give p < 0.05.
fn significant(seeds: u64, units: u64, control: f64, treatment: f64) -> u64 {
    (0..seeds)
        .filter(|&seed| {
            let mut rng = Rng::new(seed + 1);
            let c = VariantStats::binomial(units, rng.conversions(units, control));
            let t = VariantStats::binomial(units, rng.conversions(units, treatment));
            let test = welch_relative(
                &c.moments(MetricKind::Binomial).expect("control"),
                &t.moments(MetricKind::Binomial).expect("treatment"),
                0.05,
            )
            .expect("test");
            test.p_value < 0.05
        })
        .count() as u64
}

#[test]
fn a_a_experiments_are_significant_about_five_percent_of_the_time() {
    let seeds = 200;
    let hits = significant(seeds, 2_000, 0.10, 0.10);
    eprintln!("A/A: {hits} of {seeds}");
    // Binomial(200, 0.05): mean 10, sd 3.1; 2..=20 is about ±3 sd.
    assert!(
        (2..=20).contains(&hits),
        "{hits} of {seeds} A/A tests significant"
    );
}

#[test]
fn a_real_ten_percent_lift_is_found_at_the_expected_power() {
    let seeds = 200;
    let (p0, p1) = (0.10, 0.11);
    let units = 14_700;
    // Normal approximation of the power of the two-sided test at 0.05.
    let se = ((p0 * (1.0 - p0) + p1 * (1.0 - p1)) / units as f64).sqrt();
    let z = (p1 - p0) / se;
    let power = 1.0 - normal_cdf(1.959_964 - z);
    let expected = power * seeds as f64;
    let sd = (seeds as f64 * power * (1.0 - power)).sqrt();
    let hits = significant(seeds, units, p0, p1) as f64;
    eprintln!("power: {hits} of {seeds}, expected {expected:.1}");
    assert!(
        (hits - expected).abs() <= 3.5 * sd,
        "{hits} of {seeds} detected; expected {expected:.1} ± {:.1} (power {power:.3})",
        3.5 * sd
    );
}

/// Φ by the complementary error function's Abramowitz–Stegun 7.1.26 form
/// (error < 1.5e-7, ample for a tolerance of several standard deviations).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        1.0 - erfc / 2.0
    } else {
        erfc / 2.0
    }
}
