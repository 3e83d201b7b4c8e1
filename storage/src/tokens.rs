//! Access tokens: who may read or write which databases, and who may administer the server.
//!
//! A token is shown once, when it is created; the catalog keeps only its SHA-256 hash (tokens
//! are 256 random bits, so a plain hash is as good as a slow one), with what it may do. The
//! first admin token may be created without a token, as long as none exists: that is how a
//! fresh server gets its first administrator. A token may expire; the first admin token may
//! not, and an admin token that does not expire stays while any other token exists, so the
//! server can always be administered.

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::admin::AdminError;
use crate::catalog::validate_database_name;
use crate::write_buffer::WriteBuffer;

/// What every token starts with, so that one is easy to recognise (and to scan for in leaks).
pub const TOKEN_PREFIX: &str = "apiv3_";

/// A database name in a token's scope that stands for every database.
pub const ANY_DATABASE: &str = "*";

/// A token as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique for the life of the catalog.
    pub id: u64,
    /// A label for people (`sluice token create --name`); not secret.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// May do anything, administration included.
    #[serde(default)]
    pub admin: bool,
    /// Databases it may query (`*`: all).
    #[serde(default)]
    pub read: Vec<String>,
    /// Databases it may write to (`*`: all).
    #[serde(default)]
    pub write: Vec<String>,
    /// Unix nanoseconds.
    pub created: i64,
    /// When it stops working (Unix nanoseconds); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

impl TokenRecord {
    /// Whether it may query `db`.
    pub fn may_read(&self, db: &str) -> bool {
        self.admin || covers(&self.read, db)
    }

    /// Whether it may write to `db`.
    pub fn may_write(&self, db: &str) -> bool {
        self.admin || covers(&self.write, db)
    }

    /// Whether it has stopped working at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The databases it may query, or `None` for all of them.
    pub fn readable(&self) -> Option<&[String]> {
        (!self.admin && !self.read.iter().any(|d| d == ANY_DATABASE)).then_some(&self.read)
    }
}

fn covers(scope: &[String], db: &str) -> bool {
    scope.iter().any(|d| d == db || d == ANY_DATABASE)
}

/// What a new token may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSpec {
    pub name: String,
    pub admin: bool,
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// How long it works, in nanoseconds from its creation; `None`: until deleted.
    pub valid_for: Option<i64>,
}

/// The hex SHA-256 of `token`: what the catalog keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token.
fn new_token() -> Result<String, AdminError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AdminError::Internal(format!("no random numbers for a token: {e}")))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

impl WriteBuffer {
    /// Whether any token exists: then every request but liveness and metrics needs one.
    pub fn has_tokens(&self) -> bool {
        !self.shared.catalog.snapshot().tokens.is_empty()
    }

    /// The token `token` is, if the catalog knows it.
    pub fn authenticate(&self, token: &str) -> Option<TokenRecord> {
        let hash = hash_token(token);
        let catalog = self.shared.catalog.snapshot();
        catalog.tokens.iter().find(|t| t.hash == hash).cloned()
    }

    /// Creates a token as `spec` says and returns it (the only time it is shown) with its
    /// record. `by_admin` says whether an admin token asked; without one, only the first
    /// admin token may be created, while no token exists.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        by_admin: bool,
    ) -> Result<(String, TokenRecord), AdminError> {
        if !spec.admin && spec.read.is_empty() && spec.write.is_empty() {
            return Err(AdminError::InvalidToken(
                "a token must be an admin token or name databases to read or write".into(),
            ));
        }
        for db in spec.read.iter().chain(&spec.write) {
            if db != ANY_DATABASE {
                validate_database_name(db).map_err(AdminError::InvalidName)?;
            }
        }
        let token = new_token()?;
        let _lake_guard = self.lake_lock.lock().await;
        let now = self.now();
        let hash = hash_token(&token);
        let record = self
            .change_catalog(|current| {
                let first = current.tokens.is_empty();
                if !(by_admin || first && spec.admin) {
                    return Err(AdminError::Unauthorized(if first {
                        "the first token must be an admin token (--admin)".into()
                    } else {
                        "creating a token needs an admin token once any token exists".into()
                    }));
                }
                if first && spec.valid_for.is_some() {
                    // once it expired no one could administer the server, nor make a new one
                    return Err(AdminError::InvalidToken(
                        "the first admin token cannot expire; create it without an expiry, \
                         then tokens that expire with it"
                            .into(),
                    ));
                }
                let record = TokenRecord {
                    id: current.tokens.iter().map(|t| t.id + 1).max().unwrap_or(1),
                    name: spec.name,
                    hash,
                    admin: spec.admin,
                    read: spec.read,
                    write: spec.write,
                    created: now,
                    expires: spec.valid_for.map(|v| now.saturating_add(v)),
                };
                let mut next = current.clone();
                next.tokens = current
                    .tokens
                    .iter()
                    .cloned()
                    .chain(std::iter::once(record.clone()))
                    .collect();
                Ok((next, record))
            })
            .await?;
        Ok((token, record))
    }

    /// The tokens the catalog holds (their hashes, and what each may do).
    pub fn tokens(&self) -> Tokens {
        self.shared.catalog.snapshot().tokens.clone()
    }

    /// Revokes the token numbered `id`: requests with it fail from now on. The last admin
    /// token that does not expire goes only with the last token (then the server is open
    /// again, as before the first token).
    pub async fn delete_token(&self, id: u64) -> Result<TokenRecord, AdminError> {
        let _lake_guard = self.lake_lock.lock().await;
        self.change_catalog(|current| {
            let Some(removed) = current.tokens.iter().find(|t| t.id == id).cloned() else {
                return Err(AdminError::TokenNotFound(id));
            };
            // an admin token that does not expire stays while other tokens exist: without
            // one, no one could create or revoke tokens any more, sooner or later
            let lasting_admin = |t: &TokenRecord| t.admin && t.expires.is_none();
            let others = current.tokens.iter().filter(|t| t.id != id);
            let lasting_left = others.clone().filter(|t| lasting_admin(t)).count();
            if lasting_admin(&removed) && lasting_left == 0 && others.count() > 0 {
                return Err(AdminError::InvalidToken(format!(
                    "token {id} is the last admin token that does not expire; create another \
                     one first, or delete the other tokens"
                )));
            }
            let mut next = current.clone();
            next.tokens = current
                .tokens
                .iter()
                .filter(|t| t.id != id)
                .cloned()
                .collect();
            Ok((next, removed))
        })
        .await
    }
}

/// Tokens of a catalog, shared between its snapshots.
pub type Tokens = Arc<[TokenRecord]>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persister::tests::{file_storage, open};

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
            Err(AdminError::Unauthorized(m)) if m.contains("first token must be an admin")
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
            Err(AdminError::Unauthorized(_))
        ));
        assert!(matches!(
            wb.create_token(spec(false, &[], &[]), true).await,
            Err(AdminError::InvalidToken(_))
        ));
        assert!(matches!(
            wb.create_token(spec(false, &["a.b"], &[]), true).await,
            Err(AdminError::InvalidName(_))
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
            wb.delete_token(a.id).await,
            Err(AdminError::InvalidToken(_))
        ));
        wb.delete_token(r.id).await.unwrap();
        assert_eq!(wb.authenticate(&reader), None);
        assert!(matches!(
            wb.delete_token(r.id).await,
            Err(AdminError::TokenNotFound(_))
        ));
        wb.delete_token(any.id).await.unwrap();
        wb.delete_token(a.id).await.unwrap();
        assert!(!wb.has_tokens());
    }
}
