//! The condition compiler: a model [`Condition`] checked against the rules
//! of flag-format.md and turned into a [`CompiledCondition`], reporting every
//! problem at its JSON path.

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::graph::Owner;
use super::ir::{Attribute, CompiledCondition, DAY_NAMES, Literal, Num, Ordering, StringSet, Test};
use super::{Compiler, MAX_REGEX_LEN};
use crate::context::{AttrKey, json_type_name};
use crate::model::{Condition, Operator};

/// Compiled size limit of one `matches` pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Compiler<'_> {
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

    /// Compiles one condition at `at`, or reports its problems and gives
    /// `None`. Problems come in this order: the attribute, `case_insensitive`,
    /// the number of values (which stops here), each value, and the values
    /// of `$day_of_week` and `$hour`.
    fn condition(&mut self, at: &str, c: &Condition, owner: Owner) -> Option<CompiledCondition> {
        use Operator as Op;
        let before = self.problems.len();
        let op = c.operator;
        let attribute = self.condition_attribute(at, c);
        if c.case_insensitive && !op.is_string_operator() {
            self.problem(
                format!("{at}.case_insensitive"),
                format!(
                    "case_insensitive does not apply to operator {}",
                    op.as_str()
                ),
            );
        }
        if !self.value_count(at, c) {
            return None;
        }
        let test = self.test(&format!("{at}.values"), c, owner);
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
            case_insensitive: c.case_insensitive,
        })
    }

    /// What the condition reads: a context attribute, a special one, or
    /// nothing for the segment operators (each segment names its own).
    fn condition_attribute(&mut self, at: &str, c: &Condition) -> Attribute {
        let op = c.operator;
        if op.is_segment_operator() {
            if c.attribute.is_some() {
                self.problem(
                    format!("{at}.attribute"),
                    format!(
                        "operator {} takes no attribute: each segment names its own",
                        op.as_str()
                    ),
                );
            }
            self.no_timezone(at, c);
            return Attribute::Unused;
        }
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
                self.no_timezone(at, c);
                Attribute::Context(AttrKey::new(name))
            }
        }
    }

    /// A time zone belongs to the special attributes only.
    fn no_timezone(&mut self, at: &str, c: &Condition) {
        if c.timezone.is_some() {
            self.problem(
                format!("{at}.timezone"),
                "timezone applies only to $now, $day_of_week and $hour",
            );
        }
    }

    /// Whether the condition has as many values as its operator takes;
    /// reports the problem when it has not.
    fn value_count(&mut self, at: &str, c: &Condition) -> bool {
        use Operator as Op;
        let op = c.operator;
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
        if (min..=max).contains(&count) {
            return true;
        }
        let wanted = match (min, max) {
            (0, 0) => "no values".to_owned(),
            (1, 1) => "exactly one value".to_owned(),
            _ => "at least one value".to_owned(),
        };
        self.problem(
            format!("{at}.values"),
            format!("operator {} takes {wanted}, got {count}", op.as_str()),
        );
        false
    }

    /// The operator's test, with its values (at `values_path`) parsed; `None`
    /// when a value is unusable (and a problem reported).
    fn test(&mut self, values_path: &str, c: &Condition, owner: Owner) -> Option<Test> {
        use Operator as Op;
        match c.operator {
            Op::Eq | Op::Neq => self.equals(values_path, c),
            Op::In | Op::NotIn => Some(self.one_of(values_path, c)),
            Op::Contains | Op::NotContains => Some(Test::Contains(self.strings(values_path, c))),
            Op::StartsWith => Some(Test::StartsWith(self.strings(values_path, c))),
            Op::EndsWith => Some(Test::EndsWith(self.strings(values_path, c))),
            Op::Matches => Some(Test::Matches(self.regexes(values_path, c))),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => self.compare(values_path, c),
            Op::SemverEq | Op::SemverGt | Op::SemverGte | Op::SemverLt | Op::SemverLte => {
                self.semver(values_path, c)
            }
            Op::Before | Op::After => self.time(values_path, c),
            Op::Exists | Op::NotExists => Some(Test::Exists),
            Op::InSegment | Op::NotInSegment => {
                Some(Test::InSegment(self.segments_named(values_path, c, owner)))
            }
            Op::InCidr => Some(Test::InCidr(self.cidr_blocks(values_path, c))),
        }
    }

    /// `eq` and `neq`: one string, number or boolean.
    fn equals(&mut self, values_path: &str, c: &Condition) -> Option<Test> {
        match c.values.first() {
            Some(Value::String(s)) => Some(Test::Equals(Literal::Str(fold(s, c)))),
            Some(Value::Number(n)) => Num::of(n).map(|x| Test::Equals(Literal::Num(x))),
            Some(Value::Bool(b)) => Some(Test::Equals(Literal::Bool(*b))),
            Some(other) => {
                self.wrong_type(
                    format!("{values_path}[0]"),
                    c,
                    "compares a string, a number or a boolean",
                    other,
                );
                None
            }
            None => None,
        }
    }

    /// `in` and `not_in`: strings and numbers.
    fn one_of(&mut self, values_path: &str, c: &Condition) -> Test {
        let mut strings = Vec::new();
        let mut numbers = Vec::new();
        for (m, v) in c.values.iter().enumerate() {
            match v {
                Value::String(s) => strings.push(fold(s, c)),
                Value::Number(n) => numbers.extend(Num::of(n)),
                other => self.wrong_type(
                    format!("{values_path}[{m}]"),
                    c,
                    "takes strings or numbers",
                    other,
                ),
            }
        }
        Test::OneOf {
            strings: StringSet::new(strings),
            numbers,
        }
    }

    /// The substring operators: strings.
    fn strings(&mut self, values_path: &str, c: &Condition) -> Vec<Box<str>> {
        let mut out = Vec::with_capacity(c.values.len());
        self.each_string(values_path, c, "compares strings", |_, _, s| {
            out.push(fold(s, c));
        });
        out
    }

    /// `matches`: regexes, bounded in length and compiled size.
    fn regexes(&mut self, values_path: &str, c: &Condition) -> Vec<Regex> {
        let mut regexes = Vec::with_capacity(c.values.len());
        self.each_string(values_path, c, "takes regexes", |this, m, s| {
            if s.len() > MAX_REGEX_LEN {
                this.problem(
                    format!("{values_path}[{m}]"),
                    format!(
                        "regex is {} bytes long, at most {MAX_REGEX_LEN} allowed",
                        s.len()
                    ),
                );
                return;
            }
            match RegexBuilder::new(s)
                .case_insensitive(c.case_insensitive)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(r) => regexes.push(r),
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.lines().last().unwrap_or("").trim();
                    let msg = msg.strip_prefix("error: ").unwrap_or(msg).to_owned();
                    this.problem(
                        format!("{values_path}[{m}]"),
                        format!("invalid regex {s:?}: {msg}"),
                    );
                }
            }
        });
        regexes
    }

    /// `gt`, `gte`, `lt` and `lte`: one number.
    fn compare(&mut self, values_path: &str, c: &Condition) -> Option<Test> {
        let ord = match c.operator {
            Operator::Gt => Ordering::Gt,
            Operator::Gte => Ordering::Gte,
            Operator::Lt => Ordering::Lt,
            _ => Ordering::Lte,
        };
        match c.values.first() {
            Some(Value::Number(n)) => Num::of(n).map(|x| Test::Compare(ord, x)),
            Some(other) => {
                self.wrong_type(format!("{values_path}[0]"), c, "compares numbers", other);
                None
            }
            None => None,
        }
    }

    /// The `semver_*` operators: one SemVer version.
    fn semver(&mut self, values_path: &str, c: &Condition) -> Option<Test> {
        let ord = match c.operator {
            Operator::SemverEq => Ordering::Eq,
            Operator::SemverGt => Ordering::Gt,
            Operator::SemverGte => Ordering::Gte,
            Operator::SemverLt => Ordering::Lt,
            _ => Ordering::Lte,
        };
        let s = self.one_string(values_path, c, "a SemVer version string")?;
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
    }

    /// `before` and `after`: one RFC 3339 timestamp.
    fn time(&mut self, values_path: &str, c: &Condition) -> Option<Test> {
        let s = self.one_string(values_path, c, "an RFC 3339 timestamp")?;
        match s.parse::<Timestamp>() {
            Ok(t) if c.operator == Operator::Before => Some(Test::Before(t)),
            Ok(t) => Some(Test::After(t)),
            Err(e) => {
                self.problem(
                    format!("{values_path}[0]"),
                    format!("invalid RFC 3339 timestamp {s:?}: {e}"),
                );
                None
            }
        }
    }

    /// The one value of an operator that takes a string (`what`).
    fn one_string<'c>(
        &mut self,
        values_path: &str,
        c: &'c Condition,
        what: &str,
    ) -> Option<&'c str> {
        match c.values.first() {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                self.wrong_type(
                    format!("{values_path}[0]"),
                    c,
                    &format!("takes {what}"),
                    other,
                );
                None
            }
            None => None,
        }
    }

    /// `in_segment` and `not_in_segment`: segment keys, resolved to indices
    /// (see [`Compiler::segment_reference`]).
    fn segments_named(&mut self, values_path: &str, c: &Condition, owner: Owner) -> Vec<usize> {
        let mut found = Vec::with_capacity(c.values.len());
        self.each_string(values_path, c, "takes segment keys", |this, m, s| {
            this.segment_reference(format!("{values_path}[{m}]"), s, owner, &mut found);
        });
        found
    }

    /// `in_cidr`: CIDR blocks, or single addresses.
    fn cidr_blocks(&mut self, values_path: &str, c: &Condition) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(c.values.len());
        self.each_string(values_path, c, "takes CIDR blocks", |this, m, s| {
            if let Ok(net) = s.parse::<IpNet>() {
                nets.push(net.trunc());
            } else if let Ok(addr) = s.parse::<std::net::IpAddr>() {
                nets.push(IpNet::from(addr));
            } else {
                this.problem(
                    format!("{values_path}[{m}]"),
                    format!("invalid CIDR block {s:?}, expected e.g. 10.0.0.0/8 or 2001:db8::/32"),
                );
            }
        });
        nets
    }

    /// Calls `each` with the index and text of every value that is a string,
    /// in order, and reports every other value as one the operator does not
    /// take (see [`Compiler::wrong_type`]). A value's path is formatted only
    /// where it is needed: most values of a valid file need none.
    fn each_string<'c>(
        &mut self,
        values_path: &str,
        c: &'c Condition,
        wants: &str,
        mut each: impl FnMut(&mut Self, usize, &'c str),
    ) {
        for (m, v) in c.values.iter().enumerate() {
            match v {
                Value::String(s) => each(self, m, s),
                other => self.wrong_type(format!("{values_path}[{m}]"), c, wants, other),
            }
        }
    }

    /// Reports a value at `path` of a JSON type the operator does not take;
    /// `wants` says what it does ("compares numbers").
    fn wrong_type(&mut self, path: String, c: &Condition, wants: &str, got: &Value) {
        self.problem(
            path,
            format!(
                "operator {} {wants}, got {}",
                c.operator.as_str(),
                json_type_name(got)
            ),
        );
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

/// A string literal as compared: lowercased under `case_insensitive`.
fn fold(s: &str, c: &Condition) -> Box<str> {
    if c.case_insensitive {
        s.to_lowercase().into()
    } else {
        s.into()
    }
}
