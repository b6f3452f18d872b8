//! The backends every store and server test runs against: SQLite always, PostgreSQL
//! when `GUIDON_TEST_DATABASE_URL` names a server. Each store gets a fresh
//! SQLite file, or a fresh PostgreSQL schema, so runs never collide.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::AnyPool;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    dir: Option<PathBuf>,
    /// (server URL, schema) to drop when done.
    schema: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((base, schema)) = self.schema.take() {
            // Drop runs inside the test's runtime: clean up from a thread
            // with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let pool = raw_pool(&base).await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await?;
                    pool.close().await;
                    Ok::<_, sqlx::Error>(())
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

fn unique(label: &str) -> String {
    format!(
        "{label}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fresh, empty databases, one per available backend.
pub async fn databases(label: &str) -> Vec<TestDb> {
    let dir = std::env::temp_dir().join(format!("guidon-store-{}", unique(label)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut dbs = vec![TestDb {
        name: "sqlite",
        url: format!("sqlite://{}", dir.join("guidon.db").display()),
        dir: Some(dir),
        schema: None,
    }];
    match std::env::var("GUIDON_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("guidon_test_{}", unique(label)).to_lowercase();
            let admin = raw_pool(&base)
                .await
                .expect("PostgreSQL from GUIDON_TEST_DATABASE_URL is reachable");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .expect("create schema");
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            dbs.push(TestDb {
                name: "postgres",
                url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                dir: None,
                schema: Some((base.clone(), schema)),
            });
        }
        _ => eprintln!("PostgreSQL tests skipped: GUIDON_TEST_DATABASE_URL is not set"),
    }
    dbs
}

/// A plain connection pool, for what the store API will not do (planting a
/// corrupt row, creating a schema).
pub async fn raw_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await
}
