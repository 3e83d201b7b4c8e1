use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::*;
use crate::catalog::{TOKEN_PREFIX, TokenSpec, hash_token};
use crate::lake::store::ObjectStorage;
use crate::test_util::{HOUR, batch, faulty, file_storage, open};
use crate::{Clock, FreezeRule, RetentionSummary, WriteBuffer, WriteBufferConfig, WriteOptions};

const DAY: i64 = 24 * HOUR;
/// 2026-01-10T00:00:00Z
const NOW: i64 = 1_768_003_200_000_000_000;

/// A buffer whose clock reads `now`, with files replaced or dropped deleted after an hour.
async fn open_at(
    dir: &std::path::Path,
    storage: ObjectStorage,
    now: &Arc<AtomicI64>,
) -> WriteBuffer {
    let mut config = WriteBufferConfig::new(dir.join("wal"));
    config.clock = Clock::manual(now.clone());
    config.replaced_file_grace = Duration::from_secs(3600);
    WriteBuffer::open(config, storage).await.unwrap().0
}

async fn write(wb: &WriteBuffer, db: &str, lp: &str) {
    let out = wb
        .write(db, batch(lp), WriteOptions::default())
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
}

/// `cpu` rows at each of `days_ago` (one host each), as line protocol.
fn rows(days_ago: &[i64]) -> String {
    days_ago
        .iter()
        .map(|d| format!("cpu,host=h{d} usage={d} {}\n", NOW - d * DAY))
        .collect()
}

fn parquet_count(dir: &std::path::Path) -> usize {
    walk(&dir.join("lake"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

#[tokio::test]
async fn databases_are_created_once_with_their_retention_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    wb.create_database("metrics", Retention::parse("30d").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        wb.create_database("metrics", None).await,
        Err(AdminError::DatabaseExists(_))
    ));
    assert!(matches!(
        wb.create_database("bad name", None).await,
        Err(AdminError::InvalidName(_))
    ));
    assert!(matches!(
        wb.set_retention("nope", None).await,
        Err(AdminError::DatabaseNotFound(_))
    ));
    wb.set_retention("metrics", Retention::parse("7d").unwrap())
        .await
        .unwrap();
    drop(wb);
    // the empty database and its changed retention came back from the catalog alone
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    let catalog = wb.catalog();
    let db = catalog.database("metrics").unwrap();
    assert_eq!(db.retention.as_ref().unwrap().to_string(), "7d");
    assert_eq!(
        catalog.retention_cutoff("metrics", NOW),
        Some(NOW - 7 * DAY)
    );
}

/// An administrative change whose catalog cannot be written is taken back: the caller's error
/// means it did not happen, and a retry once the store is back succeeds.
#[tokio::test]
async fn a_change_the_store_refuses_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let (store, storage) = faulty(dir.path());
    let wb = open_at(dir.path(), storage, &now).await;
    wb.create_database("kept", Retention::parse("30d").unwrap())
        .await
        .unwrap();
    store.fail_next(u64::MAX, "catalog.json");
    assert!(matches!(
        wb.create_database("metrics", None).await,
        Err(AdminError::Store(_))
    ));
    assert!(wb.catalog().database("metrics").is_none());
    assert!(wb.set_retention("kept", None).await.is_err());
    let kept = wb.catalog().database("kept").unwrap().retention.clone();
    assert_eq!(kept.unwrap().to_string(), "30d");
    let spec = TokenSpec {
        admin: true,
        ..Default::default()
    };
    assert!(wb.create_token(spec.clone(), false).await.is_err());
    assert!(wb.tokens().is_empty());

    store.fail_next(0, "");
    wb.create_database("metrics", None).await.unwrap();
    wb.set_retention("kept", None).await.unwrap();
    wb.create_token(spec, false).await.unwrap();
    assert_eq!(wb.tokens().len(), 1);
}

