//! Experiment events in the store, on every backend: idempotent ingestion,
//! attribution decided from aggregates whatever order events arrive in,
//! multiple exposures, conversion windows.

use guidon_events::{
    Conversion, Event, EventStore, EventsError, ExperimentTotals, Exposure, MetricQuery, RatioPart,
    UnitKey, VariantTotals,
};
use guidon_store::Store;

const HOUR: i64 = 3_600_000;
/// 2026-11-24T00:00:00Z.
const T0: i64 = 1_795_478_400_000;

/// An event store per backend, at the events URL next to the test
/// database's (a file of its own on SQLite, the same schema on PostgreSQL).
async fn stores(label: &str) -> Vec<(guidon_testkit::TestDb, EventStore)> {
    let mut out = Vec::new();
    for db in guidon_testkit::databases(label).await {
        let store = EventStore::open(&guidon_events::events_url(&db.url))
            .await
            .unwrap_or_else(|e| panic!("{}: open: {e}", db.name));
        out.push((db, store));
    }
    out
}

fn exposure(id: &str, unit: &str, variant: &str, at_ms: i64) -> Event {
    Event::Exposure(Exposure {
        event_id: id.into(),
        flag: "checkout".into(),
        variant: variant.into(),
        unit: unit.into(),
        at_ms,
    })
}

fn conversion(id: &str, unit: &str, value: Option<f64>, at_ms: i64) -> Event {
    Event::Conversion(Conversion {
        event_id: id.into(),
        metric: "purchase".into(),
        units: vec![UnitKey {
            attribute: "user_id".into(),
            unit: unit.into(),
        }],
        value,
        at_ms,
    })
}

fn query(window_ms: Option<i64>) -> MetricQuery<'static> {
    MetricQuery {
        flag: "checkout",
        variants: &["control", "treatment"],
        metric: "purchase",
        unit_attribute: "user_id",
        window_ms,
        from_ms: None,
        until_ms: None,
        cap: None,
        pre_window_ms: None,
    }
}

async fn totals(store: &EventStore, window_ms: Option<i64>) -> ExperimentTotals {
    store
        .experiment_totals("production", &query(window_ms))
        .await
        .expect("totals")
}

