//! One suite, every backend: each test runs against SQLite and, when
//! `GUIDON_TEST_DATABASE_URL` is set, PostgreSQL.

use std::sync::Arc;

use guidon_engine::model::{Flag, Segment};
use guidon_protocol::{Kind, Op};
use guidon_store::{DefinitionKind, Store, StoreError};
use serde_json::json;

fn flag(value: serde_json::Value) -> Flag {
    serde_json::from_value(value).expect("test flag")
}

fn simple(key: &str, enabled: bool) -> Flag {
    flag(json!({"key": key, "enabled": enabled}))
}

async fn stores(label: &str) -> Vec<(guidon_testkit::TestDb, Store)> {
    let mut out = Vec::new();
    for db in guidon_testkit::databases(label).await {
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
        assert_eq!(snap.revision, Some(2), "{n}");
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
                Err(StoreError::Exists {
                    kind: "flag",
                    version: 2,
                    ..
                })
            ),
            "{n}: a create-only write on a live key says it exists: {err:?}"
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
                changes.changes[0].op(),
                changes.changes[0].definition().is_none()
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
        let raw = guidon_testkit::raw_pool(&db.url).await.expect("raw");
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
                    let revs: Vec<u64> = changes.changes.iter().map(|c| c.revision()).collect();
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
            let revs: Vec<u64> = changes.changes.iter().map(|c| c.revision()).collect();
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

#[tokio::test]
async fn tokens_are_stored_hashed_scoped_and_revocable() {
    use guidon_protocol::api::Role;
    for (db, store) in stores("tokens").await {
        let n = db.name;
        assert!(!store.has_admin_token().await.expect("query"), "{n}");
        let admin = store
            .create_token("ops", Role::Admin, None, "secret-admin-1")
            .await
            .expect("admin");
        assert_eq!(
            (admin.role, admin.env.as_deref(), admin.revoked),
            (Role::Admin, None, false),
            "{n}"
        );
        store
            .create_token("web", Role::Sdk, Some("production"), "secret-sdk-1")
            .await
            .expect("sdk");
        assert!(store.has_admin_token().await.expect("query"), "{n}");
        assert!(
            matches!(
                store.create_token("ops", Role::Admin, None, "x").await,
                Err(StoreError::TokenExists(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.create_token("s", Role::Sdk, None, "x").await,
                Err(StoreError::TokenScope(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store.create_token("s", Role::Sdk, Some("nope"), "x").await,
                Err(StoreError::UnknownEnv(_))
            ),
            "{n}"
        );
        assert!(
            matches!(
                store
                    .create_token("a", Role::Admin, Some("production"), "x")
                    .await,
                Err(StoreError::TokenScope(_))
            ),
            "{n}"
        );

        let found = store
            .authenticate("secret-sdk-1")
            .await
            .expect("lookup")
            .expect("known");
        assert_eq!(
            (found.name.as_str(), found.env.as_deref()),
            ("web", Some("production")),
            "{n}"
        );
        assert!(found.last_used_at_ms.is_some(), "{n}: use is recorded");
        assert!(
            store
                .authenticate("secret-sdk-2")
                .await
                .expect("lookup")
                .is_none(),
            "{n}"
        );

        // Only a hash is stored: the secret appears nowhere in the table.
        let raw = guidon_testkit::raw_pool(&db.url).await.expect("raw");
        let hits: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE secret_hash LIKE '%secret%'")
                .fetch_one(&raw)
                .await
                .expect("count"),
            "n",
        );
        raw.close().await;
        assert_eq!(hits, 0, "{n}");

        store.revoke_token("web").await.expect("revoke");
        store
            .revoke_token("web")
            .await
            .expect("revoking twice is fine");
        assert!(
            store
                .authenticate("secret-sdk-1")
                .await
                .expect("lookup")
                .is_none(),
            "{n}: revoked"
        );
        let listed = store.list_tokens().await.expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|t| (t.name.as_str(), t.revoked))
                .collect::<Vec<_>>(),
            [("ops", false), ("web", true)],
            "{n}"
        );
        assert!(
            matches!(
                store.revoke_token("ghost").await,
                Err(StoreError::UnknownToken(_))
            ),
            "{n}"
        );
    }
}

#[tokio::test]
async fn catch_up_past_the_horizon_asks_for_a_snapshot() {
    use guidon_store::StoreOptions;
    for db in guidon_testkit::databases("horizon").await {
        let n = db.name;
        let options = StoreOptions {
            catch_up_horizon: 3,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&db.url, options).await.expect("open");
        for i in 0..5 {
            store
                .upsert_flag("production", &simple("f", i % 2 == 0), None, "cli")
                .await
                .expect("write");
        }
        assert_eq!(
            store
                .changes_since("production", 2)
                .await
                .expect("within")
                .changes
                .len(),
            3,
            "{n}"
        );
        let err = store.changes_since("production", 1).await;
        assert!(
            matches!(
                err,
                Err(StoreError::TooOld {
                    since: 1,
                    oldest: 2
                })
            ),
            "{n}: {err:?}"
        );
    }
}

/// A second store on the same database stands for another process (another
/// server instance): it learns of the first one's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_learns_of_commits() {
    use guidon_store::{Revised, StoreOptions};
    use std::time::Duration;
    for db in guidon_testkit::databases("watch").await {
        let n = db.name;
        let options = StoreOptions {
            poll_interval: Duration::from_millis(50),
            ..StoreOptions::default()
        };
        let a = Store::open_with(&db.url, options.clone()).await.expect("a");
        let b = Store::open_with(&db.url, options).await.expect("b");
        let mut on_a = a.subscribe();
        let mut on_b = b.subscribe();
        // Let b's watcher take its first look (and its listener connect).
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 1..=3u64 {
            a.upsert_flag("production", &simple("f", true), None, "a")
                .await
                .expect("write");
            let want = ("production".to_owned(), i);
            let got: Revised = tokio::time::timeout(Duration::from_secs(5), on_a.recv())
                .await
                .expect("a hears itself")
                .expect("open");
            assert_eq!((got.env.clone(), got.revision), want, "{n}: in process");
            // In process, the commit comes along, compiled at its revision.
            let commit = got.commit.expect("a's own commit is handed over");
            assert_eq!(commit.snapshot.revision(), Some(i), "{n}");
            // What is handed over is what the database holds.
            let stored = a.snapshot("production").await.expect("snapshot");
            assert_eq!(*commit.document, stored, "{n}: the commit's document");
            assert_eq!(commit.changes.len(), 1, "{n}");
            let got = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
                .await
                .expect("b hears a")
                .expect("open");
            assert_eq!(
                (got.env.clone(), got.revision),
                want,
                "{n}: across instances"
            );
            assert!(
                got.commit.is_none(),
                "{n}: another process's commit is only announced"
            );
        }
        let changes = b.changes_since("production", 0).await.expect("catch up");
        assert_eq!(changes.revision, 3, "{n}");
    }
}

/// The database goes away under a running store (its connections are
/// killed): calls fail with a clear error, nothing half-written stays, and
/// the store recovers without being reopened.
#[tokio::test]
async fn the_store_recovers_when_postgres_drops_its_connections() {
    let Some(db) = guidon_testkit::databases("outage")
        .await
        .into_iter()
        .find(|d| d.name == "postgres")
    else {
        eprintln!("skipped: needs PostgreSQL (GUIDON_TEST_DATABASE_URL)");
        return;
    };
    let app = format!("guidon_outage_{}", std::process::id());
    let url = format!("{}&application_name={app}", db.url);
    let store = Store::open(&url).await.expect("open");
    store
        .upsert_flag("production", &simple("f", true), None, "cli")
        .await
        .expect("before");
    let admin = guidon_testkit::raw_pool(&db.url).await.expect("admin");
    let killed = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .expect("terminate")
    .len();
    assert!(killed >= 1, "the store's connections were found and killed");
    admin.close().await;
    let mut errors = 0;
    let mut ok = false;
    for _ in 0..10 {
        match store
            .upsert_flag("production", &simple("f", false), None, "cli")
            .await
        {
            Ok(c) => {
                ok = true;
                assert_eq!(c.revision, 2, "the failed attempts consumed no revision");
                break;
            }
            Err(e) => {
                errors += 1;
                assert!(e.to_string().starts_with("database error"), "{e}");
            }
        }
    }
    assert!(ok, "recovered after {errors} errors");
    eprintln!("{killed} connections killed; recovered after {errors} failed calls");
    assert_eq!(
        store
            .changes_since("production", 0)
            .await
            .expect("log")
            .changes
            .len(),
        2
    );
}

/// A refused write (conflict, invalid flag, missing key) must release the
/// environment at once: another instance's writer does not wait for it.
#[tokio::test]
async fn a_refused_write_leaves_no_lock_behind() {
    use std::time::Duration;
    for (db, store) in stores("nolock").await {
        let n = db.name;
        store
            .upsert_flag("production", &simple("f", true), None, "a")
            .await
            .expect("v1");
        let other = Store::open(&db.url).await.expect("second instance");
        let refused = [
            store
                .upsert_flag("production", &simple("f", false), Some(7), "a")
                .await
                .is_err(),
            store
                .upsert_flag(
                    "production",
                    &flag(json!({"key": "g", "enabled": true,
                "off_variant": "x"})),
                    None,
                    "a",
                )
                .await
                .is_err(),
            store
                .delete("production", Kind::Flag, "ghost", None, "a")
                .await
                .is_err(),
        ];
        assert_eq!(refused, [true, true, true], "{n}");
        let h = simple("h", true);
        let write = other.upsert_flag("production", &h, None, "b");
        let c = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .unwrap_or_else(|_| panic!("{n}: the other writer was blocked"))
            .expect("write");
        assert_eq!(c.revision, 2, "{n}");
    }
}

#[tokio::test]
async fn replace_all_makes_the_environment_exactly_the_file_in_one_revision() {
    for (db, store) in stores("replace").await {
        let n = db.name;
        let env = "production";
        store
            .upsert_flag(env, &simple("keep", true), None, "alice")
            .await
            .expect("keep");
        store
            .upsert_flag(env, &simple("change", true), None, "alice")
            .await
            .expect("change");
        store
            .upsert_flag(env, &simple("drop", true), None, "alice")
            .await
            .expect("drop");
        let file: guidon_engine::FlagFile = serde_json::from_value(json!({
            "flags": [
                {"key": "keep", "enabled": true},
                {"key": "change", "enabled": false},
                {"key": "fresh", "enabled": true, "rules": [
                    {"conditions": [{"operator": "in_segment", "values": ["staff"]}], "serve": {"enabled": true}}
                ]}
            ],
            "segments": [{"key": "staff", "rules": [
                {"conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}]}
            ]}]
        }))
        .expect("file");
        let done = store
            .replace_all(env, &file, "gitops")
            .await
            .expect("replace");
        assert_eq!(done.revision, 4, "{n}");
        let summary: Vec<(Kind, &str, Op, u64)> = done
            .changes
            .iter()
            .map(|c| (c.kind, c.key.as_str(), c.op, c.version))
            .collect();
        assert_eq!(
            summary,
            [
                (Kind::Flag, "change", Op::Upsert, 2),
                (Kind::Flag, "fresh", Op::Upsert, 1),
                (Kind::Segment, "staff", Op::Upsert, 1),
                (Kind::Flag, "drop", Op::Delete, 1),
            ],
            "{n}"
        );
        let snap = store.snapshot(env).await.expect("snapshot");
        let mut keys: Vec<&str> = snap.file.flags.iter().map(|f| f.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["change", "fresh", "keep"], "{n}");
        assert_eq!(snap.file.segments.len(), 1, "{n}");
        // Catch-up sees the four changes under one revision, in a stable order.
        let changes = store.changes_since(env, 3).await.expect("changes");
        assert_eq!(changes.revision, 4, "{n}");
        let seen: Vec<(u64, &str, Op)> = changes
            .changes
            .iter()
            .map(|c| (c.revision(), c.key(), c.op()))
            .collect();
        assert_eq!(
            seen,
            [
                (4, "change", Op::Upsert),
                (4, "drop", Op::Delete),
                (4, "fresh", Op::Upsert),
                (4, "staff", Op::Upsert),
            ],
            "{n}"
        );
        // The audit's unit is a revision: the bulk one is one page entry.
        let page = store.audit(env, None, 1).await.expect("audit");
        assert_eq!(page.len(), 4, "{n}");
        assert!(page.iter().all(|e| e.revision == 4 && e.actor == "gitops"));
        let next = store.audit(env, Some(4), 2).await.expect("audit");
        let revisions: Vec<u64> = next.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [3, 2], "{n}");

        // Applying the same file again changes nothing and takes no revision.
        let again = store
            .replace_all(env, &file, "gitops")
            .await
            .expect("again");
        assert_eq!((again.revision, again.changes.len()), (4, 0), "{n}");
        assert_eq!(store.revision(env).await.expect("revision"), 4, "{n}");

        // An invalid file stores nothing.
        let broken: guidon_engine::FlagFile = serde_json::from_value(json!({
            "flags": [{"key": "keep", "enabled": true, "rules": [
                {"conditions": [{"operator": "in_segment", "values": ["nobody"]}], "serve": {"enabled": true}}
            ]}]
        }))
        .expect("file");
        let err = store
            .replace_all(env, &broken, "gitops")
            .await
            .expect_err("invalid");
        assert!(
            matches!(&err, StoreError::Invalid(v) if v.to_string().contains("nobody")),
            "{n}: {err}"
        );
        assert_eq!(store.revision(env).await.expect("revision"), 4, "{n}");
        let err = store
            .replace_all("staging", &file, "gitops")
            .await
            .expect_err("unknown env");
        assert!(matches!(err, StoreError::UnknownEnv(_)), "{n}: {err}");

        // Re-creating a deleted key continues its versions.
        let recreated = store
            .upsert_flag(env, &simple("drop", false), Some(0), "alice")
            .await
            .expect("recreate");
        assert_eq!((recreated.version, recreated.created), (2, true), "{n}");
    }
}

#[tokio::test]
async fn get_returns_the_live_definition_with_its_version() {
    for (db, store) in stores("get").await {
        let n = db.name;
        store
            .upsert_flag("development", &simple("a", true), None, "alice")
            .await
            .expect("a");
        store
            .upsert_flag("development", &simple("a", false), None, "alice")
            .await
            .expect("a2");
        let got = store
            .get("development", Kind::Flag, "a")
            .await
            .expect("get");
        assert_eq!(
            (
                got.version,
                got.revision,
                serde_json::to_value(&got.definition).expect("json")
            ),
            (2, 2, json!({"key": "a", "enabled": false})),
            "{n}"
        );
        store
            .delete("development", Kind::Flag, "a", None, "alice")
            .await
            .expect("delete");
        let err = store
            .get("development", Kind::Flag, "a")
            .await
            .expect_err("deleted");
        assert!(matches!(err, StoreError::NotFound { .. }), "{n}: {err}");
        let err = store
            .get("nowhere", Kind::Flag, "a")
            .await
            .expect_err("no env");
        assert!(matches!(err, StoreError::UnknownEnv(_)), "{n}: {err}");
    }
}

/// A writer validates against the environment as it last committed it only
/// while nobody else has committed: a second instance's segment must be seen.
#[tokio::test]
async fn a_writer_sees_what_another_instance_committed() {
    for (db, a) in stores("cache").await {
        let n = db.name;
        let b = Store::open(&db.url).await.expect("second instance");
        a.upsert_flag("development", &simple("x", true), None, "a")
            .await
            .expect("x");
        let staff: Segment =
            serde_json::from_value(json!({"key": "staff", "included": ["u1"]})).expect("segment");
        b.upsert_segment("development", &staff, None, "b")
            .await
            .expect("segment via b");
        let uses = flag(json!({"key": "y", "enabled": true, "rules": [
            {"conditions": [{"operator": "in_segment", "values": ["staff"]}], "serve": {"enabled": true}}
        ]}));
        a.upsert_flag("development", &uses, None, "a")
            .await
            .expect("a must see b's segment");
        // And b must see a's flag depending on it: the delete is refused.
        let err = b
            .delete("development", Kind::Segment, "staff", None, "b")
            .await
            .expect_err("still used");
        assert!(matches!(err, StoreError::Invalid(_)), "{n}: {err}");
        // Deleting and re-creating an environment forgets what was cached.
        a.delete_env("development", true).await.expect("drop env");
        a.create_env("development").await.expect("re-create");
        a.upsert_flag("development", &uses, None, "a")
            .await
            .expect_err("the segment went with the environment");
    }
}

#[tokio::test]
async fn sessions_expire_end_and_carry_the_current_roles() {
    use guidon_protocol::api::{UserRole, UserRoles};
    for (db, store) in stores("sessions").await {
        let n = db.name;
        let roles = UserRoles::from([("production".to_owned(), UserRole::Viewer)]);
        store
            .create_user("dana", "$argon2id$placeholder", &roles)
            .await
            .expect("user");
        assert!(
            matches!(
                store.create_user("dana", "x", &roles).await,
                Err(StoreError::UserExists(_))
            ),
            "{n}"
        );
        let bad = UserRoles::from([("staging".to_owned(), UserRole::Viewer)]);
        assert!(
            matches!(
                store.create_user("eve", "x", &bad).await,
                Err(StoreError::InvalidRoles { path, .. }) if path == "roles.staging"
            ),
            "{n}"
        );
        let far = i64::MAX / 2;
        store
            .create_session("dana", "live-secret", "csrf-1", far)
            .await
            .expect("session");
        store
            .create_session("dana", "old-secret", "csrf-2", 1)
            .await
            .expect("an expired session");
        assert!(
            store.session("old-secret").await.expect("read").is_none(),
            "{n}: expired"
        );
        let session = store
            .session("live-secret")
            .await
            .expect("read")
            .expect("live");
        assert_eq!(session.csrf_token, "csrf-1", "{n}");
        assert_eq!(session.user.roles, roles, "{n}");
        assert!(session.user.last_login_at_ms.is_some(), "{n}");
        let editor = UserRoles::from([("production".to_owned(), UserRole::Editor)]);
        store.set_user_roles("dana", &editor).await.expect("roles");
        let session = store
            .session("live-secret")
            .await
            .expect("read")
            .expect("live");
        assert_eq!(session.user.roles, editor, "{n}: the roles of now");
        store.end_session("live-secret").await.expect("end");
        assert!(
            store.session("live-secret").await.expect("read").is_none(),
            "{n}"
        );
        store
            .create_session("dana", "again", "csrf-3", far)
            .await
            .expect("session");
        store.remove_user("dana").await.expect("remove");
        assert!(
            store.session("again").await.expect("read").is_none(),
            "{n}: removing a person ends their sessions"
        );
    }
}

/// Time travel: the state at every revision, rebuilt from the log, is the
/// snapshot that was read just after that revision was committed; an
/// instant maps to the last revision made at or before it; compaction
/// makes older states an explicit error, never a guess.
#[tokio::test]
async fn every_past_revision_is_rebuilt_exactly_until_compacted() {
    use guidon_store::AsOf;
    for (db, store) in stores("time_travel").await {
        let n = db.name;
        let env = "production";
        let start = store.snapshot(env).await.expect("empty");
        let mut seen = vec![start];
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
        store
            .upsert_flag(env, &simple("f", true), None, "alice")
            .await
            .expect("1");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        store
            .upsert_flag(
                env,
                &flag(json!({"key": "f", "enabled": true, "rollout": {"percentage": 10}})),
                None,
                "bob",
            )
            .await
            .expect("2");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        let staff: Segment = serde_json::from_value(json!({"key": "staff", "rules": [
            {"conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}]}]}))
        .expect("segment");
        store
            .upsert_segment(env, &staff, None, "carol")
            .await
            .expect("3");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        store
            .upsert_flag(env, &flag(json!({"key": "g", "enabled": true, "rules": [
                {"conditions": [{"operator": "in_segment", "values": ["staff"]}], "serve": {"enabled": true}}]})), None, "carol")
            .await
            .expect("4");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        store
            .delete(env, Kind::Flag, "g", None, "dave")
            .await
            .expect("5");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        let file: guidon_engine::FlagFile = serde_json::from_value(json!({
            "flags": [{"key": "g", "enabled": false}, {"key": "h", "enabled": true}]}))
        .expect("file");
        store.replace_all(env, &file, "gitops").await.expect("6");
        seen.push(store.snapshot(env).await.expect("snap"));
        pause().await;
        store
            .upsert_flag(env, &simple("f", false), None, "erin")
            .await
            .expect("7");
        seen.push(store.snapshot(env).await.expect("snap"));

        let audit = store.audit(env, None, 100).await.expect("audit");
        for (revision, want) in seen.iter().enumerate() {
            let revision = revision as u64;
            let past = store
                .document_at(env, AsOf::Revision(revision))
                .await
                .unwrap_or_else(|e| panic!("{n}: revision {revision}: {e}"));
            assert_eq!(&past.document, want, "{n}: revision {revision}");
            assert_eq!(past.revision, revision, "{n}");
            assert_eq!(past.current, 7, "{n}");
            if revision == 0 {
                assert_eq!(past.actor, None, "{n}");
                assert_eq!(Some(past.at_ms), want.epoch, "{n}");
                continue;
            }
            let entry = audit
                .iter()
                .find(|e| e.revision == revision)
                .expect("audited");
            assert_eq!(past.actor.as_deref(), Some(entry.actor.as_str()), "{n}");
            assert_eq!(past.at_ms, entry.at_ms, "{n}");
            // At the instant it was made, and a millisecond before the next.
            let at = store
                .document_at(env, AsOf::Time(entry.at_ms))
                .await
                .expect("at");
            assert_eq!(at.revision, revision, "{n}: at {}", entry.at_ms);
            if let Some(next) = audit.iter().find(|e| e.revision == revision + 1)
                && next.at_ms > entry.at_ms
            {
                let before_next = store
                    .document_at(env, AsOf::Time(next.at_ms - 1))
                    .await
                    .expect("between");
                assert_eq!(before_next.revision, revision, "{n}");
            }
        }
        // Revision 4's document has g (version 1) and its segment.
        let four = store.document_at(env, AsOf::Revision(4)).await.expect("4");
        assert_eq!(four.document.versions.get("g"), Some(&1), "{n}");
        assert_eq!(four.document.versions.get("f"), Some(&2), "{n}");

        let epoch = seen[0].epoch.expect("epoch");
        let err = store.document_at(env, AsOf::Time(epoch - 1)).await;
        assert!(
            matches!(err, Err(StoreError::BeforeEnvironment { .. })),
            "{n}: {err:?}"
        );
        let err = store.document_at(env, AsOf::Revision(8)).await;
        assert!(
            matches!(
                err,
                Err(StoreError::RevisionAhead {
                    requested: 8,
                    current: 7,
                    ..
                })
            ),
            "{n}: {err:?}"
        );
        let err = store.document_at("nowhere", AsOf::Revision(0)).await;
        assert!(
            matches!(err, Err(StoreError::UnknownEnv(_))),
            "{n}: {err:?}"
        );

        // Compaction: revisions below 3 are gone, explicitly.
        assert_eq!(
            store.compact_history(env, 3).await.expect("compact"),
            3,
            "{n}"
        );
        assert_eq!(
            store.compact_history(env, 1).await.expect("never lowered"),
            3,
            "{n}"
        );
        for revision in 0..3 {
            let err = store.document_at(env, AsOf::Revision(revision)).await;
            assert!(
                matches!(err, Err(StoreError::Compacted { oldest: 3, .. })),
                "{n}: {revision}: {err:?}"
            );
        }
        let first = audit.iter().find(|e| e.revision == 1).expect("r1").at_ms;
        let err = store.document_at(env, AsOf::Time(first)).await;
        assert!(
            matches!(err, Err(StoreError::Compacted { .. })),
            "{n}: {err:?}"
        );
        for revision in 3..=7 {
            let past = store
                .document_at(env, AsOf::Revision(revision))
                .await
                .expect("kept");
            assert_eq!(&past.document, &seen[revision as usize], "{n}: {revision}");
            assert_eq!(past.history_from, 3, "{n}");
        }
        // Catch-up cannot replay what was compacted away.
        let err = store.changes_since(env, 1).await;
        assert!(
            matches!(err, Err(StoreError::TooOld { .. })),
            "{n}: {err:?}"
        );
        let changes = store.changes_since(env, 2).await.expect("from 2");
        assert_eq!(
            changes.changes.first().map(|c| c.revision()),
            Some(3),
            "{n}"
        );
        // Compaction is per environment.
        store
            .document_at("development", AsOf::Revision(0))
            .await
            .expect("development untouched");
    }
}

/// The recent-contexts sample: per hour the highest priorities, read in
/// proportion to what each hour was offered; hours past the retention and
/// environments that did not opt in keep nothing; deletable.
#[tokio::test]
async fn the_context_sample_keeps_the_highest_priorities_per_hour_in_proportion() {
    use guidon_store::{Offered, SampleBatch, SampleSettings, hour_of};
    for (db, store) in stores("samples").await {
        let n = db.name;
        let env = "production";
        assert_eq!(store.sampling(env).await.expect("none"), None, "{n}");
        let settings = SampleSettings {
            size: 3,
            retention_hours: 2,
            drop: vec!["email".into()],
            hash: vec!["account".into()],
        };
        store
            .set_sampling(env, &settings, "k3y")
            .await
            .expect("opt in");
        let now = guidon_engine::Timestamp::now().as_millisecond();
        let batch = |at: i64, priorities: std::ops::RangeInclusive<i64>, seen: u64| SampleBatch {
            offered: priorities
                .map(|p| Offered {
                    at_ms: at,
                    priority: p,
                    context: format!("{{\"p\":{p}}}"),
                })
                .collect(),
            seen: [(hour_of(at), seen)].into_iter().collect(),
        };
        store
            .add_samples(env, &batch(now, 1..=10, 10))
            .await
            .expect("this hour");
        store
            .add_samples(env, &batch(now - 3_600_000, 100..=105, 5))
            .await
            .expect("an hour ago");
        store
            .add_samples(env, &batch(now - 3 * 3_600_000, 200..=209, 10))
            .await
            .expect("past the retention");
        // Another instance's batch for this hour: priorities merge.
        store
            .add_samples(env, &batch(now, 7..=7, 1))
            .await
            .expect("merge");
        let info = store.sampling(env).await.expect("info").expect("opted in");
        assert_eq!(info.settings, settings, "{n}");
        assert_eq!(info.hash_key, "k3y", "{n}");
        assert_eq!((info.stored, info.seen), (6, 16), "{n}");
        let sample = store.sample(env).await.expect("sample").expect("opted in");
        assert_eq!(sample.seen, 16, "{n}");
        let mut got = sample.contexts.clone();
        got.sort();
        // 3 × 5/16 → 1 from an hour ago, 3 × 11/16 → 2 from this one.
        assert_eq!(got, ["{\"p\":105}", "{\"p\":10}", "{\"p\":9}"], "{n}");
        assert_eq!(sample.newest_ms, Some(now), "{n}");
        // Another environment keeps nothing without opting in.
        store
            .add_samples("development", &batch(now, 1..=3, 3))
            .await
            .expect("ignored");
        assert_eq!(
            store.sample("development").await.expect("none"),
            None,
            "{n}"
        );
        // Deleted on request, and nothing comes back after.
        assert!(store.stop_sampling(env).await.expect("stop"), "{n}");
        assert!(!store.stop_sampling(env).await.expect("again"), "{n}");
        store
            .add_samples(env, &batch(now, 1..=3, 3))
            .await
            .expect("ignored");
        assert_eq!(store.sampling(env).await.expect("gone"), None, "{n}");
        assert_eq!(store.samplings().await.expect("all"), [], "{n}");
    }
}

/// Catalogue definitions: versioned, listed by key, a stale version
/// refused, deleted with the environment.
#[tokio::test]
async fn definitions_are_versioned() {
    for (db, store) in stores("exp_definitions").await {
        let n = db.name;
        let put = |key: &'static str, body: &'static str, expected: Option<u64>| {
            let store = &store;
            async move {
                store
                    .put_definition(
                        "production",
                        DefinitionKind::Metric,
                        key,
                        body,
                        expected,
                        1000,
                    )
                    .await
            }
        };
        let first = put("buy", r#"{"kind":"binomial","event":"purchase"}"#, Some(0))
            .await
            .expect("create");
        assert_eq!(first.version, 1, "{n}");
        let second = put("buy", r#"{"kind":"binomial","event":"buy"}"#, Some(1))
            .await
            .expect("update");
        assert_eq!(second.version, 2, "{n}");
        assert!(
            matches!(
                put("buy", "{}", Some(1)).await,
                Err(StoreError::Conflict {
                    expected: 1,
                    current: Some(2),
                    ..
                })
            ),
            "{n}"
        );
        put("aov", r#"{"kind":"sum","event":"purchase"}"#, None)
            .await
            .expect("create without a version");
        let all = store
            .definitions("production", DefinitionKind::Metric)
            .await
            .expect("list");
        let keys: Vec<&str> = all.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["aov", "buy"], "{n}");
        assert!(
            store
                .definitions("production", DefinitionKind::Experiment)
                .await
                .expect("list")
                .is_empty()
        );
        let got = store
            .definition("production", DefinitionKind::Metric, "buy")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.body, r#"{"kind":"binomial","event":"buy"}"#, "{n}");
        assert!(
            store
                .delete_definition("production", DefinitionKind::Metric, "buy")
                .await
                .expect("delete")
        );
        assert!(
            !store
                .delete_definition("production", DefinitionKind::Metric, "buy")
                .await
                .expect("delete again")
        );
        assert!(matches!(
            store
                .put_definition("nowhere", DefinitionKind::Metric, "x", "{}", None, 0)
                .await,
            Err(StoreError::UnknownEnv(_))
        ));
    }
}