/// A token may expire; the server keeps an admin token that does not, so that it can always
/// be administered.
#[tokio::test]
async fn tokens_expire_but_one_admin_token_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    let admin = |valid_for| TokenSpec {
        admin: true,
        valid_for,
        ..TokenSpec::default()
    };
    let e = wb.create_token(admin(Some(HOUR)), false).await.unwrap_err();
    assert!(
        e.to_string().contains("first admin token cannot expire"),
        "{e}"
    );
    let (_, lasting) = wb.create_token(admin(None), false).await.unwrap();
    assert_eq!(lasting.expires, None);
    let (reader, record) = wb
        .create_token(
            TokenSpec {
                read: vec!["db".into()],
                valid_for: Some(HOUR),
                ..TokenSpec::default()
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(record.expires, Some(NOW + HOUR));
    let (_, expiring_admin) = wb.create_token(admin(Some(DAY)), true).await.unwrap();
    // the expiry survives a restart
    drop(wb);
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    let record = wb.authenticate(&reader).unwrap();
    assert!(!record.expired(NOW + HOUR - 1) && record.expired(NOW + HOUR));
    // an admin token that expires does not stand in for the one that does not
    let e = wb.delete_token(lasting.id, false).await.unwrap_err();
    assert!(e.to_string().contains("does not expire"), "{e}");
    wb.delete_token(expiring_admin.id, false).await.unwrap();
    wb.delete_token(record.id, false).await.unwrap();
    wb.delete_token(lasting.id, false).await.unwrap();
    assert!(!wb.has_tokens());
}

/// Taking a change back keeps what writes added between the change and its failed record.
#[test]
fn taking_back_keeps_what_writes_added_meanwhile() {
    let db = |name: &str, retention: Option<&str>, tables: &[&str]| {
        let mut d = DatabaseSchema {
            name: name.into(),
            retention: retention.and_then(|r| Retention::parse(r).unwrap()),
            ..DatabaseSchema::default()
        };
        for t in tables {
            d.tables
                .insert((*t).into(), Arc::new(crate::catalog::TableSchema::new(t)));
        }
        (Arc::<str>::from(name), Arc::new(d))
    };
    let snapshot = |dbs: Vec<(Arc<str>, Arc<DatabaseSchema>)>| CatalogSnapshot {
        databases: dbs.into_iter().collect(),
        ..CatalogSnapshot::default()
    };
    let before = snapshot(vec![db("a", Some("30d"), &["cpu"])]);
    // the change: a's retention 7d, databases b and c created
    let ours = snapshot(vec![
        db("a", Some("7d"), &["cpu"]),
        db("b", None, &[]),
        db("c", None, &[]),
    ]);
    // meanwhile writes put a table in a and one in c, and created d
    let current = snapshot(vec![
        db("a", Some("7d"), &["cpu", "mem"]),
        db("b", None, &[]),
        db("c", None, &["disk"]),
        db("d", None, &["net"]),
    ]);
    let back = take_back(&before, &ours, &current);
    let a = back.database("a").unwrap();
    assert_eq!(a.retention.as_ref().unwrap().to_string(), "30d");
    assert_eq!(a.tables.len(), 2);
    assert!(back.database("b").is_none());
    assert!(back.table("c", "disk").is_some());
    assert!(back.table("d", "net").is_some());
}

#[tokio::test]
async fn retention_drops_expired_files_and_hours_and_deletes_the_files_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    write(&wb, "db", &rows(&[40, 20, 5])).await;
    wb.persist(FreezeRule::All).await.unwrap();
    write(&wb, "db", &rows(&[39, 1])).await;
    assert_eq!(parquet_count(dir.path()), 3);
    assert_eq!(wb.buffer_rows(), 2);

    // no retention: nothing goes
    assert_eq!(
        wb.enforce_retention().await.unwrap(),
        RetentionSummary::default()
    );
    wb.set_retention("db", Retention::parse("30d").unwrap())
        .await
        .unwrap();
    let summary = wb.enforce_retention().await.unwrap();
    assert_eq!(
        summary,
        RetentionSummary {
            files_expired: 1,
            partitions_expired: 1,
        }
    );
    assert_eq!(wb.buffer_rows(), 1);
    let lake = wb.lake();
    let kept: Vec<i64> = lake
        .table_files("db", "cpu")
        .iter()
        .map(|f| f.min_time)
        .collect();
    assert_eq!(kept, vec![NOW - 20 * DAY, NOW - 5 * DAY]);
    // the expired file is still on disk (a query may be reading it) until the grace ends
    assert_eq!(parquet_count(dir.path()), 3);
    assert_eq!(wb.compact(1 << 30).await.unwrap().files_deleted, 0);
    now.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(wb.compact(1 << 30).await.unwrap().files_deleted, 1);
    assert_eq!(parquet_count(dir.path()), 2);
    assert!(wb.lake().pending_deletes.is_empty());

    // time moves on: the 20-day-old file expires too
    now.fetch_add(11 * DAY, Ordering::SeqCst);
    assert_eq!(wb.enforce_retention().await.unwrap().files_expired, 1);
}