fn variant<'a>(totals: &'a ExperimentTotals, key: &str) -> &'a VariantTotals {
    totals
        .variants
        .iter()
        .find(|v| v.variant == key)
        .unwrap_or_else(|| panic!("no variant {key} in {totals:?}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn a_retried_batch_counts_once() {
    for (db, store) in stores("exp_idem").await {
        let n = db.name;
        let batch = vec![
            exposure("e1", "u1", "control", T0),
            exposure("e2", "u2", "treatment", T0),
            conversion("c1", "u1", Some(10.0), T0 + HOUR),
            conversion("c2", "u1", Some(5.0), T0 + 2 * HOUR),
            // The same id twice in one batch: the second is a duplicate.
            conversion("c2", "u1", Some(5.0), T0 + 2 * HOUR),
        ];
        let first = store
            .ingest_events("production", batch.clone())
            .await
            .expect("ingest");
        assert_eq!(
            (first.accepted, first.duplicates.clone()),
            (4, vec![4]),
            "{n}"
        );
        let before = totals(&store, None).await;

        // The client did not hear the answer and sends the batch again.
        let again = store
            .ingest_events("production", batch.clone())
            .await
            .expect("retry");
        assert_eq!(
            (again.accepted, again.duplicates.clone()),
            (0, vec![0, 1, 2, 3, 4]),
            "{n}"
        );
        let after = totals(&store, None).await;
        assert_eq!(before, after, "{n}");
        let control = variant(&after, "control");
        assert_eq!((control.units, control.converted), (1, 1), "{n}");
        assert!(close(control.sum, 15.0), "{n}: {control:?}");
        assert!(close(control.sum_squares, 225.0), "{n}: {control:?}");
        let treatment = variant(&after, "treatment");
        assert_eq!((treatment.units, treatment.converted), (1, 0), "{n}");

        // A batch mixing new and old ids stores only the new ones.
        let mixed = vec![
            conversion("c1", "u1", Some(10.0), T0 + HOUR),
            conversion("c3", "u2", None, T0 + HOUR),
        ];
        let third = store
            .ingest_events("production", mixed)
            .await
            .expect("mixed");
        assert_eq!((third.accepted, third.duplicates), (1, vec![0]), "{n}");
        let treatment = totals(&store, None).await;
        let treatment = variant(&treatment, "treatment");
        // No value counts as 1.
        assert_eq!(treatment.converted, 1, "{n}");
        assert!(close(treatment.sum, 1.0), "{n}");

        // Ids are per environment: the same id elsewhere is a new event.
        let other = store
            .ingest_events("development", batch[..1].to_vec())
            .await
            .expect("other env");
        assert_eq!(other.accepted, 1, "{n}");
    }
}

#[tokio::test]
async fn attribution_does_not_depend_on_arrival_order() {
    for (db, store) in stores("exp_order").await {
        let n = db.name;
        // u1: converts 1 h after exposure, the conversion arrives first.
        // u2: converts before its exposure (not counted) and after (counted).
        // u3: converts only before its exposure: not counted.
        // u4: a later exposure arrives first, then the earlier one, then a
        //     conversion between the two: counted (after the first exposure).
        let events = [
            conversion("c1", "u1", Some(3.0), T0 + HOUR),
            exposure("e1", "u1", "control", T0),
            conversion("c2a", "u2", Some(100.0), T0 - HOUR),
            exposure("e2", "u2", "treatment", T0),
            conversion("c2b", "u2", Some(7.0), T0 + 3 * HOUR),
            conversion("c3", "u3", Some(50.0), T0 - 1),
            exposure("e3", "u3", "treatment", T0),
            exposure("e4b", "u4", "control", T0 + 10 * HOUR),
            exposure("e4a", "u4", "control", T0),
            conversion("c4", "u4", Some(2.0), T0 + 5 * HOUR),
        ];
        // Every event in its own batch, in two different orders: forwards,
        // and backwards into a second environment. Same results.
        for e in &events {
            store
                .ingest_events("production", vec![e.clone()])
                .await
                .expect("ingest");
        }
        for e in events.iter().rev() {
            store
                .ingest_events("development", vec![e.clone()])
                .await
                .expect("ingest");
        }
        let forwards = totals(&store, None).await;
        let backwards = store
            .experiment_totals("development", &query(None))
            .await
            .expect("totals");
        assert_eq!(forwards, backwards, "{n}");
        let control = variant(&forwards, "control");
        assert_eq!((control.units, control.converted), (2, 2), "{n}");
        assert!(close(control.sum, 5.0), "{n}: {control:?}");
        assert!(close(control.sum_squares, 9.0 + 4.0), "{n}: {control:?}");
        let treatment = variant(&forwards, "treatment");
        assert_eq!((treatment.units, treatment.converted), (2, 1), "{n}");
        assert!(close(treatment.sum, 7.0), "{n}: {treatment:?}");

        // All in one batch: the same again.
        store
            .ingest_events("staging", events.to_vec())
            .await
            .expect("ingest");
        let one_batch = store
            .experiment_totals("staging", &query(None))
            .await
            .expect("totals");
        assert_eq!(forwards, one_batch, "{n}");
    }
}

#[tokio::test]
async fn conversions_before_the_exposure_are_not_counted() {
    for (db, store) in stores("exp_before").await {
        let n = db.name;
        store
            .ingest_events(
                "production",
                vec![
                    conversion("c1", "u1", Some(1.0), T0 - 1),
                    conversion("c2", "u1", Some(1.0), T0 - HOUR),
                    exposure("e1", "u1", "control", T0),
                    // Exactly at the exposure: counted.
                    conversion("c3", "u2", Some(4.0), T0),
                    exposure("e2", "u2", "control", T0),
                ],
            )
            .await
            .expect("ingest");
        let t = totals(&store, None).await;
        let control = variant(&t, "control");
        assert_eq!((control.units, control.converted), (2, 1), "{n}");
        assert!(close(control.sum, 4.0), "{n}");

        // An exposure arriving later with an earlier time moves the start:
        // u1's conversions are now after its first exposure.
        store
            .ingest_events(
                "production",
                vec![exposure("e0", "u1", "control", T0 - 2 * HOUR)],
            )
            .await
            .expect("ingest");
        let t = totals(&store, None).await;
        let control = variant(&t, "control");
        assert_eq!((control.units, control.converted), (2, 2), "{n}");
        assert!(close(control.sum, 6.0), "{n}");
        assert!(close(control.sum_squares, 4.0 + 16.0), "{n}");
    }
}

#[tokio::test]
async fn units_exposed_to_several_variants_are_excluded_and_counted() {
    for (db, store) in stores("exp_multi").await {
        let n = db.name;
        store
            .ingest_events(
                "production",
                vec![
                    exposure("e1", "u1", "control", T0),
                    exposure("e2", "u2", "treatment", T0),
                    exposure("e3", "u3", "control", T0),
                    conversion("c3", "u3", Some(1.0), T0 + 1),
                    // Seen again in the same variant: still one unit.
                    exposure("e1b", "u1", "control", T0 + HOUR),
                ],
            )
            .await
            .expect("ingest");
        // Later, in another batch: u3 in treatment too.
        store
            .ingest_events(
                "production",
                vec![exposure("e4", "u3", "treatment", T0 + 5)],
            )
            .await
            .expect("ingest");
        // Within one batch: u4 in both.
        store
            .ingest_events(
                "production",
                vec![
                    exposure("e5", "u4", "treatment", T0),
                    exposure("e6", "u4", "control", T0 + 1),
                ],
            )
            .await
            .expect("ingest");
        let t = totals(&store, None).await;
        assert_eq!(t.multiple_exposure_units, 2, "{n}: {t:?}");
        assert_eq!(t.exposed_units(), 4, "{n}");
        let control = variant(&t, "control");
        assert_eq!((control.units, control.converted), (1, 0), "{n}");
        let treatment = variant(&t, "treatment");
        assert_eq!((treatment.units, treatment.converted), (1, 0), "{n}");
    }
}

#[tokio::test]
async fn the_conversion_window_bounds_attribution() {
    for (db, store) in stores("exp_window").await {
        let n = db.name;
        store
            .ingest_events(
                "production",
                vec![
                    exposure("e1", "u1", "control", T0),
                    // Inside a 24 h window, at its last millisecond, after it.
                    conversion("c1", "u1", Some(1.0), T0 + HOUR),
                    conversion("c2", "u1", Some(10.0), T0 + 24 * HOUR),
                    conversion("c3", "u1", Some(100.0), T0 + 24 * HOUR + 1),
                    // u2: only after the window.
                    exposure("e2", "u2", "control", T0),
                    conversion("c4", "u2", Some(1000.0), T0 + 48 * HOUR),
                    // u3: only inside it.
                    exposure("e3", "u3", "treatment", T0),
                    conversion("c5", "u3", Some(2.0), T0 + 2 * HOUR),
                    // u4: before the exposure and inside the window.
                    exposure("e4", "u4", "treatment", T0 + HOUR),
                    conversion("c6", "u4", Some(20.0), T0),
                    conversion("c7", "u4", Some(3.0), T0 + 2 * HOUR),
                ],
            )
            .await
            .expect("ingest");
        let day = totals(&store, Some(24 * HOUR)).await;
        let control = variant(&day, "control");
        assert_eq!((control.units, control.converted), (2, 1), "{n}: {day:?}");
        assert!(close(control.sum, 11.0), "{n}: {control:?}");
        assert!(close(control.sum_squares, 121.0), "{n}: {control:?}");
        let treatment = variant(&day, "treatment");
        assert_eq!((treatment.units, treatment.converted), (2, 2), "{n}");
        assert!(close(treatment.sum, 5.0), "{n}: {treatment:?}");
        assert!(close(treatment.sum_squares, 4.0 + 9.0), "{n}");

        // Without a window everything after the exposure counts.
        let all = totals(&store, None).await;
        let control = variant(&all, "control");
        assert_eq!(control.converted, 2, "{n}");
        assert!(close(control.sum, 1111.0), "{n}: {control:?}");
        assert!(close(control.sum_squares, 111.0 * 111.0 + 1e6), "{n}");

        // A window of zero: only conversions at the very exposure time.
        let zero = totals(&store, Some(0)).await;
        assert_eq!(variant(&zero, "control").converted, 0, "{n}");
        assert!(
            store
                .experiment_totals("production", &query(Some(-1)))
                .await
                .is_err_and(|e| matches!(e, EventsError::InvalidQuery(_))),
            "{n}"
        );
    }
}

#[tokio::test]
async fn units_are_matched_by_the_flags_attribute() {
    for (db, store) in stores("exp_attr").await {
        let n = db.name;
        let conversion_of_both = Event::Conversion(Conversion {
            event_id: "c1".into(),
            metric: "purchase".into(),
            units: vec![
                UnitKey {
                    attribute: "user_id".into(),
                    unit: "u1".into(),
                },
                UnitKey {
                    attribute: "account_id".into(),
                    unit: "acme".into(),
                },
            ],
            value: Some(9.0),
            at_ms: T0 + 1,
        });
        store
            .ingest_events(
                "production",
                vec![
                    exposure("e1", "acme", "control", T0),
                    exposure("e2", "u1", "treatment", T0),
                    conversion_of_both,
                ],
            )
            .await
            .expect("ingest");
        // Read by user_id, "acme" never converted; by account_id, it did.
        let by_user = totals(&store, None).await;
        assert_eq!(variant(&by_user, "control").converted, 0, "{n}");
        assert_eq!(variant(&by_user, "treatment").converted, 1, "{n}");
        let by_account = store
            .experiment_totals(
                "production",
                &MetricQuery {
                    unit_attribute: "account_id",
                    ..query(None)
                },
            )
            .await
            .expect("totals");
        assert_eq!(variant(&by_account, "control").converted, 1, "{n}");
        assert_eq!(variant(&by_account, "treatment").converted, 0, "{n}");
    }
}

#[tokio::test]
async fn empty_unknown_and_invalid() {
    for (db, store) in stores("exp_edges").await {
        let n = db.name;
        // Nothing yet: zero totals, not an error.
        let t = totals(&store, None).await;
        assert_eq!(t.exposed_units(), 0, "{n}");
        assert_eq!(t.variants.len(), 2, "{n}");
        // An empty batch is fine.
        let none = store
            .ingest_events("production", vec![])
            .await
            .expect("empty");
        assert_eq!((none.accepted, none.duplicates.len()), (0, 0), "{n}");
        // Exposures but no conversion of the metric yet: units, no conversions.
        store
            .ingest_events("production", vec![exposure("e1", "u1", "control", T0)])
            .await
            .expect("ingest");
        let t = totals(&store, None).await;
        assert_eq!(variant(&t, "control").units, 1, "{n}");
        assert_eq!(variant(&t, "control").converted, 0, "{n}");

        // Environments are the flag store's (the server checks them): one
        // without events has zero totals.
        let t = store
            .experiment_totals("nowhere", &query(None))
            .await
            .expect("totals");
        assert_eq!(t.exposed_units(), 0, "{n}");
        // An invalid event fails the batch, and nothing of it is stored.
        let bad = store
            .ingest_events(
                "production",
                vec![
                    exposure("e9", "u9", "control", T0),
                    exposure("", "u1", "control", T0),
                ],
            )
            .await;
        assert!(
            matches!(bad, Err(EventsError::InvalidEvent { index: 1, .. })),
            "{n}: {bad:?}"
        );
        assert_eq!(
            variant(&totals(&store, None).await, "control").units,
            1,
            "{n}"
        );
        let nan = store
            .ingest_events(
                "production",
                vec![conversion("c1", "u1", Some(f64::NAN), T0)],
            )
            .await;
        assert!(matches!(nan, Err(EventsError::InvalidEvent { .. })), "{n}");
        let negative_time = store
            .ingest_events("production", vec![conversion("c1", "u1", None, -5)])
            .await;
        assert!(
            matches!(negative_time, Err(EventsError::InvalidEvent { .. })),
            "{n}"
        );
    }
}

#[tokio::test]
async fn deleting_the_environment_deletes_its_experiment_data() {
    for (db, store) in stores("exp_delete").await {
        let n = db.name;
        // What the server does: the environment in the flag store, its
        // events in theirs.
        let flags = Store::open(&db.url).await.expect("flag store");
        flags.create_env("temp").await.expect("env");
        store
            .ingest_events(
                "temp",
                vec![
                    exposure("e1", "u1", "control", T0),
                    conversion("c1", "u1", None, T0 + 1),
                ],
            )
            .await
            .expect("ingest");
        store
            .ingest_events("production", vec![exposure("p1", "u1", "control", T0)])
            .await
            .expect("another environment");
        flags.delete_env("temp", false).await.expect("delete");
        store.delete_env("temp").await.expect("delete events");
        flags.create_env("temp").await.expect("again");
        let t = store
            .experiment_totals("temp", &query(None))
            .await
            .expect("totals");
        assert_eq!(t.exposed_units(), 0, "{n}: {t:?}");
        // The old ids are forgotten too.
        let again = store
            .ingest_events("temp", vec![exposure("e1", "u1", "control", T0)])
            .await
            .expect("ingest");
        assert_eq!(again.accepted, 1, "{n}");
        // Other environments keep theirs.
        let production = store
            .experiment_totals("production", &query(None))
            .await
            .expect("totals");
        assert_eq!(production.exposed_units(), 1, "{n}");
        flags.close().await;
    }
}

#[tokio::test]
async fn concurrent_batches_each_get_their_own_answer() {
    for (db, store) in stores("exp_group").await {
        let n = db.name;
        // 20 batches at once, each sharing half its ids with the next: the
        // writer commits them in groups, and each batch still learns which
        // of its own events were new.
        let mut tasks = Vec::new();
        for k in 0..20_usize {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let batch: Vec<Event> = (k * 50..k * 50 + 100)
                    .map(|i| exposure(&format!("e{i}"), &format!("u{i}"), "control", T0))
                    .collect();
                store.ingest_events("production", batch).await
            }));
        }
        let (mut accepted, mut duplicates) = (0, 0);
        for task in tasks {
            let done = task.await.expect("task").expect("ingest");
            assert_eq!(done.accepted as usize + done.duplicates.len(), 100, "{n}");
            assert!(done.duplicates.iter().all(|&i| i < 100), "{n}");
            accepted += done.accepted;
            duplicates += done.duplicates.len();
        }
        assert_eq!((accepted, duplicates), (1050, 950), "{n}");
        assert_eq!(
            variant(&totals(&store, None).await, "control").units,
            1050,
            "{n}"
        );
    }
}

