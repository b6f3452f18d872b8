//! Compilation of a flag file into an immutable [`Snapshot`]. Validation is
//! compilation that keeps going after a problem: one pass both checks every
//! rule of the format and builds the evaluated form, so the two can never
//! disagree about what is valid.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::context::{AttrKey, UnitAttr, json_type_name};
use crate::error::{Problem, ValidationError};
use crate::hashing::FlagHasher;
use crate::model::{Condition, DEFAULT_BUCKET_BY, Flag, FlagFile, Match, Operator, Segment, Serve};
use crate::result::Reason;

/// Longest allowed chain of prerequisites (or of segments nested in
/// segments). Evaluation recurses along these chains, so they are bounded.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// The most work one evaluation may do, in conditions checked plus flags
/// and segments entered, counting every path through shared prerequisites
/// and segments: a diamond of references is evaluated once per path, so
/// fan-out must be bounded as well as depth.
pub const MAX_EVALUATION_COST: usize = 10_000;
/// Weights must sum to 100 within ±0.01; the extra 1e-9 absorbs binary
/// floating point, in which 33.33 + 33.33 + 33.33 is 99.98999999999999.
const WEIGHT_TOLERANCE: f64 = 0.01 + 1e-9;
/// Longest `matches` pattern, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size limit of one `matches` pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// An environment's flags and segments, compiled for evaluation: regexes,
/// SemVer versions, timestamps, CIDR blocks and time zones parsed once,
/// references resolved to indices. Immutable; share it behind an `Arc`.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) flags: Vec<CompiledFlag>,
    pub(crate) index: HashMap<Box<str>, usize>,
    pub(crate) segments: Vec<CompiledSegment>,
    revision: Option<u64>,
}

/// What the caller knows about the flags beyond the file: the store's
/// revision of the environment and each flag's version.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub revision: Option<u64>,
    pub versions: std::collections::HashMap<String, u64>,
}

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

    fn new(mut values: Vec<Box<str>>) -> StringSet {
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

impl Snapshot {
    /// Validates and compiles a flag file. On failure, every problem found,
    /// each with its JSON path.
    pub fn compile(file: &FlagFile) -> Result<Snapshot, ValidationError> {
        Snapshot::compile_with(file, &SnapshotOptions::default())
    }

    pub fn compile_with(
        file: &FlagFile,
        options: &SnapshotOptions,
    ) -> Result<Snapshot, ValidationError> {
        let mut c = Compiler::new(file);
        let segments = file
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| c.segment(i, s))
            .collect();
        let flags: Vec<CompiledFlag> = file
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| c.flag(i, f, options.versions.get(&f.key).copied()))
            .collect();
        c.check_chains();
        if !c.problems.is_empty() {
            return Err(ValidationError {
                problems: c.problems,
            });
        }
        let mut index = HashMap::with_capacity(flags.len());
        for (i, flag) in flags.iter().enumerate() {
            index.insert(flag.key.clone(), i);
        }
        Ok(Snapshot {
            flags,
            index,
            segments,
            revision: options.revision,
        })
    }

    /// The store's revision this snapshot was built at, if it came from one.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The flag keys, in file order.
    pub fn flag_keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| &*f.key)
    }

    pub fn contains(&self, flag_key: &str) -> bool {
        self.index.contains_key(flag_key)
    }
}

struct Compiler<'f> {
    file: &'f FlagFile,
    problems: Vec<Problem>,
    flag_index: HashMap<&'f str, usize>,
    segment_index: HashMap<&'f str, usize>,
    /// flag -> (prerequisite flag, path of the reference)
    flag_edges: Vec<Vec<(usize, String)>>,
    /// segment -> (segment used in its rules, path of the reference)
    segment_edges: Vec<Vec<(usize, String)>>,
    /// flag -> segments its rules refer to (once per condition)
    flag_segments: Vec<Vec<usize>>,
}

