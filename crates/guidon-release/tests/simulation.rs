//! The policy against synthetic traffic on a virtual clock (issue 12's
//! proof): healthy releases complete and are rarely rolled back (at most
//! `alpha` over 200 A/A releases), a doubled error rate is rolled back at
//! the first step where the test can see it, a latency regression and a
//! regression that starts only at 25 % are caught, and a release without
//! traffic waits for ever. The figures are printed (`--nocapture`) and
//! recorded in docs/guarded-rollouts.md.

use guidon_release::{Decision, Observation, Plan, Progress, Side, Status, decide};
use guidon_stats::{Moments, absolute_difference, sequential};

/// splitmix64: deterministic synthetic traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately normal: the sum of 4 uniforms (Irwin–Hall), scaled
    /// to the standard deviation.
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let s: f64 = (0..4).map(|_| self.uniform()).sum();
        mean + sd * (s - 2.0) * 3.0_f64.sqrt()
    }
}

const UNITS_PER_MINUTE: u64 = 500;
const HOLD_MINUTES: u64 = 60;

fn plan(kind: &str) -> Plan {
    let plan: Plan = serde_json::from_str(&format!(
        r#"{{"steps": [
              {{"percentage": 1, "hold_seconds": {h}, "min_units": 200}},
              {{"percentage": 5, "hold_seconds": {h}, "min_units": 1000}},
              {{"percentage": 25, "hold_seconds": {h}}},
              {{"percentage": 50, "hold_seconds": {h}}},
              {{"percentage": 100, "hold_seconds": {h}}}],
            "guards": [{{"metric": "m", "kind": "{kind}", "worse": "higher", "on_breach": "rollback"}}],
            "alpha": 0.05, "tuning": 2000}}"#,
        h = HOLD_MINUTES * 60
    ))
    .expect("plan");
    assert!(plan.validate().is_empty());
    plan
}

/// One unit's value: error or not, or a latency.
enum Traffic {
    /// Error rates (control, treatment), the treatment's from `from_step`.
    Errors {
        control: f64,
        treatment: f64,
        from_step: usize,
    },
    /// Latency means (control, treatment) with a standard deviation.
    Latency {
        control: f64,
        treatment: f64,
        sd: f64,
    },
}

struct Outcome {
    /// The step rolled back at, or None when completed.
    rolled_back_at: Option<usize>,
    minutes: u64,
    treatment_units: u64,
}

fn run(
    plan: &Plan,
    traffic: &Traffic,
    units_per_minute: u64,
    seed: u64,
    max_minutes: u64,
) -> Outcome {
    let mut rng = Rng(seed);
    let mut progress = Progress {
        step: 0,
        step_started_ms: 0,
        status: Status::Running,
    };
    let (mut t, mut c) = (Side::default(), Side::default());
    for minute in 1..=max_minutes {
        let percentage = plan.steps[progress.step].percentage;
        for _ in 0..units_per_minute {
            let treated = rng.uniform() * 100.0 < percentage;
            let y = match traffic {
                Traffic::Errors {
                    control,
                    treatment,
                    from_step,
                } => {
                    let rate = if treated && progress.step >= *from_step {
                        *treatment
                    } else {
                        *control
                    };
                    if rng.uniform() < rate { 1.0 } else { 0.0 }
                }
                Traffic::Latency {
                    control,
                    treatment,
                    sd,
                } => rng.normal(if treated { *treatment } else { *control }, *sd),
            };
            let side = if treated { &mut t } else { &mut c };
            side.units += 1;
            side.sum += y;
            side.sum_squares += y * y;
        }
        let now_ms = i64::try_from(minute * 60_000).expect("ms");
        let obs = [Observation {
            metric: "m".into(),
            treatment: t,
            control: c,
        }];
        match decide(plan, &progress, &obs, t.units, now_ms) {
            Decision::Wait { .. } => {}
            Decision::Advance { step, .. } => {
                progress.step = step;
                progress.step_started_ms = now_ms;
            }
            Decision::Complete { .. } => {
                return Outcome {
                    rolled_back_at: None,
                    minutes: minute,
                    treatment_units: t.units,
                };
            }
            Decision::Breach { .. } => {
                return Outcome {
                    rolled_back_at: Some(progress.step),
                    minutes: minute,
                    treatment_units: t.units,
                };
            }
        }
    }
    Outcome {
        rolled_back_at: None,
        minutes: max_minutes,
        treatment_units: t.units,
    }
}