#[tokio::test]
async fn an_event_is_its_id_and_its_time() {
    for (db, store) in stores("exp_identity").await {
        let n = db.name;
        // A retry resends the event unchanged; the same id at another time
        // is another event (documented: duplicates are keyed by both).
        let done = store
            .ingest_events(
                "production",
                vec![
                    exposure("e1", "u1", "control", T0),
                    conversion("c1", "u1", Some(1.0), T0 + 1),
                    conversion("c1", "u1", Some(1.0), T0 + 2),
                ],
            )
            .await
            .expect("ingest");
        assert_eq!((done.accepted, done.duplicates.len()), (3, 0), "{n}");
        let t = totals(&store, None).await;
        assert!(close(variant(&t, "control").sum, 2.0), "{n}: {t:?}");
    }
}

/// "Converted" has one definition: the unit's attributed values sum to
/// more than zero (no value counts 1). A refund cancelling a purchase, a
/// lone refund and a value of 0 are not conversions; the sums still carry
/// every value. The metrics with conversions are listed.
#[tokio::test]
async fn converted_means_a_positive_total() {
    for (db, store) in stores("exp_converted").await {
        let n = db.name;
        assert_eq!(
            store
                .experiment_metrics("production")
                .await
                .expect("metrics"),
            Vec::<String>::new(),
            "{n}"
        );
        let mut events = Vec::new();
        for u in [
            "buyer",
            "refunded",
            "refund_only",
            "zero",
            "no_value",
            "net",
        ] {
            events.push(exposure(&format!("e_{u}"), u, "treatment", T0));
        }
        events.extend([
            conversion("c1", "buyer", Some(20.0), T0 + 1),
            conversion("c2", "refunded", Some(20.0), T0 + 1),
            conversion("c3", "refunded", Some(-20.0), T0 + 2),
            conversion("c4", "refund_only", Some(-5.0), T0 + 1),
            conversion("c5", "zero", Some(0.0), T0 + 1),
            conversion("c6", "no_value", None, T0 + 1),
            conversion("c7", "net", Some(30.0), T0 + 1),
            conversion("c8", "net", Some(-10.0), T0 + 2),
        ]);
        store
            .ingest_events("production", events)
            .await
            .expect("ingest");
        let t = totals(&store, None).await;
        let treatment = variant(&t, "treatment");
        assert_eq!(treatment.units, 6, "{n}");
        // buyer, no_value (counts 1) and net (+20): three.
        assert_eq!(treatment.converted, 3, "{n}: {treatment:?}");
        assert!(
            close(treatment.sum, 20.0 + 0.0 - 5.0 + 0.0 + 1.0 + 20.0),
            "{n}"
        );
        assert_eq!(
            store
                .experiment_metrics("production")
                .await
                .expect("metrics"),
            vec!["purchase".to_owned()],
            "{n}"
        );
        assert!(
            store
                .experiment_metrics("nowhere")
                .await
                .expect("metrics")
                .is_empty(),
            "{n}"
        );
    }
}

