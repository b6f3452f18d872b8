//! `EdgeStore`, the local file of `guidon edge`: batches come back oldest
//! first and go once removed, counted; verdicts are replaced whole; both
//! are still there when the file is opened again.

use guidon_store::EdgeStore;
use guidon_testkit::TempDir;

#[tokio::test]
async fn the_outbox_and_the_verdicts_outlive_a_reopen() {
    let dir = TempDir::new("edge-store");
    let path = dir.join("edge.db");
    let store = EdgeStore::open(&path).await.expect("open");
    assert_eq!(store.pending().await.expect("pending"), 0);
    store.push("production", "[1,2,3]", 3).await.expect("push");
    store.push("development", "[4]", 1).await.expect("push");
    store.push("production", "[5,6]", 2).await.expect("push");
    assert_eq!(store.pending().await.expect("pending"), 6);
    store
        .keep_verdicts(&[
            ("h1".into(), "{\"a\":1}".into()),
            ("h2".into(), "{}".into()),
        ])
        .await
        .expect("keep");
    store
        .keep_verdicts(&[("h2".into(), "{\"b\":2}".into())])
        .await
        .expect("replace");
    store.close().await;

    let store = EdgeStore::open(&path).await.expect("reopen");
    let oldest = store.oldest(2).await.expect("oldest");
    let seen: Vec<(&str, &str, u64)> = oldest
        .iter()
        .map(|b| (b.env.as_str(), b.events.as_str(), b.count))
        .collect();
    assert_eq!(
        seen,
        [("production", "[1,2,3]", 3), ("development", "[4]", 1)]
    );
    store.remove(&[oldest[0].id]).await.expect("remove");
    assert_eq!(store.pending().await.expect("pending"), 3);
    let rest = store.oldest(10).await.expect("oldest");
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].events, "[4]");
    assert_eq!(
        store.verdicts().await.expect("verdicts"),
        [("h2".to_owned(), "{\"b\":2}".to_owned())]
    );
}