const RUNS: u64 = 200;
const LONG_ENOUGH: u64 = 6 * HOLD_MINUTES;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The first step by whose end a doubled error rate is expected to be seen
/// with 95 % probability: the expected difference beyond the confidence
/// sequence's half-width by 1.645 standard errors, with the treatment's
/// expected units by then.
fn first_detectable_step(plan: &Plan, control: f64, treatment: f64) -> usize {
    let mut treated = 0.0;
    let mut total = 0.0;
    for (i, step) in plan.steps.iter().enumerate() {
        let units = (UNITS_PER_MINUTE * HOLD_MINUTES) as f64;
        treated += units * step.percentage / 100.0;
        total += units;
        let c =
            Moments::new((total - treated) as u64, control, control * (1.0 - control)).expect("m");
        let t = Moments::new(treated as u64, treatment, treatment * (1.0 - treatment)).expect("m");
        let d = absolute_difference(&c, &t).expect("difference");
        let cs = sequential(&d, plan.alpha, plan.tuning).expect("cs");
        let se = d.variance.sqrt();
        let half = (cs.ci.upper - cs.ci.lower) / 2.0;
        if d.estimate - half > 1.645 * se {
            return i;
        }
    }
    plan.steps.len()
}

#[test]
fn healthy_releases_complete_and_false_rollbacks_stay_under_alpha() {
    let plan = plan("binomial");
    let traffic = Traffic::Errors {
        control: 0.02,
        treatment: 0.02,
        from_step: 0,
    };
    let outcomes: Vec<Outcome> = (0..RUNS)
        .map(|seed| run(&plan, &traffic, UNITS_PER_MINUTE, 1000 + seed, LONG_ENOUGH))
        .collect();
    let false_rollbacks = outcomes
        .iter()
        .filter(|o| o.rolled_back_at.is_some())
        .count();
    let completed = outcomes
        .iter()
        .filter(|o| o.rolled_back_at.is_none() && o.minutes < LONG_ENOUGH)
        .count();
    println!(
        "A/A: {false_rollbacks} false rollbacks in {RUNS} healthy releases ({:.1} %, alpha {}), {completed} completed in {} min each",
        100.0 * false_rollbacks as f64 / RUNS as f64,
        plan.alpha,
        median(outcomes.iter().map(|o| o.minutes).collect())
    );
    assert!(
        false_rollbacks as f64 <= plan.alpha * RUNS as f64,
        "{false_rollbacks} false rollbacks in {RUNS}"
    );
    assert_eq!(
        completed + false_rollbacks,
        RUNS as usize,
        "every release ends"
    );
}

#[test]
fn a_doubled_error_rate_is_rolled_back_at_the_first_step_that_can_see_it() {
    let plan = plan("binomial");
    let traffic = Traffic::Errors {
        control: 0.02,
        treatment: 0.04,
        from_step: 0,
    };
    let detectable = first_detectable_step(&plan, 0.02, 0.04);
    let outcomes: Vec<Outcome> = (0..RUNS)
        .map(|seed| run(&plan, &traffic, UNITS_PER_MINUTE, 5000 + seed, LONG_ENOUGH))
        .collect();
    let by_then = outcomes
        .iter()
        .filter(|o| o.rolled_back_at.is_some_and(|s| s <= detectable))
        .count();
    let mut at_step = vec![0; plan.steps.len() + 1];
    for o in &outcomes {
        at_step[o.rolled_back_at.unwrap_or(plan.steps.len())] += 1;
    }
    println!(
        "2x errors (2 % -> 4 %, {UNITS_PER_MINUTE} units/min, {HOLD_MINUTES} min holds): first detectable step {detectable} ({} %); rolled back by then in {by_then}/{RUNS}; per step {at_step:?} (last: not rolled back); median exposure before rollback {} treated units, {} min",
        plan.steps[detectable.min(plan.steps.len() - 1)].percentage,
        median(outcomes.iter().map(|o| o.treatment_units).collect()),
        median(outcomes.iter().map(|o| o.minutes).collect()),
    );
    assert!(
        by_then * 100 >= 95 * RUNS as usize,
        "{by_then}/{RUNS}: {at_step:?}"
    );
    assert_eq!(at_step[plan.steps.len()], 0, "a regression never completes");
}