#[tokio::test]
async fn a_deleted_database_stays_deleted_after_a_crash_and_its_name_can_be_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    write(&wb, "gone", &rows(&[3])).await;
    wb.persist(FreezeRule::All).await.unwrap();
    write(&wb, "gone", &rows(&[2])).await;
    write(&wb, "kept", &rows(&[2])).await;
    assert_eq!(parquet_count(dir.path()), 1);

    wb.delete_database("gone").await.unwrap();
    assert!(wb.catalog().database("gone").is_none());
    assert!(wb.table_buffer("gone", "cpu").is_none());
    assert!(wb.lake().table_files("gone", "cpu").is_empty());
    assert_eq!(wb.buffer_rows(), 1);
    assert!(matches!(
        wb.delete_database("gone").await,
        Err(AdminError::DatabaseNotFound(_))
    ));
    // a write after the delete starts the database afresh
    write(&wb, "gone", &rows(&[1])).await;
    // a crash: the WAL still holds the writes before the delete
    std::mem::forget(wb);
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    assert_eq!(wb.table_buffer("gone", "cpu").unwrap().rows(), 1);
    assert_eq!(wb.table_buffer("kept", "cpu").unwrap().rows(), 1);
    assert!(wb.lake().table_files("gone", "cpu").is_empty());
    now.fetch_add(2 * HOUR, Ordering::SeqCst);
    wb.compact(1 << 30).await.unwrap();
    assert_eq!(parquet_count(dir.path()), 0);
}

#[tokio::test]
async fn a_deleted_table_goes_alone_and_its_writes_do_not_replay() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    write(
        &wb,
        "db",
        &format!("{}mem,host=a used=1 {NOW}\n", rows(&[2])),
    )
    .await;
    assert!(matches!(
        wb.delete_table("db", "disk").await,
        Err(AdminError::TableNotFound { .. })
    ));
    wb.delete_table("db", "cpu").await.unwrap();
    let catalog = wb.catalog();
    assert!(catalog.table("db", "cpu").is_none());
    assert!(catalog.table("db", "mem").is_some());
    std::mem::forget(wb);
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    assert!(wb.catalog().table("db", "cpu").is_none());
    assert_eq!(wb.table_buffer("db", "mem").unwrap().rows(), 1);
    assert!(wb.table_buffer("db", "cpu").is_none());
}

#[tokio::test]
async fn points_older_than_the_retention_period_are_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let wb = open_at(dir.path(), file_storage(dir.path()), &now).await;
    wb.create_database("db", Retention::parse("7d").unwrap())
        .await
        .unwrap();
    let out = wb
        .write("db", batch(&rows(&[1, 8, 2])), WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(out.accepted_points, 2);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].line, 2);
    assert!(
        out.rejected[0].message.contains(
            "time 2026-01-02T00:00:00Z is older than the retention period of database 'db' \
             (7d, so before 2026-01-03T00:00:00Z)"
        ),
        "{}",
        out.rejected[0].message
    );
    // refusing partial writes, nothing is stored
    let all_or_nothing = WriteOptions {
        accept_partial: false,
        ..WriteOptions::default()
    };
    let out = wb
        .write("db", batch(&rows(&[3, 9])), all_or_nothing)
        .await
        .unwrap();
    assert!(out.all_refused);
    assert_eq!(wb.buffer_rows(), 2);
}

fn spec(admin: bool, read: &[&str], write: &[&str]) -> TokenSpec {
    TokenSpec {
        name: String::new(),
        admin,
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
        valid_for: None,
    }
}

