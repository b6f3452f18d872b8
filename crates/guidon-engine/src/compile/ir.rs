//! The compiled form a [`Snapshot`](super::Snapshot) is made of: flags with
//! their variants, serves, prerequisites, targets and rules, segments, and
//! conditions whose literals (regexes, SemVer versions, timestamps, CIDR
//! blocks, time zones, string sets) are parsed once, with references resolved
//! to indices. Built by the compiler in the parent module, read by
//! `evaluate.rs`.

use foldhash::HashSet;
use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::Regex;
use serde_json::Value;

use crate::context::{AttrKey, UnitAttr};
use crate::hashing::FlagHasher;
use crate::model::Operator;
use crate::result::Reason;

#[derive(Debug)]
pub(crate) struct CompiledFlag {
    pub(crate) key: Box<str>,
    pub(crate) version: Option<u64>,
    pub(crate) enabled: bool,
    pub(crate) variants: Vec<CompiledVariant>,
    pub(crate) off_variant: Option<usize>,
    pub(crate) override_serve: Option<CompiledServe>,
    pub(crate) prerequisites: Vec<CompiledPrerequisite>,
    pub(crate) targets: Vec<CompiledTarget>,
    pub(crate) rules: Vec<CompiledRule>,
    /// The rollout percentage, when the flag has a rollout.
    pub(crate) rollout: Option<f64>,
    pub(crate) hasher: FlagHasher,
    pub(crate) bucket_by: UnitAttr,
    /// The reason of step 8 (nothing else decided), fixed by the flag's shape.
    pub(crate) fallthrough: Reason,
}

impl CompiledFlag {
    /// Whether the flag is a rollout of one variant against its off
    /// variant (exactly one variant with a weight, not the off one): a
    /// guarded release, whose units outside the percentage are the
    /// comparison's control.
    pub(crate) fn compares_off(&self) -> bool {
        let Some(off) = self.off_variant else {
            return false;
        };
        let mut weighted = self
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.weight > 0.0);
        matches!((weighted.next(), weighted.next()), (Some((i, _)), None) if i != off)
    }
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    pub(crate) key: Box<str>,
    pub(crate) weight: f64,
    /// Sum of the weights up to and including this variant, summed in file
    /// order exactly as flag-format.md §6 describes.
    pub(crate) cumulative: f64,
    pub(crate) enabled: bool,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CompiledServe {
    pub(crate) enabled: bool,
    pub(crate) variant: Option<usize>,
    pub(crate) percentage: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct CompiledPrerequisite {
    pub(crate) flag: usize,
    pub(crate) enabled: bool,
    pub(crate) variants: Option<Vec<Box<str>>>,
}

#[derive(Debug)]
pub(crate) struct CompiledTarget {
    pub(crate) attribute: Option<UnitAttr>,
    pub(crate) values: StringSet,
    pub(crate) serve: CompiledServe,
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: Box<str>,
    pub(crate) any: bool,
    pub(crate) conditions: Vec<CompiledCondition>,
    pub(crate) serve: CompiledServe,
}

#[derive(Debug)]
pub(crate) struct CompiledSegment {
    pub(crate) key: Box<str>,
    pub(crate) attribute: UnitAttr,
    pub(crate) included: StringSet,
    pub(crate) excluded: StringSet,
    pub(crate) rules: Vec<CompiledSegmentRule>,
}

#[derive(Debug)]
pub(crate) struct CompiledSegmentRule {
    pub(crate) any: bool,
    pub(crate) conditions: Vec<CompiledCondition>,
}

#[derive(Debug)]
pub(crate) struct CompiledCondition {
    pub(crate) attribute: Attribute,
    pub(crate) operator: Operator,
    pub(crate) test: Test,
    /// `negate` XOR the `not_*`/`neq` form of the operator: the one flip
    /// applied to a defined outcome.
    pub(crate) invert: bool,
    pub(crate) negate: bool,
    pub(crate) case_insensitive: bool,
}

#[derive(Debug)]
pub(crate) enum Attribute {
    Context(AttrKey),
    Now,
    DayOfWeek(TimeZone),
    Hour(TimeZone),
    /// Segment conditions read no attribute of their own.
    Unused,
}

impl Attribute {
    pub(crate) fn name(&self) -> &str {
        match self {
            Attribute::Context(key) => key.name(),
            Attribute::Now => "$now",
            Attribute::DayOfWeek(_) => "$day_of_week",
            Attribute::Hour(_) => "$hour",
            Attribute::Unused => "",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Literal {
    Str(Box<str>),
    Num(Num),
    Bool(bool),
}

/// A JSON number, compared exactly as an integer when both sides are
/// integers (an f64 cannot tell 9007199254740993 from 9007199254740992).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num {
    float: f64,
    int: Option<i128>,
}

impl Num {
    pub(crate) fn of(n: &serde_json::Number) -> Option<Num> {
        let int = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from));
        n.as_f64().map(|float| Num { float, int })
    }

    pub(crate) fn int(i: i64) -> Num {
        Num {
            float: i as f64,
            int: Some(i128::from(i)),
        }
    }

    pub(crate) fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self.int, other.int) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => self.float.partial_cmp(&other.float),
        }
    }

    pub(crate) fn to_json(self) -> Value {
        match self.int {
            Some(i) => i64::try_from(i).map_or(Value::Null, Value::from),
            None => serde_json::Number::from_f64(self.float).map_or(Value::Null, Value::Number),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ordering {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Ordering {
    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Ordering::Eq => ord == Equal,
            Ordering::Gt => ord == Greater,
            Ordering::Gte => ord != Less,
            Ordering::Lt => ord == Less,
            Ordering::Lte => ord != Greater,
        }
    }
}

/// A set of strings for `in`, targets and segment lists: a scan for a few
/// values (what most rules hold), a hash set for many (a list of users).
#[derive(Debug)]
pub(crate) enum StringSet {
    Few(Vec<Box<str>>),
    Many(HashSet<Box<str>>),
}

impl StringSet {
    const SCAN_UP_TO: usize = 8;

    pub(super) fn new(mut values: Vec<Box<str>>) -> StringSet {
        values.sort_unstable();
        values.dedup();
        if values.len() <= StringSet::SCAN_UP_TO {
            StringSet::Few(values)
        } else {
            StringSet::Many(values.into_iter().collect())
        }
    }

    pub(crate) fn contains(&self, value: &str) -> bool {
        match self {
            StringSet::Few(values) => values.iter().any(|v| **v == *value),
            StringSet::Many(set) => set.contains(value),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            StringSet::Few(values) => values.is_empty(),
            StringSet::Many(set) => set.is_empty(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Test {
    Equals(Literal),
    OneOf {
        strings: StringSet,
        numbers: Vec<Num>,
    },
    Contains(Vec<Box<str>>),
    StartsWith(Vec<Box<str>>),
    EndsWith(Vec<Box<str>>),
    Matches(Vec<Regex>),
    Compare(Ordering, Num),
    Semver(Ordering, semver::Version),
    Before(Timestamp),
    After(Timestamp),
    Exists,
    InSegment(Vec<usize>),
    InCidr(Vec<IpNet>),
}

/// The values of `$day_of_week`, indexed by the day's offset from Monday.
pub(crate) const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
