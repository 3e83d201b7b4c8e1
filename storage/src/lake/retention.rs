//! Retention: rows older than their database's retention period leave the buffer and the
//! catalog, and their files the object store after the grace period.
//!
//! Queries hide expired rows at once (they filter by each database's cutoff); a round here
//! makes it so on disk and in memory, for what expired whole: a buffered hour that ended
//! before the cutoff, a file whose newest row is older. Rows of hours and files that only
//! partly expired stay stored (hidden) until all of them have.

use std::sync::Arc;

use super::files::{LakeState, ParquetFile, PendingDelete};
use super::live::Lake;
use super::store;
use crate::buffer::Buffer;
use crate::catalog::Catalog;

/// What a retention round removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionSummary {
    /// Files whose rows had all expired, dropped from the catalog (deleted after the grace).
    pub files_expired: usize,
    /// Buffer partitions (table hours) whose rows had all expired.
    pub partitions_expired: usize,
}

/// Applies every database's retention period at `now`: drops the files whose rows all
/// expired from the catalog (their deletion follows after the grace period) and the expired
/// hours from the buffer.
pub async fn enforce(
    catalog: &Catalog,
    buffer: &Buffer,
    lake: &Lake,
    now: i64,
) -> Result<RetentionSummary, store::Error> {
    let cutoffs: Vec<(Arc<str>, i64)> = catalog
        .snapshot()
        .databases
        .iter()
        .filter_map(|(name, db)| Some((name.clone(), db.retention.as_ref()?.cutoff(now))))
        .collect();
    let mut summary = RetentionSummary::default();
    if cutoffs.is_empty() {
        return Ok(summary);
    }
    for (db, cutoff) in &cutoffs {
        summary.partitions_expired += buffer.drop_expired(db, *cutoff);
    }
    let expired = |lake: &LakeState| -> usize {
        lake.all_files()
            .filter(|((d, _), f)| {
                cutoffs
                    .iter()
                    .any(|(db, cutoff)| d == db && f.max_time < *cutoff)
            })
            .count()
    };
    if expired(&lake.state()) == 0 {
        return Ok(summary);
    }
    let _lake_guard = lake.lock().await;
    let mut state = (*lake.state()).clone();
    summary.files_expired = expired(&state);
    let delete_after = lake.delete_after(now);
    let keys: Vec<_> = state.files.keys().cloned().collect();
    for key in keys {
        let Some(&(_, cutoff)) = cutoffs.iter().find(|(db, _)| *db == key.0) else {
            continue;
        };
        let files = state.files.remove(&key).unwrap_or_default();
        let (gone, kept): (Vec<ParquetFile>, Vec<ParquetFile>) =
            files.iter().cloned().partition(|f| f.max_time < cutoff);
        state.delete_later(&gone, delete_after);
        if !kept.is_empty() {
            state.files.insert(key, kept.into());
        }
    }
    lake.record(&catalog.snapshot(), state).await?;
    tracing::info!(
        files = summary.files_expired,
        partitions = summary.partitions_expired,
        "dropped data past its database's retention period"
    );
    Ok(summary)
}

/// Deletes the files no longer listed (replaced, expired or deleted) whose grace period is
/// over at `now`, and drops them from the catalog's pending deletes. Returns how many went.
pub async fn delete_due_files(
    catalog: &Catalog,
    lake: &Lake,
    now: i64,
) -> Result<usize, store::Error> {
    let due: Vec<PendingDelete> = lake
        .state()
        .pending_deletes
        .iter()
        .filter(|p| p.delete_after <= now)
        .cloned()
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    for p in &due {
        lake.storage()
            .delete(&object_store::path::Path::from(p.path.as_str()))
            .await?;
    }
    let _lake_guard = lake.lock().await;
    let mut state = (*lake.state()).clone();
    state.pending_deletes.retain(|p| !due.contains(p));
    lake.record(&catalog.snapshot(), state).await?;
    Ok(due.len())
}
