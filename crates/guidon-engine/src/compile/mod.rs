//! Compilation of a flag file into an immutable [`Snapshot`]. Validation is
//! compilation that keeps going after a problem: one pass both checks every
//! rule of the format and builds the evaluated form, so the two can never
//! disagree about what is valid.
//!
//! This module holds the [`Snapshot`] and the compiler's driver (keys, flags,
//! variants, serves, targets, rules, segments); the compiled form is in
//! [`ir`], conditions are compiled in `condition.rs`, and references and the
//! bounds on the graph they form are checked in `graph.rs`.

use foldhash::{HashMap, HashMapExt};
use serde_json::Value;

use crate::context::{UnitAttr, json_type_name};
use crate::error::{Problem, ValidationError};
use crate::hashing::FlagHasher;
use crate::model::{DEFAULT_BUCKET_BY, Flag, FlagFile, Match, Segment, Serve};
use crate::result::Reason;

mod clock;
mod condition;
mod graph;
pub(crate) mod ir;

use graph::Owner;
use ir::{
    CompiledFlag, CompiledRule, CompiledSegment, CompiledSegmentRule, CompiledServe,
    CompiledTarget, CompiledVariant, StringSet,
};

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

/// One compilation in progress: the problems found so far, the keys of the
/// file's flags and segments, and the references among them, which
/// `graph.rs` checks once every flag and segment is compiled. Its methods
/// are spread over this module, `condition.rs` and `graph.rs`.
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

    fn flag(&mut self, i: usize, flag: &Flag, version: Option<u64>) -> CompiledFlag {
        let at = format!("flags[{i}]");
        let variants = self.variants(&at, flag);
        let off_variant = flag
            .off_variant
            .as_ref()
            .and_then(|k| self.variant_ref(flag, format!("{at}.off_variant"), k));
        let override_serve = flag
            .override_serve
            .as_ref()
            .map(|s| self.serve(flag, format!("{at}.override"), s));
        let prerequisites = self.prerequisites(&at, i, flag);
        let targets = self.targets(&at, flag);
        let rules = self.rules(&at, i, flag);

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

    /// The index of `flag`'s variant `key`, named at `path`.
    fn variant_ref(&mut self, flag: &Flag, path: String, key: &str) -> Option<usize> {
        let found = flag.variants.iter().position(|v| v.key == key);
        if found.is_none() {
            let msg = if flag.variants.is_empty() {
                format!("variant {key:?} named, but the flag has no variants")
            } else {
                format!("unknown variant {key:?}")
            };
            self.problem(path, msg);
        }
        found
    }

    fn serve(&mut self, flag: &Flag, path: String, s: &Serve) -> CompiledServe {
        if let Some(p) = s.percentage {
            if s.enabled {
                self.percentage(format!("{path}.percentage"), p);
            } else {
                self.problem(
                    format!("{path}.percentage"),
                    "a percentage in a serve that is not enabled would be ignored",
                );
            }
        }
        let variant = match &s.variant {
            Some(k) if !s.enabled => {
                self.problem(
                    format!("{path}.variant"),
                    format!("variant {k:?} named in a serve that is not enabled"),
                );
                None
            }
            Some(k) => self.variant_ref(flag, format!("{path}.variant"), k),
            None => None,
        };
        CompiledServe {
            enabled: s.enabled,
            variant,
            percentage: s.percentage,
        }
    }

    fn targets(&mut self, at: &str, flag: &Flag) -> Vec<CompiledTarget> {
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
            let served = self.serve(flag, format!("{path}.serve"), &t.serve);
            targets.push(CompiledTarget {
                attribute: t.attribute.as_deref().map(UnitAttr::new),
                values,
                serve: served,
            });
        }
        targets
    }

    /// The rules of flag `i`, named by position when unnamed.
    fn rules(&mut self, at: &str, i: usize, flag: &Flag) -> Vec<CompiledRule> {
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
            let served = self.serve(flag, format!("{path}.serve"), &r.serve);
            rules.push(CompiledRule {
                name: name.into(),
                any: r.match_kind == Match::Any,
                conditions,
                serve: served,
            });
        }
        rules
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
}

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
