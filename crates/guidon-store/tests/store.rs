//! One suite, every backend: each test runs against SQLite and, when
//! `GUIDON_TEST_DATABASE_URL` is set, PostgreSQL.

mod common;

use std::sync::Arc;

use guidon_engine::model::{Flag, Segment};
use guidon_store::{Kind, Op, Store, StoreError};
use serde_json::json;

fn flag(value: serde_json::Value) -> Flag {
    serde_json::from_value(value).expect("test flag")
}

fn simple(key: &str, enabled: bool) -> Flag {
    flag(json!({"key": key, "enabled": enabled}))
}

async fn stores(label: &str) -> Vec<(common::TestDb, Store)> {
    let mut out = Vec::new();
    for db in common::databases(label).await {
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: open: {e}", db.name));
        out.push((db, store));
    }
    out
}

#[tokio::test]
async fn first_start_creates_development_and_production() {
    for (db, store) in stores("defaults").await {
        let envs = store.list_envs().await.expect("list");
        let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["development", "production"], "{}", db.name);
        assert!(envs.iter().all(|e| e.revision == 0));
        // Opening again (a restart) migrates nothing twice and keeps them.
        store.close().await;
        let again = Store::open(&db.url).await.expect("reopen");
        assert_eq!(
            again.list_envs().await.expect("list").len(),
            2,
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn upserts_take_versions_and_revisions_and_survive_reopening() {
    for (db, store) in stores("upsert").await {
        let n = db.name;
        let c1 = store
            .upsert_flag("production", &simple("dark", true), None, "alice")
            .await
            .expect("create");
        assert_eq!((c1.version, c1.revision, c1.created), (1, 1, true), "{n}");
        let c2 = store
            .upsert_flag("production", &simple("dark", false), Some(1), "bob")
            .await
            .expect("update");
        assert_eq!((c2.version, c2.revision, c2.created), (2, 2, false), "{n}");
        store.close().await;

        let store = Store::open(&db.url).await.expect("reopen");
        let snap = store.snapshot("production").await.expect("snapshot");
        assert_eq!(snap.revision, 2, "{n}");
        assert_eq!(snap.file.flags, vec![simple("dark", false)], "{n}");
        assert_eq!(snap.versions.get("dark"), Some(&2), "{n}");
        let compiled = snap.compile().expect("valid");
        assert_eq!(compiled.revision(), Some(2));
        let now = guidon_engine::Timestamp::UNIX_EPOCH;
        let result = compiled.evaluate("dark", &guidon_engine::Context::new(), now);
        assert_eq!(
            (result.enabled, result.flag_version),
            (false, Some(2)),
            "{n}"
        );
        // Other environments are untouched.
        assert_eq!(store.revision("development").await.expect("rev"), 0, "{n}");
    }
}

#[tokio::test]
async fn an_invalid_flag_is_refused_with_every_problem_and_nothing_is_stored() {
    for (db, store) in stores("invalid").await {
        let n = db.name;
        store
            .upsert_flag("production", &simple("other", true), None, "cli")
            .await
            .expect("ok");
        let bad = flag(json!({"key": "bad", "enabled": true,
            "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 49.5}],
            "prerequisites": [{"flag": "ghost"}]}));
        let Err(StoreError::Invalid(err)) =
            store.upsert_flag("production", &bad, None, "cli").await
        else {
            panic!("{n}: invalid flag accepted");
        };
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["flag.variants[1].weight", "flag.prerequisites[0].flag"],
            "{n}: {err}"
        );
        assert_eq!(
            store.revision("production").await.expect("rev"),
            1,
            "{n}: no revision consumed"
        );
        let snap = store.snapshot("production").await.expect("snapshot");
        assert_eq!(snap.file.flags.len(), 1, "{n}");
        assert!(
            store
                .history("production", Kind::Flag, "bad")
                .await
                .is_err(),
            "{n}: no history"
        );
        // The next valid write gets the next revision: no gap.
        let c = store
            .upsert_flag("production", &simple("good", true), None, "cli")
            .await
            .expect("ok");
        assert_eq!(c.revision, 2, "{n}");
    }
}

#[tokio::test]
async fn unknown_environments_and_names_are_clear_errors() {
    for (db, store) in stores("envs").await {
        let n = db.name;
        assert!(
            matches!(
                store.upsert_flag("staging", &simple("x", true), None, "cli").await,
                Err(StoreError::UnknownEnv(e)) if e == "staging"
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.snapshot("staging").await,
                Err(StoreError::UnknownEnv(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.changes_since("staging", 0).await,
                Err(StoreError::UnknownEnv(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.create_env("bad name").await,
                Err(StoreError::InvalidEnvName(_))
            ),
            "{n}"
        );
        store.create_env("staging").await.expect("create");
        assert!(
            matches!(
                store.create_env("staging").await,
                Err(StoreError::EnvExists(_))
            ),
            "{n}"
        );
        store
            .upsert_flag("staging", &simple("x", true), None, "cli")
            .await
            .expect("write");
        assert!(
            matches!(
                store.delete_env("staging", false).await,
                Err(StoreError::EnvNotEmpty { count: 1, .. })
            ),
            "{n}"
        );
        store
            .delete_env("staging", true)
            .await
            .expect("forced delete");
        assert!(
            matches!(
                store.revision("staging").await,
                Err(StoreError::UnknownEnv(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.delete_env("staging", true).await,
                Err(StoreError::UnknownEnv(_))
            ),
            "{n}"
        );
        // Re-created, it starts from nothing.
        store.create_env("staging").await.expect("again");
        assert_eq!(
            store
                .snapshot("staging")
                .await
                .expect("snap")
                .file
                .flags
                .len(),
            0,
            "{n}"
        );
    }
}

#[tokio::test]
async fn expected_versions_detect_conflicts() {
    for (db, store) in stores("conflict").await {
        let n = db.name;
        store
            .upsert_flag("production", &simple("f", true), Some(0), "cli")
            .await
            .expect("create if absent");
        store
            .upsert_flag("production", &simple("f", false), Some(1), "cli")
            .await
            .expect("v2");
        let err = store
            .upsert_flag("production", &simple("f", true), Some(1), "cli")
            .await;
        assert!(
            matches!(
                err,
                Err(StoreError::Conflict {
                    expected: 1,
                    current: Some(2),
                    ..
                })
            ),
            "{n}: {err:?}"
        );
        let err = store
            .upsert_flag("production", &simple("f", true), Some(0), "cli")
            .await;
        assert!(
            matches!(
                err,
                Err(StoreError::Conflict {
                    expected: 0,
                    current: Some(2),
                    ..
                })
            ),
            "{n}"
        );
        let err = store
            .upsert_flag("production", &simple("g", true), Some(3), "cli")
            .await;
        assert!(
            matches!(err, Err(StoreError::Conflict { current: None, .. })),
            "{n}"
        );
        assert_eq!(store.revision("production").await.expect("rev"), 2, "{n}");
    }
}

#[tokio::test]
async fn deletes_leave_tombstones_and_versions_continue() {
    for (db, store) in stores("delete").await {
        let n = db.name;
        let err = store
            .delete("production", Kind::Flag, "nope", None, "cli")
            .await;
        assert!(matches!(err, Err(StoreError::NotFound { .. })), "{n}");
        store
            .upsert_flag("production", &simple("f", true), None, "cli")
            .await
            .expect("v1");
        store
            .upsert_flag("production", &simple("f", false), None, "cli")
            .await
            .expect("v2");
        let d = store
            .delete("production", Kind::Flag, "f", Some(2), "carol")
            .await
            .expect("delete");
        assert_eq!((d.version, d.revision), (2, 3), "{n}");
        assert!(
            store
                .snapshot("production")
                .await
                .expect("snap")
                .file
                .flags
                .is_empty(),
            "{n}"
        );
        let changes = store.changes_since("production", 2).await.expect("changes");
        assert_eq!(changes.revision, 3);
        assert_eq!(changes.changes.len(), 1, "{n}");
        assert_eq!(
            (
                changes.changes[0].op,
                changes.changes[0].definition.is_none()
            ),
            (Op::Delete, true),
            "{n}"
        );
        let again = store
            .upsert_flag("production", &simple("f", true), Some(0), "cli")
            .await
            .expect("recreate");
        assert_eq!(
            (again.version, again.revision, again.created),
            (3, 4, true),
            "{n}"
        );
    }
}

#[tokio::test]
async fn a_flag_others_depend_on_cannot_be_deleted() {
    for (db, store) in stores("depends").await {
        let n = db.name;
        store
            .upsert_flag("production", &simple("base", true), None, "cli")
            .await
            .expect("base");
        let child =
            flag(json!({"key": "child", "enabled": true, "prerequisites": [{"flag": "base"}]}));
        store
            .upsert_flag("production", &child, None, "cli")
            .await
            .expect("child");
        let seg: Segment =
            serde_json::from_value(json!({"key": "beta", "included": ["u1"]})).expect("segment");
        store
            .upsert_segment("production", &seg, None, "cli")
            .await
            .expect("segment");
        let user = flag(
            json!({"key": "user", "enabled": true, "rules": [{"name": "b",
            "conditions": [{"operator": "in_segment", "values": ["beta"]}], "serve": {"enabled": true}}]}),
        );
        store
            .upsert_flag("production", &user, None, "cli")
            .await
            .expect("uses segment");
        let err = store
            .delete("production", Kind::Flag, "base", None, "cli")
            .await;
        assert!(matches!(err, Err(StoreError::Invalid(_))), "{n}: {err:?}");
        let err = store
            .delete("production", Kind::Segment, "beta", None, "cli")
            .await;
        assert!(matches!(err, Err(StoreError::Invalid(_))), "{n}: {err:?}");
        assert_eq!(store.revision("production").await.expect("rev"), 4, "{n}");
    }
}

#[tokio::test]
async fn history_audit_and_revert() {
    for (db, store) in stores("history").await {
        let n = db.name;
        let v1 = flag(json!({"key": "f", "enabled": true, "rollout": {"percentage": 10}}));
        let v2 = flag(json!({"key": "f", "enabled": true, "rollout": {"percentage": 50}}));
        store
            .upsert_flag("production", &v1, None, "alice")
            .await
            .expect("v1");
        store
            .upsert_flag("production", &simple("g", true), None, "bob")
            .await
            .expect("g");
        store
            .upsert_flag("production", &v2, None, "bob")
            .await
            .expect("v2");
        let reverted = store
            .revert_flag("production", "f", 1, "carol")
            .await
            .expect("revert");
        assert_eq!((reverted.version, reverted.revision), (3, 4), "{n}");
        let snap = store.snapshot("production").await.expect("snap");
        assert!(snap.file.flags.contains(&v1), "{n}: back to v1");

        let history = store
            .history("production", Kind::Flag, "f")
            .await
            .expect("history");
        let summary: Vec<(u64, u64, &str)> = history
            .iter()
            .map(|h| (h.revision, h.version, h.actor.as_str()))
            .collect();
        assert_eq!(
            summary,
            [(1, 1, "alice"), (3, 2, "bob"), (4, 3, "carol")],
            "{n}"
        );
        assert_eq!(
            history[1].before,
            Some(serde_json::to_value(&v1).expect("json")),
            "{n}"
        );
        assert_eq!(
            history[1].after,
            Some(serde_json::to_value(&v2).expect("json")),
            "{n}"
        );
        assert!(
            history.iter().all(|h| h.at_ms > 1_700_000_000_000),
            "{n}: timestamps"
        );

        let err = store.revert_flag("production", "f", 9, "carol").await;
        assert!(
            matches!(err, Err(StoreError::NoSuchVersion { version: 9, .. })),
            "{n}"
        );

        let page1 = store.audit("production", None, 3).await.expect("audit");
        let revs: Vec<u64> = page1.iter().map(|h| h.revision).collect();
        assert_eq!(revs, [4, 3, 2], "{n}: newest first");
        let page2 = store.audit("production", Some(2), 3).await.expect("audit");
        assert_eq!(
            page2.iter().map(|h| h.revision).collect::<Vec<_>>(),
            [1],
            "{n}"
        );
    }
}

#[tokio::test]
async fn promote_copies_a_flag_between_environments() {
    for (db, store) in stores("promote").await {
        let n = db.name;
        let f = flag(json!({"key": "f", "enabled": true, "rollout": {"percentage": 25}}));
        store
            .upsert_flag("development", &f, None, "alice")
            .await
            .expect("dev");
        let c = store
            .promote("development", "production", "f", "alice")
            .await
            .expect("promote");
        assert_eq!((c.version, c.revision, c.created), (1, 1, true), "{n}");
        assert_eq!(
            store.snapshot("production").await.expect("snap").file.flags,
            vec![f],
            "{n}"
        );
        let err = store
            .promote("development", "production", "nope", "alice")
            .await;
        assert!(matches!(err, Err(StoreError::NotFound { .. })), "{n}");
    }
}

#[tokio::test]
async fn a_corrupt_row_is_a_clear_error_naming_the_flag() {
    for (db, store) in stores("corrupt").await {
        let n = db.name;
        store
            .upsert_flag("production", &simple("f", true), None, "cli")
            .await
            .expect("write");
        let raw = common::raw_pool(&db.url).await.expect("raw");
        sqlx::query("UPDATE definitions SET definition = '{not json' WHERE key = 'f'")
            .execute(&raw)
            .await
            .expect("plant corruption");
        raw.close().await;
        let err = store.snapshot("production").await.expect_err("corrupt");
        let message = err.to_string();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "f")
                && message.contains("\"f\""),
            "{n}: {message}"
        );
    }
}

#[tokio::test]
async fn bad_urls_and_unreachable_databases_are_clear_errors() {
    assert!(matches!(
        Store::open("mysql://localhost/x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
    let err = Store::open("sqlite:///nonexistent-dir/guidon.db")
        .await
        .expect_err("no such dir");
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    let err = Store::open("postgres://127.0.0.1:1/guidon?connect_timeout=2")
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().starts_with("database error"), "{err}");
}

/// 8 writers x 200 upserts on one environment: revisions are exactly
/// 1..=1600, and a reader never sees a revision before every change up to
/// it is visible (no gap ever appears behind the counter).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_gapless_revisions_in_commit_order() {
    const WRITERS: usize = 8;
    const EACH: usize = 200;
    for (db, store) in stores("concurrency").await {
        let n = db.name;
        let store = Arc::new(store);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut last = 0;
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let changes = store
                        .changes_since("production", last)
                        .await
                        .expect("changes");
                    let revs: Vec<u64> = changes.changes.iter().map(|c| c.revision).collect();
                    let expected: Vec<u64> = (last + 1..=changes.revision).collect();
                    assert_eq!(revs, expected, "a reader saw a gap after revision {last}");
                    last = changes.revision;
                    checks += 1;
                }
                (last, checks)
            })
        };
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut seen = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let f = flag(json!({"key": format!("w{w}"), "enabled": i % 2 == 0}));
                    seen.push(
                        store
                            .upsert_flag("production", &f, None, "writer")
                            .await
                            .expect("upsert")
                            .revision,
                    );
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for w in writers {
            let seen = w.await.expect("writer");
            assert!(
                seen.windows(2).all(|p| p[0] < p[1]),
                "{n}: a writer's revisions go up"
            );
            all.extend(seen);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (_, checks) = reader.await.expect("reader");
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=(WRITERS * EACH) as u64).collect::<Vec<_>>(),
            "{n}: exactly 1..=1600"
        );
        assert!(checks > 1, "{n}: the reader ran during the writes");
        for from in [0, 1, 799, 1599, 1600] {
            let changes = store
                .changes_since("production", from)
                .await
                .expect("changes");
            let revs: Vec<u64> = changes.changes.iter().map(|c| c.revision).collect();
            assert_eq!(
                revs,
                (from + 1..=1600).collect::<Vec<_>>(),
                "{n}: since {from}"
            );
        }
        let snap = store.snapshot("production").await.expect("snap");
        assert_eq!(
            snap.versions
                .values()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [EACH as u64].into(),
            "{n}"
        );
    }
}