#[tokio::test]
async fn the_first_admin_token_needs_none_and_later_ones_need_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
    assert!(!wb.has_tokens());
    assert!(matches!(
        wb.create_token(spec(false, &["db"], &[]), false).await,
        Err(AdminError::Token(TokenError::Unauthorized(m))) if m.contains("first token must be an admin")
    ));
    let (admin, record) = wb.create_token(spec(true, &[], &[]), false).await.unwrap();
    assert!(
        admin.starts_with(TOKEN_PREFIX) && admin.len() > 40,
        "{admin}"
    );
    assert!(wb.has_tokens());
    assert_eq!(wb.authenticate(&admin), Some(record));
    assert_eq!(wb.authenticate("apiv3_wrong"), None);
    assert!(matches!(
        wb.create_token(spec(true, &[], &[]), false).await,
        Err(AdminError::Token(TokenError::Unauthorized(_)))
    ));
    assert!(matches!(
        wb.create_token(spec(false, &[], &[]), true).await,
        Err(AdminError::Token(TokenError::Invalid(_)))
    ));
    assert!(matches!(
        wb.create_token(spec(false, &["a.b"], &[]), true).await,
        Err(AdminError::Token(TokenError::InvalidName(_)))
    ));
    let (reader, _) = wb
        .create_token(spec(false, &["a", "b"], &["b"]), true)
        .await
        .unwrap();
    let (anything, _) = wb
        .create_token(spec(false, &["*"], &[]), true)
        .await
        .unwrap();
    drop(wb);

    // kept hashed, and only hashed
    let catalog = std::fs::read_to_string(dir.path().join("lake/catalog.json")).unwrap();
    assert!(!catalog.contains(&admin) && catalog.contains(&hash_token(&admin)));
    let (wb, _) = open(dir.path(), file_storage(dir.path())).await;
    let r = wb.authenticate(&reader).unwrap();
    assert!(r.may_read("a") && r.may_read("b") && !r.may_read("c"));
    assert!(r.may_write("b") && !r.may_write("a"));
    assert_eq!(r.readable(), Some(&["a".to_string(), "b".to_string()][..]));
    let a = wb.authenticate(&admin).unwrap();
    assert!(a.admin && a.may_read("x") && a.may_write("x") && a.readable().is_none());
    let any = wb.authenticate(&anything).unwrap();
    assert!(any.may_read("x") && !any.may_write("x") && any.readable().is_none());

    // revoking: never the last admin token while others remain
    assert!(matches!(
        wb.delete_token(a.id, false).await,
        Err(AdminError::Token(TokenError::Invalid(_)))
    ));
    wb.delete_token(r.id, false).await.unwrap();
    assert_eq!(wb.authenticate(&reader), None);
    assert!(matches!(
        wb.delete_token(r.id, false).await,
        Err(AdminError::Token(TokenError::NotFound(_)))
    ));
    wb.delete_token(any.id, false).await.unwrap();
    wb.delete_token(a.id, false).await.unwrap();
    assert!(!wb.has_tokens());
}

#[tokio::test]
async fn a_delete_the_store_refuses_changes_nothing_and_a_retry_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(NOW));
    let (store, storage) = faulty(dir.path());
    let wb = open_at(dir.path(), storage.clone(), &now).await;
    write(&wb, "db", &rows(&[3])).await;
    wb.persist(FreezeRule::All).await.unwrap();
    write(
        &wb,
        "db",
        &format!("{}mem,host=a used=1 {NOW}\n", rows(&[2])),
    )
    .await;
    store.fail_next(u64::MAX, "catalog.json");
    for delete in [
        wb.delete_table("db", "cpu").await,
        wb.delete_database("db").await,
    ] {
        assert!(matches!(delete, Err(AdminError::Store(_))), "{delete:?}");
        assert!(wb.catalog().table("db", "cpu").is_some());
        assert_eq!(wb.table_buffer("db", "cpu").unwrap().rows(), 1);
        assert_eq!(wb.lake().table_files("db", "cpu").len(), 1);
    }
    // writes to it are taken again
    write(&wb, "db", &rows(&[1])).await;
    // a crash now: everything comes back, as the catalog on the store still says
    std::mem::forget(wb);
    store.fail_next(0, "");
    let wb = open_at(dir.path(), storage.clone(), &now).await;
    assert_eq!(wb.table_buffer("db", "cpu").unwrap().rows(), 2);
    assert_eq!(wb.lake().table_files("db", "cpu").len(), 1);
    // and the retry deletes, for good
    wb.delete_table("db", "cpu").await.unwrap();
    std::mem::forget(wb);
    let wb = open_at(dir.path(), storage, &now).await;
    assert!(wb.catalog().table("db", "cpu").is_none());
    assert!(wb.table_buffer("db", "cpu").is_none());
    assert!(wb.lake().table_files("db", "cpu").is_empty());
    assert_eq!(wb.table_buffer("db", "mem").unwrap().rows(), 1);
}