#[test]
fn a_latency_regression_on_a_mean_is_rolled_back() {
    let plan = plan("continuous");
    let traffic = Traffic::Latency {
        control: 120.0,
        treatment: 138.0,
        sd: 40.0,
    };
    let outcomes: Vec<Outcome> = (0..RUNS / 2)
        .map(|seed| run(&plan, &traffic, UNITS_PER_MINUTE, 9000 + seed, LONG_ENOUGH))
        .collect();
    let rolled = outcomes
        .iter()
        .filter(|o| o.rolled_back_at.is_some())
        .count();
    let mut at_step = vec![0; plan.steps.len() + 1];
    for o in &outcomes {
        at_step[o.rolled_back_at.unwrap_or(plan.steps.len())] += 1;
    }
    println!(
        "latency +15 % (120 -> 138 ms, sd 40): rolled back in {rolled}/{}; per step {at_step:?}; median {} treated units, {} min",
        RUNS / 2,
        median(outcomes.iter().map(|o| o.treatment_units).collect()),
        median(outcomes.iter().map(|o| o.minutes).collect()),
    );
    assert_eq!(rolled, (RUNS / 2) as usize, "{at_step:?}");
    // Healthy latency: no false alarm in these runs beyond alpha.
    let healthy = Traffic::Latency {
        control: 120.0,
        treatment: 120.0,
        sd: 40.0,
    };
    let false_alarms = (0..RUNS / 2)
        .filter(|seed| {
            run(
                &plan,
                &healthy,
                UNITS_PER_MINUTE,
                12_000 + seed,
                LONG_ENOUGH,
            )
            .rolled_back_at
            .is_some()
        })
        .count();
    println!(
        "latency A/A: {false_alarms} false rollbacks in {}",
        RUNS / 2
    );
    assert!(false_alarms as f64 <= plan.alpha * (RUNS / 2) as f64);
}

#[test]
fn a_regression_from_the_25_percent_step_is_caught_there_or_next() {
    let plan = plan("binomial");
    let traffic = Traffic::Errors {
        control: 0.02,
        treatment: 0.04,
        from_step: 2,
    };
    let outcomes: Vec<Outcome> = (0..RUNS)
        .map(|seed| {
            run(
                &plan,
                &traffic,
                UNITS_PER_MINUTE,
                20_000 + seed,
                LONG_ENOUGH,
            )
        })
        .collect();
    let mut at_step = vec![0; plan.steps.len() + 1];
    for o in &outcomes {
        at_step[o.rolled_back_at.unwrap_or(plan.steps.len())] += 1;
    }
    let caught = at_step[2] + at_step[3];
    println!(
        "2x errors from the 25 % step: rolled back at 25 % or 50 % in {caught}/{RUNS}; per step {at_step:?}"
    );
    assert!(caught * 100 >= 95 * RUNS as usize, "{at_step:?}");
    assert_eq!(at_step[plan.steps.len()], 0, "{at_step:?}");
}

#[test]
fn without_traffic_the_release_waits_for_ever() {
    let plan = plan("binomial");
    let traffic = Traffic::Errors {
        control: 0.02,
        treatment: 0.02,
        from_step: 0,
    };
    // A day of virtual time, no unit at all.
    let o = run(&plan, &traffic, 0, 1, 24 * 60);
    assert_eq!(o.rolled_back_at, None);
    assert_eq!(
        o.minutes,
        24 * 60,
        "it neither completed nor advanced to the end"
    );
    // And with the hold long over, still at the first step.
    let progress = Progress {
        step: 0,
        step_started_ms: 0,
        status: Status::Running,
    };
    assert!(matches!(
        decide(&plan, &progress, &[], 0, 86_400_000),
        Decision::Wait { .. }
    ));
}