/// The catalogue's reads: a cap on the per-unit value, the percentile of
/// the per-unit values, a ratio of two metrics' per-unit values, and an
/// experiment's start and stop bounding exposures and conversions.
#[tokio::test]
async fn caps_percentiles_ratios_and_time_bounds() {
    for (db, store) in stores("exp_catalogue_reads").await {
        let n = db.name;
        let order = |id: &str, unit: &str, at_ms: i64| {
            Event::Conversion(Conversion {
                event_id: id.into(),
                metric: "order".into(),
                units: vec![UnitKey {
                    attribute: "user_id".into(),
                    unit: unit.into(),
                }],
                value: None,
                at_ms,
            })
        };
        // Four units in treatment with purchases of 10, 20, 30 and 400
        // (one order each, the last two orders for u4), one in control
        // exposed later.
        store
            .ingest_events(
                "production",
                vec![
                    exposure("e1", "u1", "treatment", T0),
                    exposure("e2", "u2", "treatment", T0),
                    exposure("e3", "u3", "treatment", T0),
                    exposure("e4", "u4", "treatment", T0),
                    exposure("e5", "u5", "control", T0 + 10 * HOUR),
                    conversion("c1", "u1", Some(10.0), T0 + HOUR),
                    conversion("c2", "u2", Some(20.0), T0 + HOUR),
                    conversion("c3", "u3", Some(30.0), T0 + HOUR),
                    conversion("c4", "u4", Some(400.0), T0 + 5 * HOUR),
                    conversion("c5", "u5", Some(50.0), T0 + 11 * HOUR),
                    order("o1", "u1", T0 + HOUR),
                    order("o2", "u2", T0 + HOUR),
                    order("o3", "u3", T0 + HOUR),
                    order("o4", "u4", T0 + 5 * HOUR),
                    order("o5", "u4", T0 + 5 * HOUR + 1),
                    order("o6", "u5", T0 + 11 * HOUR),
                ],
            )
            .await
            .expect("ingest");

        let capped = MetricQuery {
            cap: Some(100.0),
            ..query(None)
        };
        let t = store
            .experiment_totals("production", &capped)
            .await
            .expect("capped");
        let treatment = variant(&t, "treatment");
        assert_eq!(treatment.converted, 4, "{n}");
        assert!(
            close(treatment.sum, 10.0 + 20.0 + 30.0 + 100.0),
            "{n}: {t:?}"
        );
        assert!(
            close(treatment.sum_squares, 100.0 + 400.0 + 900.0 + 10_000.0),
            "{n}"
        );

        // Nearest rank over the 5 converting units (10, 20, 30, 50, 400).
        let p = |q: f64| {
            let store = &store;
            async move {
                store
                    .experiment_unit_percentile("production", &query(None), q)
                    .await
                    .expect("percentile")
            }
        };
        assert_eq!(p(50.0).await, Some(30.0), "{n}");
        assert_eq!(p(80.0).await, Some(50.0), "{n}");
        assert_eq!(p(99.0).await, Some(400.0), "{n}");
        assert!(
            store
                .experiment_unit_percentile("production", &query(None), 100.0)
                .await
                .is_err()
        );

        // Revenue per order: Σy / Σx per variant with the cross products.
        let ratio = store
            .experiment_ratio_totals(
                "production",
                "checkout",
                &["control", "treatment"],
                "user_id",
                (None, None, None),
                RatioPart {
                    metric: "purchase",
                    converted: false,
                    cap: None,
                },
                RatioPart {
                    metric: "order",
                    converted: false,
                    cap: None,
                },
            )
            .await
            .expect("ratio");
        let t = &ratio[1];
        assert_eq!(
            (t.variant.as_str(), t.units, t.converted),
            ("treatment", 4, 4),
            "{n}"
        );
        assert!(close(t.sum_y, 460.0) && close(t.sum_x, 5.0), "{n}: {t:?}");
        assert!(close(t.sum_x_squares, 1.0 + 1.0 + 1.0 + 4.0), "{n}");
        assert!(
            close(t.sum_products, 10.0 + 20.0 + 30.0 + 800.0),
            "{n}: {t:?}"
        );
        assert_eq!((ratio[0].units, ratio[0].sum_x), (1, 1.0), "{n}");

        // An experiment from T0 + 1 h: u1–u4 were exposed before it, only
        // u5 counts. Until T0 + 4 h: u4's purchase at T0 + 5 h does not.
        let late = MetricQuery {
            from_ms: Some(T0 + HOUR),
            ..query(None)
        };
        let t = store
            .experiment_totals("production", &late)
            .await
            .expect("late");
        assert_eq!(
            (variant(&t, "control").units, variant(&t, "treatment").units),
            (1, 0),
            "{n}: {t:?}"
        );
        let early = MetricQuery {
            until_ms: Some(T0 + 4 * HOUR),
            ..query(None)
        };
        let t = store
            .experiment_totals("production", &early)
            .await
            .expect("early");
        let treatment = variant(&t, "treatment");
        assert_eq!((treatment.units, treatment.converted), (4, 3), "{n}: {t:?}");
        assert!(close(treatment.sum, 60.0), "{n}");
        assert_eq!(
            variant(&t, "control").units,
            0,
            "{n}: exposed after the stop"
        );
    }
}

