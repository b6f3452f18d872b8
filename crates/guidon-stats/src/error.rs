//! The one error type of the crate.

use serde::Serialize;

/// Why a statistic could not be computed.
///
/// Every function of the crate validates its input and returns one of these
/// instead of panicking or producing `NaN`. In an [`Analysis`](crate::Analysis)
/// a test that cannot be computed for one comparison is reported as
/// [`Outcome::Unavailable`](crate::Outcome::Unavailable) carrying this error,
/// so the other results are still returned.
///
/// Serialized as `{"code": "...", "message": "..."}` (see [`StatsError::code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A variant has fewer units than the statistic needs.
    #[error("{what} needs at least {needed} units, got {got}")]
    TooFewUnits {
        /// What was being computed, e.g. `"sample variance"`.
        what: &'static str,
        /// The minimum number of units.
        needed: u64,
        /// The number of units there were.
        got: u64,
    },
    /// The number of traffic weights differs from the number of variants.
    #[error("{weights} weights given for {variants} variants")]
    WeightsMismatch {
        /// The number of variants (control included).
        variants: usize,
        /// The number of weights.
        weights: usize,
    },
    /// The estimate has no sampling variance (every unit has the same value in
    /// both variants), so no test statistic or interval exists.
    #[error("the variance of the estimate is zero: every unit has the same value")]
    ZeroVariance,
    /// The control mean is zero, so a relative lift (`mean_t / mean_c - 1`)
    /// is undefined.
    #[error("the control mean is zero, so the relative lift is undefined")]
    ZeroControlMean,
    /// A variant's mean is zero or negative where the relative lift's
    /// interval needs it positive: with a treatment that never converts the
    /// relative lift is −100 % and has no interval.
    #[error(
        "the {variant} mean is {mean}, not positive, so the relative lift has no interval; read the absolute lift"
    )]
    NonPositiveMean {
        /// `"control"` or `"treatment"`.
        variant: &'static str,
        /// The mean.
        mean: f64,
    },
    /// An argument is out of its domain: not finite, negative where it must
    /// not be, a probability outside `[0, 1]`, inconsistent sums, ...
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl StatsError {
    /// A stable machine-readable code: `too_few_units`, `weights_mismatch`,
    /// `zero_variance`, `zero_control_mean`, `non_positive_mean` or
    /// `invalid_input`.
    pub fn code(&self) -> &'static str {
        match self {
            StatsError::TooFewUnits { .. } => "too_few_units",
            StatsError::WeightsMismatch { .. } => "weights_mismatch",
            StatsError::ZeroVariance => "zero_variance",
            StatsError::ZeroControlMean => "zero_control_mean",
            StatsError::NonPositiveMean { .. } => "non_positive_mean",
            StatsError::InvalidInput(_) => "invalid_input",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        StatsError::InvalidInput(message.into())
    }
}

impl Serialize for StatsError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("StatsError", 2)?;
        s.serialize_field("code", self.code())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// Fails unless `value` is finite.
pub(crate) fn finite(name: &str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::invalid(format!(
            "{name} must be finite, got {value}"
        )))
    }
}

/// Fails unless `alpha` is a usable significance level, strictly in (0, 1).
pub(crate) fn check_alpha(alpha: f64) -> Result<f64, StatsError> {
    if alpha.is_finite() && alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err(StatsError::invalid(format!(
            "alpha must be strictly between 0 and 1, got {alpha}"
        )))
    }
}
