//! When the clock can change a result: the conditions over `$now`,
//! `$hour` and `$day_of_week`, and the next instant after a given one at
//! which any of them may change its outcome. Between two such instants
//! every result of a Snapshot depends only on the context, which is what
//! lets a server give clock-reading environments an ETag.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::Snapshot;
use super::ir::{Attribute, CompiledCondition, Test};

impl Snapshot {
    /// Whether any condition of any flag or segment reads the clock.
    pub fn reads_clock(&self) -> bool {
        self.clock_conditions().next().is_some()
    }

    /// The earliest instant after `now` at which a condition reading the
    /// clock may change its outcome: a `$now` bound (`before T` changes at
    /// T, `after T` just after T), the next local hour for `$hour`, the next
    /// local midnight for `$day_of_week`, each in the condition's time zone.
    /// `None` when no condition can change any more (none reads the clock,
    /// or every `$now` bound is past): results then depend on the context
    /// alone. Pure: the time comes in as an argument.
    pub fn next_clock_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.clock_conditions()
            .filter_map(|c| next_change(c, now))
            .min()
    }

    fn clock_conditions(&self) -> impl Iterator<Item = &CompiledCondition> {
        let flags = self
            .flags
            .iter()
            .flat_map(|f| f.rules.iter().flat_map(|r| r.conditions.iter()));
        let segments = self
            .segments
            .iter()
            .flat_map(|s| s.rules.iter().flat_map(|r| r.conditions.iter()));
        flags.chain(segments).filter(|c| {
            matches!(
                c.attribute,
                Attribute::Now | Attribute::Hour(_) | Attribute::DayOfWeek(_)
            )
        })
    }
}

fn next_change(condition: &CompiledCondition, now: Timestamp) -> Option<Timestamp> {
    match (&condition.attribute, &condition.test) {
        // `now < t` holds until t; `now > t` from just after t. Equality is
        // the one instant in between.
        (Attribute::Now, Test::Before(t) | Test::After(t)) => {
            let after = t.checked_add(SignedDuration::from_nanos(1)).ok();
            [Some(*t), after].into_iter().flatten().find(|b| *b > now)
        }
        // Any other test of `$now` is of the wrong type: its outcome never
        // changes.
        (Attribute::Now, _) => None,
        (Attribute::Hour(tz), _) => next_local_hour(tz, now),
        (Attribute::DayOfWeek(tz), _) => next_local_midnight(tz, now),
        _ => None,
    }
}

fn next_local_hour(tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    // The local time's minutes, seconds and nanoseconds since the hour
    // began, under the offset in force now (offsets change only at the
    // start of a local hour, so it holds since then).
    let local = tz.to_datetime(now);
    let into_hour =
        SignedDuration::from_secs(i64::from(local.minute()) * 60 + i64::from(local.second()))
            + SignedDuration::from_nanos(i64::from(local.subsec_nanosecond()));
    let start = now.checked_sub(into_hour).ok()?;
    start.checked_add(SignedDuration::from_hours(1)).ok()
}

fn next_local_midnight(tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let tomorrow = tz.to_datetime(now).date().tomorrow().ok()?;
    // A midnight skipped by a DST change starts the day at the first
    // instant after the gap.
    tz.to_ambiguous_timestamp(tomorrow.to_datetime(jiff::civil::Time::midnight()))
        .compatible()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlagFile;

    fn snapshot(json: &str) -> Snapshot {
        let file: FlagFile = serde_json::from_str(json).expect("test file");
        Snapshot::compile(&file).expect("compiles")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn rule(condition: &str) -> String {
        format!(
            r#"{{"flags": [{{"key": "f", "enabled": true, "rules": [{{"conditions": [{condition}], "serve": {{"enabled": true}}}}]}}]}}"#
        )
    }

    #[test]
    fn a_file_without_clock_conditions_never_changes_with_time() {
        let s = snapshot(&rule(
            r#"{"attribute": "country", "operator": "eq", "values": ["CA"]}"#,
        ));
        assert!(!s.reads_clock());
        assert_eq!(s.next_clock_change(ts("2026-12-02T10:00:00Z")), None);
    }

    #[test]
    fn now_bounds_change_at_the_bound_and_just_after_it() {
        let s = snapshot(&rule(
            r#"{"attribute": "$now", "operator": "after", "values": ["2026-12-24T18:00:00Z"]}"#,
        ));
        assert!(s.reads_clock());
        let bound = ts("2026-12-24T18:00:00Z");
        assert_eq!(s.next_clock_change(ts("2026-12-02T10:00:00Z")), Some(bound));
        let just_after = bound.checked_add(SignedDuration::from_nanos(1)).expect("t");
        assert_eq!(s.next_clock_change(bound), Some(just_after));
        assert_eq!(s.next_clock_change(just_after), None);
    }

    #[test]
    fn hours_and_days_change_at_local_boundaries() {
        let hour = snapshot(&rule(
            r#"{"attribute": "$hour", "operator": "gte", "values": [9], "timezone": "Asia/Kolkata"}"#,
        ));
        // Kolkata is UTC+5:30: its hours start at :30 UTC.
        assert_eq!(
            hour.next_clock_change(ts("2026-12-02T10:05:00Z")),
            Some(ts("2026-12-02T10:30:00Z"))
        );
        let day = snapshot(&rule(
            r#"{"attribute": "$day_of_week", "operator": "in", "values": ["monday"], "timezone": "America/Toronto"}"#,
        ));
        // Toronto is UTC-5 in December: its midnight is 05:00 UTC.
        assert_eq!(
            day.next_clock_change(ts("2026-12-02T10:05:00Z")),
            Some(ts("2026-12-03T05:00:00Z"))
        );
        // Across the spring DST change (2026-03-08 02:00 → 03:00 local).
        assert_eq!(
            day.next_clock_change(ts("2026-03-08T12:00:00Z")),
            Some(ts("2026-03-09T04:00:00Z"))
        );
    }

    #[test]
    fn segment_rules_count_and_the_earliest_change_wins() {
        let s = snapshot(
            r#"{"segments": [{"key": "night", "rules": [{"conditions": [{"attribute": "$hour", "operator": "lt", "values": [6]}]}]}],
                "flags": [{"key": "f", "enabled": true, "rules": [
                  {"conditions": [{"operator": "in_segment", "values": ["night"]}], "serve": {"enabled": true}},
                  {"conditions": [{"attribute": "$now", "operator": "before", "values": ["2026-12-02T10:20:00Z"]}], "serve": {"enabled": false}}]}]}"#,
        );
        assert_eq!(
            s.next_clock_change(ts("2026-12-02T10:05:00Z")),
            Some(ts("2026-12-02T10:20:00Z"))
        );
        assert_eq!(
            s.next_clock_change(ts("2026-12-02T10:25:00Z")),
            Some(ts("2026-12-02T11:00:00Z"))
        );
    }
}