/// Two instances (two event stores, each with its own pool and writer) on
/// one database: batches from both, folded by both at once, each event
/// counted once, the same units seen from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fold_one_log() {
    for (db, a) in stores("exp_instances").await {
        let n = db.name;
        let b = EventStore::open(&guidon_events::events_url(&db.url))
            .await
            .expect("second instance");
        let batch = |side: usize, k: usize| -> Vec<Event> {
            (0..200)
                .flat_map(|u| {
                    let unit = format!("i{side}-b{k}-u{u}");
                    let at = T0 + (k * 200 + u) as i64;
                    [
                        exposure(&format!("{unit}-x"), &unit, "control", at),
                        conversion(&format!("{unit}-c"), &unit, Some(2.0), at + 1),
                    ]
                })
                .collect()
        };
        let send = |store: EventStore, side: usize| async move {
            for k in 0..10 {
                store
                    .ingest_events("production", batch(side, k))
                    .await
                    .expect("ingest");
            }
            store.settle().await.expect("settle");
        };
        let (ra, rb) = tokio::join!(
            tokio::spawn(send(a.clone(), 0)),
            tokio::spawn(send(b.clone(), 1))
        );
        ra.expect("instance a");
        rb.expect("instance b");
        for store in [&a, &b] {
            let t = totals(store, None).await;
            let control = variant(&t, "control");
            assert_eq!(
                (control.units, control.converted),
                (4000, 4000),
                "{n}: {t:?}"
            );
            assert!(close(control.sum, 8000.0), "{n}: {t:?}");
        }
        b.close().await;
    }
}
