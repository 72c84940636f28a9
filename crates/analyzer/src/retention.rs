//! Image retention: annotated images in `posture_image` older than an age
//! (`--image-retention`) and/or beyond the newest N per camera
//! (`--image-keep`) are deleted in the background, in small batches so the
//! writer is never held up long. Rows in `posture_log` are always kept.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::db::{Database, DbError, Pool};
use crate::record::row_time;

/// Which images to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete images analysed longer ago than this.
    pub max_age: Option<Duration>,
    /// Keep only this many newest images per camera.
    pub keep_per_camera: Option<u64>,
}

impl Retention {
    /// Whether nothing is ever deleted.
    pub fn is_off(&self) -> bool {
        self.max_age.is_none() && self.keep_per_camera.is_none()
    }
}

/// Images deleted per statement.
const BATCH: i64 = 500;

/// Parses an age like `30d`, `12h`, `90m`, `45s` or `2w`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (s, m, h, d, w), e.g. 30d"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    if n == 0 {
        return Err(format!("{text:?}: an age of zero would delete every image"));
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Deletes the images `policy` does not keep, as of `now`; returns how many.
pub async fn prune(
    db: &mut Database,
    policy: &Retention,
    now: jiff::Timestamp,
) -> Result<u64, DbError> {
    db.ensure_schema().await?;
    let target = db.target().to_string();
    let err = |source| DbError::Query {
        target: target.clone(),
        source,
    };
    let mut deleted = 0;
    if let Some(age) = policy.max_age {
        let age = jiff::SignedDuration::try_from(age).unwrap_or(jiff::SignedDuration::MAX);
        let cutoff = row_time(now.checked_sub(age).unwrap_or(jiff::Timestamp::MIN));
        let sql = "DELETE FROM posture_image WHERE frame_id IN
            (SELECT frame_id FROM posture_image WHERE analyzed_time < {cutoff} LIMIT {batch})";
        deleted += batches(db.pool(), sql, Some(&cutoff), None)
            .await
            .map_err(err)?;
    }
    if let Some(keep) = policy.keep_per_camera {
        let sql = "DELETE FROM posture_image WHERE frame_id IN
            (SELECT frame_id FROM (SELECT frame_id, ROW_NUMBER() OVER
                (PARTITION BY pi_id ORDER BY analyzed_time DESC, frame_id DESC) AS rn
             FROM posture_image) ranked WHERE rn > {keep} LIMIT {batch})";
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        deleted += batches(db.pool(), sql, None, Some(keep))
            .await
            .map_err(err)?;
    }
    Ok(deleted)
}

/// Runs a `DELETE … LIMIT batch` until it deletes nothing.
async fn batches(
    pool: &Pool,
    template: &str,
    cutoff: Option<&str>,
    keep: Option<i64>,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let (cutoff_param, keep_param) = match pool {
            Pool::Sqlite(_) => ("?1", "?1"),
            Pool::Postgres(_) => ("$1::timestamptz", "$1"),
        };
        let sql = template
            .replace("{cutoff}", cutoff_param)
            .replace("{keep}", keep_param)
            .replace("{batch}", &BATCH.to_string());
        macro_rules! delete_on {
            ($p:expr) => {{
                let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                let q = match (cutoff, keep) {
                    (Some(c), _) => q.bind(c.to_string()),
                    (None, k) => q.bind(k.unwrap_or(i64::MAX)),
                };
                q.execute($p).await?.rows_affected()
            }};
        }
        let n = match pool {
            Pool::Sqlite(p) => delete_on!(p),
            Pool::Postgres(p) => delete_on!(p),
        };
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
        // Let the writer in between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes every `every` in a background task until it is aborted; each
/// deleted image counts in `pruned`. Errors are logged and retried at the
/// next round (the database may be down).
pub fn spawn(
    mut db: Database,
    policy: Retention,
    every: Duration,
    pruned: Counter,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune(&mut db, &policy, jiff::Timestamp::now()).await {
                Ok(0) => {}
                Ok(n) => {
                    pruned.inc_by(n);
                    tracing::info!(
                        images = n,
                        "retention removed old annotated images (rows kept)"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "image retention failed; retrying at the next round")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(90 * 60)));
        assert!(parse_age("0d").is_err());
        assert!(parse_age("3 days").is_err());
        assert!(parse_age("d").is_err());
    }
}
