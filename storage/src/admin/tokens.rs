//! Creating and revoking access tokens: the rules are the catalog's (`catalog/tokens.rs`);
//! here a change is made under the write lock and recorded before it is answered.

use super::{Admin, AdminError};
use crate::catalog::tokens::{self, TokenRecord, TokenSpec, hash_token, new_token};

impl Admin {
    /// Creates a token as `spec` says and returns it (the only time it is shown) with its
    /// record. `by_admin` says whether an admin token asked; without one, only the first
    /// admin token may be created, while no token exists.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        by_admin: bool,
    ) -> Result<(String, TokenRecord), AdminError> {
        tokens::check_spec(&spec)?;
        let token = new_token()?;
        let _lake_guard = self.lake.lock().await;
        let now = self.clock.now();
        let hash = hash_token(&token);
        let record = self
            .change_catalog(|current| {
                let (tokens, record) = tokens::add(
                    &current.tokens,
                    current.next_token_id,
                    spec,
                    hash,
                    by_admin,
                    now,
                )?;
                let mut next = current.clone();
                next.tokens = tokens;
                next.next_token_id = record.id + 1;
                Ok((next, record))
            })
            .await?;
        Ok((token, record))
    }

    /// Revokes the token numbered `id`: requests with it fail from now on. The last admin
    /// token that does not expire goes only with the last token, and with `keep_one` (a
    /// server listening beyond loopback) the last token does not go at all.
    pub async fn delete_token(&self, id: u64, keep_one: bool) -> Result<TokenRecord, AdminError> {
        let _lake_guard = self.lake.lock().await;
        self.change_catalog(|current| {
            let (tokens, removed) = tokens::remove(&current.tokens, id, keep_one)?;
            let mut next = current.clone();
            next.tokens = tokens;
            Ok((next, removed))
        })
        .await
    }
}
