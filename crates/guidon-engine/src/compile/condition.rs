//! The condition compiler: a model [`Condition`] checked against the rules
//! of flag-format.md and turned into a [`CompiledCondition`], reporting every
//! problem at its JSON path.

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::RegexBuilder;
use serde_json::Value;

use super::graph::Owner;
use super::ir::{Attribute, CompiledCondition, DAY_NAMES, Literal, Num, Ordering, StringSet, Test};
use super::{Compiler, MAX_REGEX_LEN};
use crate::context::{AttrKey, json_type_name};
use crate::model::{Condition, Operator};

/// Compiled size limit of one `matches` pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl<'f> Compiler<'f> {
    pub(super) fn conditions(
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
}
