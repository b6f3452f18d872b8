//! Planned changes: a change to a flag staged now and applied later, when
//! it is due. The store keeps them and applies one as an ordinary write
//! ([`Store::apply_planned_change`]) whose transaction also marks it
//! applied: of several instances racing for one, exactly one writes it
//! (the others find it no longer pending and write nothing), and a crash
//! before the commit leaves it pending for the next attempt.

use guidon_protocol::{Definition, Edit, Kind};
use sqlx::{Any, Row, Transaction};

use super::{Committed, Store, finish, now_ms};
use crate::error::StoreError;

/// One planned change as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedChange {
    pub id: i64,
    pub env: String,
    /// The flag.
    pub key: String,
    /// `{"patch": {...}}`, `{"flag": {...}}` or `{"delete": true}`, as JSON.
    pub change: String,
    /// The flag's version a replacement or delete was planned against.
    pub base_version: Option<u64>,
    pub due_at_ms: i64,
    /// The IANA time zone the time was given in (`UTC` for an offset).
    pub time_zone: String,
    /// `pending`, `applied`, `cancelled` or `failed`.
    pub status: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// When it was applied, cancelled or failed, and by whom (the
    /// instance that applied it, or the person who cancelled it).
    pub finished_at_ms: Option<i64>,
    pub finished_by: Option<String>,
    pub applied_revision: Option<u64>,
    /// How long after it was due it was applied.
    pub late_ms: Option<i64>,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, env, key, change, base_version, due_at, time_zone, status, created_by, \
                       created_at, finished_at, finished_by, applied_revision, late_ms, error";

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn planned(row: &sqlx::any::AnyRow) -> Result<PlannedChange, StoreError> {
    Ok(PlannedChange {
        id: row.try_get("id")?,
        env: row.try_get("env")?,
        key: row.try_get("key")?,
        change: row.try_get("change")?,
        base_version: row.try_get::<Option<i64>, _>("base_version")?.map(to_u64),
        due_at_ms: row.try_get("due_at")?,
        time_zone: row.try_get("time_zone")?,
        status: row.try_get("status")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at")?,
        finished_at_ms: row.try_get("finished_at")?,
        finished_by: row.try_get("finished_by")?,
        applied_revision: row
            .try_get::<Option<i64>, _>("applied_revision")?
            .map(to_u64),
        late_ms: row.try_get("late_ms")?,
        error: row.try_get("error")?,
    })
}

/// What a new planned change is.
#[derive(Debug, Clone)]
pub struct NewPlannedChange<'a> {
    pub env: &'a str,
    pub key: &'a str,
    pub change: &'a str,
    pub base_version: Option<u64>,
    pub due_at_ms: i64,
    pub time_zone: &'a str,
    pub created_by: &'a str,
}

/// What a write also does in its transaction: mark the planned change it
/// applies applied, or move the release plan it steps to its new state.
pub(crate) enum Claim {
    Planned {
        id: i64,
        instance: String,
        due_at_ms: i64,
    },
    Release(ReleaseStep),
}

/// A release plan's compare-and-set: from `from_version` to the new
/// state, status and decisions.
#[derive(Debug, Clone)]
pub struct ReleaseStep {
    pub env: String,
    pub key: String,
    pub from_version: u64,
    pub state: String,
    pub status: String,
    pub decisions: String,
}

impl Claim {
    /// Marks the change applied at `revision` (or steps the release);
    /// fails with [`StoreError::NotPending`] (rolling the write back) when
    /// it is not pending any more (or the release moved meanwhile).
    pub(crate) async fn mark_applied(
        &self,
        tx: &mut Transaction<'static, Any>,
        revision: u64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            Claim::Planned {
                id,
                instance,
                due_at_ms,
            } => {
                let done = sqlx::query(
                    "UPDATE planned_changes SET status = 'applied', finished_at = $1, finished_by = $2, \
                     applied_revision = $3, late_ms = $4 WHERE id = $5 AND status = 'pending'",
                )
                .bind(at_ms)
                .bind(instance)
                .bind(i64::try_from(revision).unwrap_or(i64::MAX))
                .bind((at_ms - due_at_ms).max(0))
                .bind(id)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                let status = sqlx::query("SELECT status FROM planned_changes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|row| row.try_get::<String, _>("status"))
                    .transpose()?
                    .unwrap_or_else(|| "gone".to_owned());
                Err(StoreError::NotPending { id: *id, status })
            }
            Claim::Release(step) => {
                if step_release(tx, step, at_ms).await? {
                    Ok(())
                } else {
                    Err(StoreError::NotPending {
                        id: 0,
                        status: "moved meanwhile".into(),
                    })
                }
            }
        }
    }
}

