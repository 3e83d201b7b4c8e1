//! Access tokens: who may read or write which databases, and who may administer the server.
//! The rules live here, over the catalog's list of tokens; `admin/tokens.rs` records changes.
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

use super::names::{NameError, validate_database_name};

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

/// Why a token was not created, deleted or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// What was asked breaks a rule (an empty scope, an expiring first token, the last
    /// lasting admin token).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("no token has id {0}")]
    NotFound(u64),
    /// Only an admin token may do this (or, while no token exists, only the first admin
    /// token may be made).
    #[error("{0}")]
    Unauthorized(String),
    #[error("no random numbers for a token: {0}")]
    Random(String),
}

/// Tokens of a catalog, shared between its snapshots.
pub type Tokens = Arc<[TokenRecord]>;

/// A new random token.
pub fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Checks what a new token may do: an admin token or some databases, by valid names.
pub fn check_spec(spec: &TokenSpec) -> Result<(), TokenError> {
    if !spec.admin && spec.read.is_empty() && spec.write.is_empty() {
        return Err(TokenError::Invalid(
            "a token must be an admin token or name databases to read or write".into(),
        ));
    }
    for db in spec.read.iter().chain(&spec.write) {
        if db != ANY_DATABASE {
            validate_database_name(db)?;
        }
    }
    Ok(())
}

/// The record of `token` in `tokens`, if it is one of them.
pub fn find(tokens: &Tokens, token: &str) -> Option<TokenRecord> {
    let hash = hash_token(token);
    tokens.iter().find(|t| t.hash == hash).cloned()
}

/// `tokens` with a token hashed `hash`, made at `now` as `spec` says, and its record.
/// `by_admin` says whether an admin token asked; without one, only the first admin token may
/// be created, while no token exists, and it may not expire (once it had, no one could
/// administer the server, nor make a new token). The token gets id `next_id` (or, for a
/// catalog from before ids were counted, one past the largest), never one a deleted token had:
/// a retried delete must not revoke another token.
pub fn add(
    tokens: &Tokens,
    next_id: u64,
    spec: TokenSpec,
    hash: String,
    by_admin: bool,
    now: i64,
) -> Result<(Tokens, TokenRecord), TokenError> {
    let first = tokens.is_empty();
    if !(by_admin || first && spec.admin) {
        return Err(TokenError::Unauthorized(if first {
            "the first token must be an admin token (--admin)".into()
        } else {
            "creating a token needs an admin token once any token exists".into()
        }));
    }
    if first && spec.valid_for.is_some() {
        return Err(TokenError::Invalid(
            "the first admin token cannot expire; create it without an expiry, then tokens \
             that expire with it"
                .into(),
        ));
    }
    let record = TokenRecord {
        id: tokens
            .iter()
            .map(|t| t.id + 1)
            .chain([next_id, 1])
            .max()
            .expect("not empty"),
        name: spec.name,
        hash,
        admin: spec.admin,
        read: spec.read,
        write: spec.write,
        created: now,
        expires: spec.valid_for.map(|v| now.saturating_add(v)),
    };
    let next = tokens
        .iter()
        .cloned()
        .chain(std::iter::once(record.clone()))
        .collect();
    Ok((next, record))
}

/// `tokens` without the token numbered `id`, and its record. The last admin token that does
/// not expire goes only with the last token (then the server is open again, as before the
/// first token): without one, no one could create or revoke tokens any more, sooner or later.
/// `keep_one` (a server listening beyond loopback) refuses to remove the last token at all:
/// without tokens such a server would serve everyone.
pub fn remove(
    tokens: &Tokens,
    id: u64,
    keep_one: bool,
) -> Result<(Tokens, TokenRecord), TokenError> {
    let Some(removed) = tokens.iter().find(|t| t.id == id).cloned() else {
        return Err(TokenError::NotFound(id));
    };
    if keep_one && tokens.len() == 1 {
        return Err(TokenError::Invalid(format!(
            "token {id} is the last token, and the server listens beyond loopback: without              tokens it would serve everyone; create another admin token first (or restart on              a loopback address)"
        )));
    }
    let lasting_admin = |t: &TokenRecord| t.admin && t.expires.is_none();
    let others = tokens.iter().filter(|t| t.id != id);
    let lasting_left = others.clone().filter(|t| lasting_admin(t)).count();
    if lasting_admin(&removed) && lasting_left == 0 && others.count() > 0 {
        return Err(TokenError::Invalid(format!(
            "token {id} is the last admin token that does not expire; create another one \
             first, or delete the other tokens"
        )));
    }
    let next = tokens.iter().filter(|t| t.id != id).cloned().collect();
    Ok((next, removed))
}