/// Whether `key` is a valid flag, segment, variant or environment key:
/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`.
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `rules[N]`: the name an unnamed rule gets from its position.
fn is_default_rule_name(name: &str) -> bool {
    name.strip_prefix("rules[")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

const KEY_RULE: &str = "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$";

/// Formats a number as a person wrote it: 99.5, not 99.50000000000001.
fn show(x: f64) -> String {
    let rounded = (x * 1e6).round() / 1e6;
    format!("{rounded}")
}

impl<'f> Compiler<'f> {
    fn new(file: &'f FlagFile) -> Compiler<'f> {
        let mut c = Compiler {
            file,
            problems: Vec::new(),
            flag_index: HashMap::new(),
            segment_index: HashMap::new(),
            flag_edges: vec![Vec::new(); file.flags.len()],
            segment_edges: vec![Vec::new(); file.segments.len()],
            flag_segments: vec![Vec::new(); file.flags.len()],
        };
        for (i, flag) in file.flags.iter().enumerate() {
            let path = format!("flags[{i}].key");
            if !is_valid_key(&flag.key) {
                c.problem(path, format!("invalid flag key {:?}: {KEY_RULE}", flag.key));
            } else if let Some(first) = c.flag_index.get(flag.key.as_str()) {
                c.problem(
                    path,
                    format!(
                        "duplicate flag key {:?} (first at flags[{first}])",
                        flag.key
                    ),
                );
            } else {
                c.flag_index.insert(&flag.key, i);
            }
        }
        for (i, segment) in file.segments.iter().enumerate() {
            let path = format!("segments[{i}].key");
            if !is_valid_key(&segment.key) {
                c.problem(
                    path,
                    format!("invalid segment key {:?}: {KEY_RULE}", segment.key),
                );
            } else if let Some(first) = c.segment_index.get(segment.key.as_str()) {
                c.problem(
                    path,
                    format!(
                        "duplicate segment key {:?} (first at segments[{first}])",
                        segment.key
                    ),
                );
            } else {
                c.segment_index.insert(&segment.key, i);
            }
        }
        c
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn flag(&mut self, i: usize, flag: &'f Flag, version: Option<u64>) -> CompiledFlag {
        let at = format!("flags[{i}]");
        let variants = self.variants(&at, flag);
        let variant_ref = |c: &mut Compiler<'f>, path: String, key: &str| -> Option<usize> {
            let found = flag.variants.iter().position(|v| v.key == key);
            if found.is_none() {
                let msg = if flag.variants.is_empty() {
                    format!("variant {key:?} named, but the flag has no variants")
                } else {
                    format!("unknown variant {key:?}")
                };
                c.problem(path, msg);
            }
            found
        };
        let off_variant = flag
            .off_variant
            .as_ref()
            .and_then(|k| variant_ref(self, format!("{at}.off_variant"), k));

        let serve = |c: &mut Compiler<'f>, path: String, s: &Serve| -> CompiledServe {
            if let Some(p) = s.percentage {
                if s.enabled {
                    c.percentage(format!("{path}.percentage"), p);
                } else {
                    c.problem(
                        format!("{path}.percentage"),
                        "a percentage in a serve that is not enabled would be ignored",
                    );
                }
            }
            let variant = match &s.variant {
                Some(k) if !s.enabled => {
                    c.problem(
                        format!("{path}.variant"),
                        format!("variant {k:?} named in a serve that is not enabled"),
                    );
                    None
                }
                Some(k) => variant_ref(c, format!("{path}.variant"), k),
                None => None,
            };
            CompiledServe {
                enabled: s.enabled,
                variant,
                percentage: s.percentage,
            }
        };

        let override_serve = flag
            .override_serve
            .as_ref()
            .map(|s| serve(self, format!("{at}.override"), s));

        let mut prerequisites = Vec::with_capacity(flag.prerequisites.len());
        for (j, p) in flag.prerequisites.iter().enumerate() {
            let path = format!("{at}.prerequisites[{j}]");
            let Some(&target) = self.flag_index.get(p.flag.as_str()) else {
                self.problem(format!("{path}.flag"), format!("unknown flag {:?}", p.flag));
                continue;
            };
            if target == i {
                self.problem(
                    format!("{path}.flag"),
                    format!("flag {:?} cannot be its own prerequisite", p.flag),
                );
                continue;
            }
            self.flag_edges[i].push((target, format!("{path}.flag")));
            if p.variants.as_ref().is_some_and(Vec::is_empty) {
                self.problem(
                    format!("{path}.variants"),
                    "an empty list of variants can never be met; leave variants out to require none",
                );
            }
            if let Some(keys) = &p.variants {
                let other = &self.file.flags[target];
                for (k, key) in keys.iter().enumerate() {
                    if !other.variants.iter().any(|v| &v.key == key) {
                        self.problem(
                            format!("{path}.variants[{k}]"),
                            format!("flag {:?} has no variant {key:?}", p.flag),
                        );
                    }
                }
            }
            prerequisites.push(CompiledPrerequisite {
                flag: target,
                enabled: p.enabled,
                variants: p
                    .variants
                    .as_ref()
                    .map(|v| v.iter().map(|k| k.as_str().into()).collect()),
            });
        }

        let mut targets = Vec::with_capacity(flag.targets.len());
        for (j, t) in flag.targets.iter().enumerate() {
            let path = format!("{at}.targets[{j}]");
            if let Some(a) = &t.attribute {
                self.attribute_name(format!("{path}.attribute"), a);
            }
            if t.values.is_empty() {
                self.problem(
                    format!("{path}.values"),
                    "a target must list at least one value",
                );
            }
            let values = self.unit_set(&format!("{path}.values"), &t.values);
            let served = serve(self, format!("{path}.serve"), &t.serve);
            targets.push(CompiledTarget {
                attribute: t.attribute.as_deref().map(UnitAttr::new),
                values,
                serve: served,
            });
        }

        let mut rules = Vec::with_capacity(flag.rules.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (j, r) in flag.rules.iter().enumerate() {
            let path = format!("{at}.rules[{j}]");
            let name = r.name.clone().unwrap_or_else(|| format!("rules[{j}]"));
            if r.name.as_deref().is_some_and(is_default_rule_name) {
                self.problem(
                    format!("{path}.name"),
                    format!("rule names of the form {name:?} are reserved for unnamed rules"),
                );
            } else if name.is_empty() {
                self.problem(format!("{path}.name"), "a rule name cannot be empty");
            } else if let Some(first) = names.get(&name) {
                self.problem(
                    format!("{path}.name"),
                    format!("duplicate rule name {name:?} (first at rules[{first}])"),
                );
            } else {
                names.insert(name.clone(), j);
            }
            let conditions = self.conditions(&path, &r.conditions, Owner::Flag(i));
            let served = serve(self, format!("{path}.serve"), &r.serve);
            rules.push(CompiledRule {
                name: name.into(),
                any: r.match_kind == Match::Any,
                conditions,
                serve: served,
            });
        }

        let (rollout, salt, bucket_by) = match &flag.rollout {
            Some(r) => {
                self.percentage(format!("{at}.rollout.percentage"), r.percentage);
                if let Some(b) = &r.bucket_by {
                    self.attribute_name(format!("{at}.rollout.bucket_by"), b);
                }
                (
                    Some(r.percentage),
                    r.salt.clone().unwrap_or_default(),
                    r.bucket_by.as_deref().unwrap_or(DEFAULT_BUCKET_BY),
                )
            }
            None => (None, String::new(), DEFAULT_BUCKET_BY),
        };

        let fallthrough = if !flag.variants.is_empty() {
            Reason::Split
        } else if flag.targets.is_empty() && flag.rules.is_empty() && flag.prerequisites.is_empty()
        {
            Reason::Static
        } else {
            Reason::Default
        };

        CompiledFlag {
            key: flag.key.as_str().into(),
            version,
            enabled: flag.enabled,
            variants,
            off_variant,
            override_serve,
            prerequisites,
            targets,
            rules,
            rollout,
            hasher: FlagHasher::new(&flag.key, &salt),
            bucket_by: UnitAttr::new(bucket_by),
            fallthrough,
        }
    }

    fn variants(&mut self, at: &str, flag: &Flag) -> Vec<CompiledVariant> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut cumulative = 0.0;
        let mut out = Vec::with_capacity(flag.variants.len());
        let mut weights_ok = true;
        for (j, v) in flag.variants.iter().enumerate() {
            let path = format!("{at}.variants[{j}]");
            if !is_valid_key(&v.key) {
                self.problem(
                    format!("{path}.key"),
                    format!("invalid variant key {:?}: {KEY_RULE}", v.key),
                );
            } else if let Some(first) = seen.get(v.key.as_str()) {
                self.problem(
                    format!("{path}.key"),
                    format!(
                        "duplicate variant key {:?} (first at variants[{first}])",
                        v.key
                    ),
                );
            } else {
                seen.insert(&v.key, j);
            }
            if !(0.0..=100.0).contains(&v.weight) {
                weights_ok = false;
                self.problem(
                    format!("{path}.weight"),
                    format!(
                        "weight {} is out of range, must be within [0, 100]",
                        show(v.weight)
                    ),
                );
            }
            cumulative += v.weight;
            out.push(CompiledVariant {
                key: v.key.as_str().into(),
                weight: v.weight,
                cumulative,
                enabled: v.enabled,
                value: v.value.clone(),
            });
        }
        if weights_ok && !flag.variants.is_empty() && (cumulative - 100.0).abs() > WEIGHT_TOLERANCE
        {
            let last = flag.variants.len() - 1;
            self.problem(
                format!("{at}.variants[{last}].weight"),
                format!("weights sum to {}, must be 100", show(cumulative)),
            );
        }
        out
    }

    fn percentage(&mut self, path: String, p: f64) {
        if !(0.0..=100.0).contains(&p) {
            self.problem(
                path,
                format!(
                    "percentage {} is out of range, must be within [0, 100]",
                    show(p)
                ),
            );
        }
    }

    fn attribute_name(&mut self, path: String, name: &str) {
        if name.is_empty() {
            self.problem(path, "attribute name cannot be empty");
        } else if name.starts_with('$') {
            self.problem(
                path,
                format!("special attribute {name:?} cannot identify a unit"),
            );
        }
    }

    /// Target and segment lists of units: strings, or integers in decimal.
    fn unit_set(&mut self, path: &str, values: &[Value]) -> StringSet {
        let mut set = Vec::with_capacity(values.len());
        for (k, v) in values.iter().enumerate() {
            match crate::context::Unit::from_value(v) {
                Some(unit) => set.push(unit.as_str().into()),
                None => self.problem(
                    format!("{path}[{k}]"),
                    format!(
                        "a unit must be a string or an integer, got {}",
                        json_type_name(v)
                    ),
                ),
            }
        }
        StringSet::new(set)
    }

    fn segment(&mut self, i: usize, segment: &'f Segment) -> CompiledSegment {
        let at = format!("segments[{i}]");
        if let Some(a) = &segment.attribute {
            self.attribute_name(format!("{at}.attribute"), a);
        }
        let included = self.unit_set(&format!("{at}.included"), &segment.included);
        let excluded = self.unit_set(&format!("{at}.excluded"), &segment.excluded);
        let rules = segment
            .rules
            .iter()
            .enumerate()
            .map(|(j, r)| CompiledSegmentRule {
                any: r.match_kind == Match::Any,
                conditions: self.conditions(
                    &format!("{at}.rules[{j}]"),
                    &r.conditions,
                    Owner::Segment(i),
                ),
            })
            .collect();
        CompiledSegment {
            key: segment.key.as_str().into(),
            attribute: UnitAttr::new(segment.attribute.as_deref().unwrap_or(DEFAULT_BUCKET_BY)),
            included,
            excluded,
            rules,
        }
    }

    fn conditions(
        &mut self,
        at: &str,
        conditions: &[Condition],
        owner: Owner,
    ) -> Vec<CompiledCondition> {
        conditions
            .iter()
            .enumerate()
            .filter_map(|(k, c)| self.condition(&format!("{at}.conditions[{k}]"), c, owner))
            .collect()
    }

    fn condition(&mut self, at: &str, c: &Condition, owner: Owner) -> Option<CompiledCondition> {
        use Operator as Op;
        let before = self.problems.len();
        let op = c.operator;
        let values_path = format!("{at}.values");

        let attribute = if op.is_segment_operator() {
            if c.attribute.is_some() {
                self.problem(
                    format!("{at}.attribute"),
                    format!(
                        "operator {} takes no attribute: each segment names its own",
                        op.as_str()
                    ),
                );
            }
            if c.timezone.is_some() {
                self.problem(
                    format!("{at}.timezone"),
                    "timezone applies only to $now, $day_of_week and $hour",
                );
            }
            Attribute::Unused
        } else {
            match c.attribute.as_deref() {
                None => {
                    self.problem(
                        format!("{at}.attribute"),
                        format!("operator {} needs an attribute", op.as_str()),
                    );
                    Attribute::Unused
                }
                Some("") => {
                    self.problem(format!("{at}.attribute"), "attribute name cannot be empty");
                    Attribute::Unused
                }
                Some(name) if name.starts_with('$') => self.special_attribute(at, name, c),
                Some(name) => {
                    if c.timezone.is_some() {
                        self.problem(
                            format!("{at}.timezone"),
                            "timezone applies only to $now, $day_of_week and $hour",
                        );
                    }
                    Attribute::Context(AttrKey::new(name))
                }
            }
        };

        if c.case_insensitive && !op.is_string_operator() {
            self.problem(
                format!("{at}.case_insensitive"),
                format!(
                    "case_insensitive does not apply to operator {}",
                    op.as_str()
                ),
            );
        }

        let count = c.values.len();
        let (min, max) = match op {
            Op::Eq
            | Op::Neq
            | Op::Gt
            | Op::Gte
            | Op::Lt
            | Op::Lte
            | Op::SemverEq
            | Op::SemverGt
            | Op::SemverGte
            | Op::SemverLt
            | Op::SemverLte
            | Op::Before
            | Op::After => (1, 1),
            Op::Exists | Op::NotExists => (0, 0),
            _ => (1, usize::MAX),
        };
        if count < min || count > max {
            let wanted = match (min, max) {
                (0, 0) => "no values".to_owned(),
                (1, 1) => "exactly one value".to_owned(),
                _ => "at least one value".to_owned(),
            };
            self.problem(
                values_path.clone(),
                format!("operator {} takes {wanted}, got {count}", op.as_str()),
            );
            return None;
        }

        let ci = c.case_insensitive;
        let fold = |s: &str| -> Box<str> {
            if ci {
                s.to_lowercase().into()
            } else {
                s.into()
            }
        };
        let strings = |c2: &mut Compiler<'f>| -> Vec<Box<str>> {
            let mut out = Vec::with_capacity(count);
            for (m, v) in c.values.iter().enumerate() {
                match v {
                    Value::String(s) => out.push(fold(s)),
                    other => c2.problem(
                        format!("{values_path}[{m}]"),
                        format!(
                            "operator {} compares strings, got {}",
                            op.as_str(),
                            json_type_name(other)
                        ),
                    ),
                }
            }
            out
        };
        let first = &c.values.first();
        let one_string = |c2: &mut Compiler<'f>, what: &str| -> Option<&str> {
            match first {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    c2.problem(
                        format!("{values_path}[0]"),
                        format!(
                            "operator {} takes {what}, got {}",
                            op.as_str(),
                            json_type_name(other)
                        ),
                    );
                    None
                }
                None => None,
            }
        };

        let test = match op {
            Op::Eq | Op::Neq => match first {
                Some(Value::String(s)) => Some(Test::Equals(Literal::Str(fold(s)))),
                Some(Value::Number(n)) => Num::of(n).map(|x| Test::Equals(Literal::Num(x))),
                Some(Value::Bool(b)) => Some(Test::Equals(Literal::Bool(*b))),
                Some(other) => {
                    self.problem(
                        format!("{values_path}[0]"),
                        format!(
                            "operator {} compares a string, a number or a boolean, got {}",
                            op.as_str(),
                            json_type_name(other)
                        ),
                    );
                    None
                }
                None => None,
            },
            Op::In | Op::NotIn => {
                let mut strings = Vec::new();
                let mut numbers = Vec::new();
                for (m, v) in c.values.iter().enumerate() {
                    match v {
                        Value::String(s) => strings.push(fold(s)),
                        Value::Number(n) => numbers.extend(Num::of(n)),
                        other => self.problem(
                            format!("{values_path}[{m}]"),
                            format!(
                                "operator {} takes strings or numbers, got {}",
                                op.as_str(),
                                json_type_name(other)
                            ),
                        ),
                    }
                }
                Some(Test::OneOf {
                    strings: StringSet::new(strings),
                    numbers,
                })
            }
            Op::Contains | Op::NotContains => Some(Test::Contains(strings(self))),
            Op::StartsWith => Some(Test::StartsWith(strings(self))),
            Op::EndsWith => Some(Test::EndsWith(strings(self))),
            Op::Matches => {
                let mut regexes = Vec::with_capacity(count);
                for (m, v) in c.values.iter().enumerate() {
                    let path = format!("{values_path}[{m}]");
                    match v {
                        Value::String(s) if s.len() > MAX_REGEX_LEN => self.problem(
                            path,
                            format!(
                                "regex is {} bytes long, at most {MAX_REGEX_LEN} allowed",
                                s.len()
                            ),
                        ),
                        Value::String(s) => match RegexBuilder::new(s)
                            .case_insensitive(ci)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .dfa_size_limit(REGEX_SIZE_LIMIT)
                            .build()
                        {
                            Ok(r) => regexes.push(r),
                            Err(e) => {
                                let msg = e.to_string();
                                let msg = msg.lines().last().unwrap_or("").trim();
                                let msg = msg.strip_prefix("error: ").unwrap_or(msg).to_owned();
                                self.problem(path, format!("invalid regex {s:?}: {msg}"));
                            }
                        },
                        other => self.problem(
                            path,
                            format!(
                                "operator matches takes regexes, got {}",
                                json_type_name(other)
                            ),
                        ),
                    }
                }
                Some(Test::Matches(regexes))
            }
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                let ord = match op {
                    Op::Gt => Ordering::Gt,
                    Op::Gte => Ordering::Gte,
                    Op::Lt => Ordering::Lt,
                    _ => Ordering::Lte,
                };
                match first {
                    Some(Value::Number(n)) => Num::of(n).map(|x| Test::Compare(ord, x)),
                    Some(other) => {
                        self.problem(
                            format!("{values_path}[0]"),
                            format!(
                                "operator {} compares numbers, got {}",
                                op.as_str(),
                                json_type_name(other)
                            ),
                        );
                        None
                    }
                    None => None,
                }
            }
            Op::SemverEq | Op::SemverGt | Op::SemverGte | Op::SemverLt | Op::SemverLte => {
                let ord = match op {
                    Op::SemverEq => Ordering::Eq,
                    Op::SemverGt => Ordering::Gt,
                    Op::SemverGte => Ordering::Gte,
                    Op::SemverLt => Ordering::Lt,
                    _ => Ordering::Lte,
                };
                one_string(self, "a SemVer version string").and_then(|s| {
                    match semver::Version::parse(s) {
                        Ok(v) => Some(Test::Semver(ord, v)),
                        Err(e) => {
                            self.problem(
                                format!("{values_path}[0]"),
                                format!("invalid SemVer version {s:?}: {e}"),
                            );
                            None
                        }
                    }
                })
            }
            Op::Before | Op::After => {
                one_string(self, "an RFC 3339 timestamp").and_then(|s| {
                    match s.parse::<Timestamp>() {
                        Ok(t) if op == Op::Before => Some(Test::Before(t)),
                        Ok(t) => Some(Test::After(t)),
                        Err(e) => {
                            self.problem(
                                format!("{values_path}[0]"),
                                format!("invalid RFC 3339 timestamp {s:?}: {e}"),
                            );
                            None
                        }
                    }
                })
            }
            Op::Exists | Op::NotExists => Some(Test::Exists),
            Op::InSegment | Op::NotInSegment => {
                let mut found = Vec::with_capacity(count);
                for (m, v) in c.values.iter().enumerate() {
                    let path = format!("{values_path}[{m}]");
                    match v {
                        Value::String(s) => match self.segment_index.get(s.as_str()) {
                            Some(&seg) => {
                                if found.contains(&seg) {
                                    // Listed twice: evaluated once.
                                    continue;
                                }
                                match owner {
                                    Owner::Segment(from) if from == seg => {
                                        self.problem(
                                            path,
                                            format!("segment {s:?} cannot refer to itself"),
                                        );
                                        continue;
                                    }
                                    Owner::Segment(from) => {
                                        self.segment_edges[from].push((seg, path))
                                    }
                                    Owner::Flag(flag) => self.flag_segments[flag].push(seg),
                                }
                                found.push(seg);
                            }
                            None => self.problem(path, format!("unknown segment {s:?}")),
                        },
                        other => self.problem(
                            path,
                            format!(
                                "operator {} takes segment keys, got {}",
                                op.as_str(),
                                json_type_name(other)
                            ),
                        ),
                    }
                }
                Some(Test::InSegment(found))
            }
            Op::InCidr => {
                let mut nets = Vec::with_capacity(count);
                for (m, v) in c.values.iter().enumerate() {
                    let path = format!("{values_path}[{m}]");
                    match v {
                        Value::String(s) => match s.parse::<IpNet>() {
                            Ok(net) => nets.push(net.trunc()),
                            Err(_) => match s.parse::<std::net::IpAddr>() {
                                Ok(addr) => nets.push(IpNet::from(addr)),
                                Err(_) => self.problem(
                                    path,
                                    format!("invalid CIDR block {s:?}, expected e.g. 10.0.0.0/8 or 2001:db8::/32"),
                                ),
                            },
                        },
                        other => self.problem(
                            path,
                            format!("operator in_cidr takes CIDR blocks, got {}", json_type_name(other)),
                        ),
                    }
                }
                Some(Test::InCidr(nets))
            }
        };

        self.check_special_values(at, &attribute, c);

        if self.problems.len() > before {
            return None;
        }
        let not_form = matches!(
            op,
            Op::Neq | Op::NotIn | Op::NotContains | Op::NotExists | Op::NotInSegment
        );
        Some(CompiledCondition {
            attribute,
            operator: op,
            test: test?,
            invert: c.negate ^ not_form,
            negate: c.negate,
            case_insensitive: ci,
        })
    }

    fn special_attribute(&mut self, at: &str, name: &str, c: &Condition) -> Attribute {
        use Operator as Op;
        let tz = match c.timezone.as_deref() {
            None => TimeZone::UTC,
            Some(tz) => {
                match TimeZone::get(tz) {
                    Ok(zone) => zone,
                    Err(_) => {
                        self.problem(
                        format!("{at}.timezone"),
                        format!("unknown time zone {tz:?}, expected an IANA name such as Europe/Paris"),
                    );
                        TimeZone::UTC
                    }
                }
            }
        };
        let op = c.operator;
        let (attribute, allowed): (Attribute, &[Op]) = match name {
            "$now" => (Attribute::Now, &[Op::Before, Op::After]),
            "$day_of_week" => (
                Attribute::DayOfWeek(tz),
                &[Op::Eq, Op::Neq, Op::In, Op::NotIn],
            ),
            "$hour" => (
                Attribute::Hour(tz),
                &[
                    Op::Eq,
                    Op::Neq,
                    Op::In,
                    Op::NotIn,
                    Op::Gt,
                    Op::Gte,
                    Op::Lt,
                    Op::Lte,
                ],
            ),
            _ => {
                self.problem(
                    format!("{at}.attribute"),
                    format!("unknown special attribute {name:?}: only $now, $day_of_week and $hour exist"),
                );
                return Attribute::Unused;
            }
        };
        if !allowed.contains(&op) {
            let names: Vec<&str> = allowed.iter().map(|o| o.as_str()).collect();
            self.problem(
                format!("{at}.operator"),
                format!(
                    "operator {} does not apply to {name}; use one of {}",
                    op.as_str(),
                    names.join(", ")
                ),
            );
        }
        attribute
    }

    /// `$day_of_week` literals must be day names and `$hour` literals hours,
    /// or the condition could never match.
    fn check_special_values(&mut self, at: &str, attribute: &Attribute, c: &Condition) {
        for (m, v) in c.values.iter().enumerate() {
            let path = format!("{at}.values[{m}]");
            match attribute {
                Attribute::DayOfWeek(_) => {
                    let ok = v.as_str().is_some_and(|s| {
                        let s = if c.case_insensitive {
                            s.to_lowercase()
                        } else {
                            s.to_owned()
                        };
                        DAY_NAMES.contains(&s.as_str())
                    });
                    if !ok {
                        self.problem(
                            path,
                            format!("{v} is not a day of the week (monday..sunday, lowercase)"),
                        );
                    }
                }
                Attribute::Hour(_) if !v.as_f64().is_some_and(|h| (0.0..=23.0).contains(&h)) => {
                    self.problem(path, format!("{v} is not an hour (a number from 0 to 23)"));
                }
                _ => {}
            }
        }
    }

    /// Rejects cycles and over-long chains among prerequisites and among
    /// segments, reporting each at the reference that closes it.
    fn check_chains(&mut self) {
        let flag_names: Vec<&str> = self.file.flags.iter().map(|f| f.key.as_str()).collect();
        let seg_names: Vec<&str> = self.file.segments.iter().map(|s| s.key.as_str()).collect();
        let flag_edges = std::mem::take(&mut self.flag_edges);
        let seg_edges = std::mem::take(&mut self.segment_edges);
        let flag_cycles = self.check_graph(
            &flag_edges,
            &flag_names,
            "prerequisite",
            "flags",
            "prerequisites",
        );
        let segment_cycles =
            self.check_graph(&seg_edges, &seg_names, "segment", "segments", "rules");
        if !flag_cycles && !segment_cycles {
            self.check_cost(&flag_edges, &seg_edges);
        }
    }

    /// Bounds the work of one evaluation (see [`MAX_EVALUATION_COST`]) over
    /// the graph of flags and segments, which has no cycle by now.
    fn check_cost(
        &mut self,
        flag_edges: &[Vec<(usize, String)>],
        seg_edges: &[Vec<(usize, String)>],
    ) {
        let flags = self.file.flags.len();
        // Nodes: flags 0..flags, then segments.
        let own = |conditions: usize| conditions.saturating_add(1);
        let mut children: Vec<Vec<usize>> = Vec::with_capacity(flags + seg_edges.len());
        let mut own_cost: Vec<usize> = Vec::with_capacity(flags + seg_edges.len());
        for (i, flag) in self.file.flags.iter().enumerate() {
            let mut c: Vec<usize> = flag_edges[i].iter().map(|(f, _)| *f).collect();
            c.extend(self.flag_segments[i].iter().map(|s| flags + s));
            children.push(c);
            own_cost.push(own(flag.rules.iter().map(|r| r.conditions.len()).sum()));
        }
        for (j, segment) in self.file.segments.iter().enumerate() {
            children.push(seg_edges[j].iter().map(|(s, _)| flags + s).collect());
            own_cost.push(own(segment.rules.iter().map(|r| r.conditions.len()).sum()));
        }
        let n = children.len();
        let mut cost: Vec<Option<usize>> = vec![None; n];
        for root in 0..n {
            // Iterative post-order: children's costs first.
            let mut stack = vec![root];
            while let Some(&node) = stack.last() {
                if cost[node].is_some() {
                    stack.pop();
                    continue;
                }
                let pending: Vec<usize> = children[node]
                    .iter()
                    .copied()
                    .filter(|c| cost[*c].is_none())
                    .collect();
                if !pending.is_empty() {
                    stack.extend(pending);
                    continue;
                }
                stack.pop();
                let child_costs: Vec<usize> =
                    children[node].iter().filter_map(|c| cost[*c]).collect();
                let total = child_costs
                    .iter()
                    .fold(own_cost[node], |sum, c| sum.saturating_add(*c));
                cost[node] = Some(total);
                if total > MAX_EVALUATION_COST
                    && child_costs.iter().all(|c| *c <= MAX_EVALUATION_COST)
                {
                    let (path, name) = if node < flags {
                        (format!("flags[{node}]"), self.file.flags[node].key.as_str())
                    } else {
                        let j = node - flags;
                        (format!("segments[{j}]"), self.file.segments[j].key.as_str())
                    };
                    self.problem(
                        path,
                        format!(
                            "evaluating {name:?} may check up to {total} conditions, counting every path \
                             through its prerequisites and segments; at most {MAX_EVALUATION_COST} allowed"
                        ),
                    );
                }
            }
        }
    }

    fn check_graph(
        &mut self,
        edges: &[Vec<(usize, String)>],
        names: &[&str],
        what: &str,
        list: &str,
        field: &str,
    ) -> bool {
        const WHITE: u8 = 0;
        const GRAY: u8 = 1;
        const BLACK: u8 = 2;
        let n = edges.len();
        let mut color = vec![WHITE; n];
        let mut depth = vec![0usize; n];
        let mut reported: HashSet<String> = HashSet::new();
        let mut cyclic = false;
        // Iterative depth-first search: a long chain must not overflow the stack.
        for root in 0..n {
            if color[root] != WHITE {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            color[root] = GRAY;
            while let Some(&(node, next)) = stack.last() {
                if let Some((child, _)) = edges[node].get(next) {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    match color[*child] {
                        WHITE => {
                            color[*child] = GRAY;
                            stack.push((*child, 0));
                        }
                        GRAY => {
                            // Report every reference on the cycle, so each
                            // flag (or segment) involved is pointed at.
                            let start = stack.iter().position(|&(s, _)| s == *child).unwrap_or(0);
                            let mut cycle: Vec<&str> =
                                stack[start..].iter().map(|&(s, _)| names[s]).collect();
                            cycle.push(names[*child]);
                            let message = format!("{what} cycle: {}", cycle.join(" -> "));
                            cyclic = true;
                            for &(s, taken) in &stack[start..] {
                                let edge_path = &edges[s][taken - 1].1;
                                if reported.insert(edge_path.clone()) {
                                    self.problem(edge_path.clone(), message.clone());
                                }
                            }
                        }
                        _ => {}
                    }
                } else {
                    stack.pop();
                    color[node] = BLACK;
                    depth[node] = edges[node]
                        .iter()
                        .map(|(c, _)| depth[*c] + 1)
                        .max()
                        .unwrap_or(0);
                    if depth[node] == MAX_CHAIN_DEPTH + 1 {
                        self.problem(
                            format!("{list}[{node}].{field}"),
                            format!(
                                "{what} chain from {:?} is {} deep, at most {MAX_CHAIN_DEPTH} allowed",
                                names[node], depth[node]
                            ),
                        );
                    }
                }
            }
        }
        cyclic
    }
}

/// Who a condition belongs to: references to segments are edges of the
/// graph that bounds evaluation.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Flag(usize),
    Segment(usize),
}

pub(crate) const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, Timestamp};

    #[test]
    fn the_store_supplies_revision_and_versions() {
        let file = FlagFile::from_json_str(
            r#"{"flags": [{"key": "a", "enabled": true}, {"key": "b", "enabled": false}]}"#,
        )
        .expect("parses");
        let options = SnapshotOptions {
            revision: Some(42),
            versions: [("a".to_owned(), 7)].into_iter().collect(),
        };
        let snapshot = Snapshot::compile_with(&file, &options).expect("valid");
        assert_eq!(snapshot.revision(), Some(42));
        let ctx = Context::new();
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(snapshot.evaluate("a", &ctx, now).flag_version, Some(7));
        assert_eq!(snapshot.evaluate("b", &ctx, now).flag_version, None);
        assert_eq!(Snapshot::compile(&file).expect("valid").revision(), None);
    }
}