async fn step_release(
    conn: &mut sqlx::AnyConnection,
    step: &ReleaseStep,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE release_plans SET state = $1, status = $2, decisions = $3, version = version + 1, \
         updated_at = $4 WHERE env = $5 AND key = $6 AND version = $7",
    )
    .bind(&step.state)
    .bind(&step.status)
    .bind(&step.decisions)
    .bind(at_ms)
    .bind(&step.env)
    .bind(&step.key)
    .bind(i64::try_from(step.from_version).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A release plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRelease {
    pub env: String,
    pub key: String,
    pub plan: String,
    pub state: String,
    pub status: String,
    pub decisions: String,
    pub version: u64,
    pub created_by: String,
    pub updated_at_ms: i64,
}

fn release(row: &sqlx::any::AnyRow) -> Result<StoredRelease, StoreError> {
    Ok(StoredRelease {
        env: row.try_get("env")?,
        key: row.try_get("key")?,
        plan: row.try_get("plan")?,
        state: row.try_get("state")?,
        status: row.try_get("status")?,
        decisions: row.try_get("decisions")?,
        version: to_u64(row.try_get("version")?),
        created_by: row.try_get("created_by")?,
        updated_at_ms: row.try_get("updated_at")?,
    })
}

const RELEASE_COLUMNS: &str =
    "env, key, plan, state, status, decisions, version, created_by, updated_at";

impl Store {
    /// Creates or replaces the release plan of flag `key`; with
    /// `expected_version`, only over that version (0: only a new one).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_release(
        &self,
        env: &str,
        key: &str,
        plan: &str,
        state: &str,
        status: &str,
        created_by: &str,
        expected_version: Option<u64>,
    ) -> Result<StoredRelease, StoreError> {
        self.revision(env).await?;
        let mut tx = self.pool().begin().await?;
        let result = async {
            let current = sqlx::query("SELECT version FROM release_plans WHERE env = $1 AND key = $2")
                .bind(env)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get::<i64, _>("version"))
                .transpose()?
                .map(to_u64);
            if let Some(expected) = expected_version
                && current.unwrap_or(0) != expected
            {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    current,
                });
            }
            let version = i64::try_from(current.map_or(1, |v| v + 1)).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO release_plans (env, key, plan, state, status, decisions, version, \
                 created_by, updated_at) VALUES ($1, $2, $3, $4, $5, '[]', $6, $7, $8) \
                 ON CONFLICT (env, key) DO UPDATE SET plan = excluded.plan, state = excluded.state, \
                 status = excluded.status, decisions = excluded.decisions, version = excluded.version, \
                 created_by = excluded.created_by, updated_at = excluded.updated_at",
            )
            .bind(env)
            .bind(key)
            .bind(plan)
            .bind(state)
            .bind(status)
            .bind(version)
            .bind(created_by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        .await;
        finish(tx, result).await?;
        self.release(env, key)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                env: env.to_owned(),
                kind: "release plan",
                key: key.to_owned(),
            })
    }

    /// The release plan of flag `key`, if any.
    pub async fn release(&self, env: &str, key: &str) -> Result<Option<StoredRelease>, StoreError> {
        self.revision(env).await?;
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM release_plans WHERE env = $1 AND key = $2"
        ))
        .bind(env)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(release).transpose()
    }

    /// Every release plan with `status`, across environments.
    pub async fn releases_with_status(
        &self,
        status: &str,
    ) -> Result<Vec<StoredRelease>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM release_plans WHERE status = $1 ORDER BY env, key"
        ))
        .bind(status)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(release).collect()
    }

    /// Moves a release plan without writing its flag (a pause, a
    /// completion, a person resuming it): whether it was still at
    /// `step.from_version`.
    pub async fn step_release(&self, step: &ReleaseStep) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        step_release(&mut conn, step, now_ms()).await
    }

    /// Writes `flag` (the release's next percentage) by `actor` and moves
    /// the release in the same transaction; `Ok(None)` when the release
    /// had moved meanwhile (another instance took the step): nothing was
    /// written.
    pub async fn step_release_with_flag(
        &self,
        step: ReleaseStep,
        flag: &guidon_engine::model::Flag,
        expected_flag_version: Option<u64>,
        actor: &str,
    ) -> Result<Option<Committed>, StoreError> {
        let (env, key) = (step.env.clone(), step.key.clone());
        let claim = Claim::Release(step);
        match self
            .write_claiming(
                &env,
                &key,
                Edit::Upsert(Definition::Flag(flag.clone())),
                expected_flag_version,
                actor,
                Some(&claim),
            )
            .await
        {
            Ok(committed) => Ok(Some(committed)),
            Err(StoreError::NotPending { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Store {
    /// Stores a new pending planned change.
    pub async fn plan_change(
        &self,
        new: NewPlannedChange<'_>,
    ) -> Result<PlannedChange, StoreError> {
        self.revision(new.env).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO planned_changes (env, key, change, base_version, due_at, time_zone, \
             status, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) \
             RETURNING {COLUMNS}"
        ))
        .bind(new.env)
        .bind(new.key)
        .bind(new.change)
        .bind(
            new.base_version
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        )
        .bind(new.due_at_ms)
        .bind(new.time_zone)
        .bind(new.created_by)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        planned(&row)
    }

    /// An environment's planned changes, newest first (at most `limit`).
    pub async fn planned_changes(
        &self,
        env: &str,
        limit: u32,
    ) -> Result<Vec<PlannedChange>, StoreError> {
        self.revision(env).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM planned_changes WHERE env = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(env)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(planned).collect()
    }

    /// One planned change of `env`.
    pub async fn planned_change(&self, env: &str, id: i64) -> Result<PlannedChange, StoreError> {
        self.revision(env).await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM planned_changes WHERE env = $1 AND id = $2"
        ))
        .bind(env)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => planned(&row),
            None => Err(StoreError::UnknownPlannedChange {
                env: env.to_owned(),
                id,
            }),
        }
    }

    /// Cancels a pending planned change; [`StoreError::NotPending`] once
    /// it was applied, failed or cancelled.
    pub async fn cancel_planned_change(
        &self,
        env: &str,
        id: i64,
        by: &str,
    ) -> Result<PlannedChange, StoreError> {
        let current = self.planned_change(env, id).await?;
        let done = sqlx::query(
            "UPDATE planned_changes SET status = 'cancelled', finished_at = $1, finished_by = $2 \
             WHERE id = $3 AND env = $4 AND status = 'pending'",
        )
        .bind(now_ms())
        .bind(by)
        .bind(id)
        .bind(env)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            let now = self.planned_change(env, id).await.unwrap_or(current);
            return Err(StoreError::NotPending {
                id,
                status: now.status,
            });
        }
        self.planned_change(env, id).await
    }

    /// Pending planned changes due at `now_ms`, oldest due first, across
    /// environments (at most `limit`).
    pub async fn due_planned_changes(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<PlannedChange>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM planned_changes WHERE status = 'pending' AND due_at <= $1 \
             ORDER BY due_at, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(planned).collect()
    }

    /// Applies `planned` as the write of `edit` (a flag or its deletion)
    /// by `actor`, marking it applied by `instance` in the same
    /// transaction. `Ok(None)` when it was not pending any more (another
    /// instance applied it, or it was cancelled): nothing was written.
    pub async fn apply_planned_change(
        &self,
        planned: &PlannedChange,
        edit: Edit,
        expected_version: Option<u64>,
        actor: &str,
        instance: &str,
    ) -> Result<Option<Committed>, StoreError> {
        if let Edit::Upsert(Definition::Segment(_)) | Edit::Delete(Kind::Segment) = &edit {
            return Err(StoreError::InvalidQuery(
                "a planned change is a change to a flag".into(),
            ));
        }
        let claim = Claim::Planned {
            id: planned.id,
            instance: instance.to_owned(),
            due_at_ms: planned.due_at_ms,
        };
        match self
            .write_claiming(
                &planned.env,
                &planned.key,
                edit,
                expected_version,
                actor,
                Some(&claim),
            )
            .await
        {
            Ok(committed) => Ok(Some(committed)),
            Err(StoreError::NotPending { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks a pending planned change failed with `error` (it could not be
    /// applied: invalid now, or the flag changed since it was planned).
    /// Whether it was still pending.
    pub async fn fail_planned_change(
        &self,
        id: i64,
        instance: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let result = async {
            let done = sqlx::query(
                "UPDATE planned_changes SET status = 'failed', finished_at = $1, finished_by = $2, \
                 error = $3 WHERE id = $4 AND status = 'pending'",
            )
            .bind(now_ms())
            .bind(instance)
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }
        .await;
        finish(tx, result).await
    }
}
