//! The `keys` table: public JWK, sealed private half, state and timestamps.
//!
//! Rows decode here into the key vocabulary: `state` and `alg` into
//! [`KeyState`]/[`SigningAlg`], and the state with its columns into a
//! [`KeyLifecycle`], so a row that names an unknown state or holds what its
//! state may not (a revoked key with a private half, a current key without
//! one) is a [`StoreError::KeyRow`], never a string compared later.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::changes::notify_change;
use super::{AuditRecord, Store, StoreError};
use crate::keys::{KeyLifecycle, KeyState, SealedKey, SigningAlg, UnknownName};

/// One change to the keys table, applied with others in one transaction.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// A new key.
    Insert(KeyRow),
    /// New lifecycle (state, timestamps, dropped private half) of an
    /// existing key.
    Update(KeyRow),
    /// Remove the key entirely (pruned, or a successor that never signed).
    Delete(String),
}

/// One stored key. The private half, when the state has one, is sealed
/// (AEAD under the master key); only `keys::seal` can open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// JWS algorithm.
    pub alg: SigningAlg,
    /// The public JWK as JSON.
    pub public_jwk: String,
    /// When the key was generated or imported.
    pub created_at: i64,
    /// When the key first appeared in the JWKS.
    pub published_at: i64,
    /// State, its timestamps and (unless revoked) the sealed private half.
    pub lifecycle: KeyLifecycle,
}

impl KeyRow {
    /// The lifecycle state.
    pub fn state(&self) -> KeyState {
        self.lifecycle.state()
    }
}

/// Why a stored key row does not decode.
#[derive(Debug, thiserror::Error)]
pub enum KeyRowError {
    /// `state` or `alg` holds a name keyturn does not know.
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    /// A column the state requires is NULL.
    #[error("a {state} key must have {column}")]
    Missing {
        /// The row's state.
        state: KeyState,
        /// The NULL column.
        column: &'static str,
    },
    /// A revoked key still holds sealed private material.
    #[error("a revoked key must not hold sealed_private")]
    RevokedWithPrivate,
}

/// The lifecycle columns of a row.
struct Columns {
    state: KeyState,
    sealed_private: Option<Vec<u8>>,
    activated_at: Option<i64>,
    retired_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl Columns {
    fn of(lifecycle: &KeyLifecycle) -> Self {
        Self {
            state: lifecycle.state(),
            sealed_private: lifecycle.sealed().map(|s| s.as_bytes().to_vec()),
            activated_at: lifecycle.activated_at(),
            retired_at: lifecycle.retired_at(),
            revoked_at: lifecycle.revoked_at(),
        }
    }

    fn lifecycle(self) -> Result<KeyLifecycle, KeyRowError> {
        let state = self.state;
        let missing = |column| KeyRowError::Missing { state, column };
        let sealed = self.sealed_private.map(SealedKey::from_stored);
        Ok(match state {
            KeyState::Next => KeyLifecycle::Next {
                sealed: sealed.ok_or(missing("sealed_private"))?,
            },
            KeyState::Current => KeyLifecycle::Current {
                sealed: sealed.ok_or(missing("sealed_private"))?,
                activated_at: self.activated_at.ok_or(missing("activated_at"))?,
            },
            KeyState::Retired => KeyLifecycle::Retired {
                sealed: sealed.ok_or(missing("sealed_private"))?,
                activated_at: self.activated_at.ok_or(missing("activated_at"))?,
                retired_at: self.retired_at.ok_or(missing("retired_at"))?,
            },
            KeyState::Revoked => {
                if sealed.is_some() {
                    return Err(KeyRowError::RevokedWithPrivate);
                }
                KeyLifecycle::Revoked {
                    activated_at: self.activated_at,
                    retired_at: self.retired_at,
                    revoked_at: self.revoked_at.ok_or(missing("revoked_at"))?,
                }
            }
        })
    }
}

fn key_from_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
    let kid: String = row.try_get("kid")?;
    let alg: String = row.try_get("alg")?;
    let state: String = row.try_get("state")?;
    let sealed_private = row.try_get("sealed_private")?;
    let activated_at = row.try_get("activated_at")?;
    let retired_at = row.try_get("retired_at")?;
    let revoked_at = row.try_get("revoked_at")?;
    let decode = || -> Result<(SigningAlg, KeyLifecycle), KeyRowError> {
        let columns = Columns {
            state: state.parse()?,
            sealed_private,
            activated_at,
            retired_at,
            revoked_at,
        };
        Ok((alg.parse()?, columns.lifecycle()?))
    };
    let (alg, lifecycle) = decode().map_err(|problem| StoreError::KeyRow {
        kid: kid.clone(),
        problem,
    })?;
    Ok(KeyRow {
        kid,
        alg,
        public_jwk: row.try_get("public_jwk")?,
        created_at: row.try_get("created_at")?,
        published_at: row.try_get("published_at")?,
        lifecycle,
    })
}

impl Store {
    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, state, public_jwk, sealed_private, created_at, published_at, \
             activated_at, retired_at, revoked_at FROM keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// The keyset version and every key, oldest first. The version is read
    /// first: if a writer slips in between, the version is older than the
    /// rows and a later [`Store::apply_key_changes`] fails safe.
    pub async fn keyset(&self) -> Result<(i64, Vec<KeyRow>), StoreError> {
        let version = self.versions().await?.keys;
        Ok((version, self.list_keys().await?))
    }

    /// Applies `changes` in one transaction, only if the keyset is still at
    /// `expected_version`; otherwise nothing changes and the result is
    /// [`StoreError::Conflict`] (another instance or the CLI got there
    /// first). The version bump comes first so that, on PostgreSQL, a
    /// concurrent writer waits on the row lock and then sees the new version.
    pub async fn apply_key_changes(
        &self,
        expected_version: i64,
        changes: &[KeyChange],
    ) -> Result<(), StoreError> {
        self.apply_audited_key_changes(expected_version, changes, &[])
            .await
    }

    /// [`Store::apply_key_changes`], recording `audit` in the same
    /// transaction.
    pub async fn apply_audited_key_changes(
        &self,
        expected_version: i64,
        changes: &[KeyChange],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        bump_keyset_version(&mut tx, expected_version).await?;
        for change in changes {
            match change {
                KeyChange::Insert(key) => insert_key(&mut tx, key).await?,
                KeyChange::Update(key) => {
                    let columns = Columns::of(&key.lifecycle);
                    let updated = sqlx::query(
                        "UPDATE keys SET state = $1, sealed_private = $2, activated_at = $3, \
                         retired_at = $4, revoked_at = $5 WHERE kid = $6",
                    )
                    .bind(columns.state.as_str())
                    .bind(columns.sealed_private)
                    .bind(columns.activated_at)
                    .bind(columns.retired_at)
                    .bind(columns.revoked_at)
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if updated != 1 {
                        return Err(StoreError::NotFound);
                    }
                }
                KeyChange::Delete(kid) => {
                    sqlx::query("DELETE FROM keys WHERE kid = $1")
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        super::audit::insert_audits_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A master-key change in one transaction: replaces the sealed private
    /// half of each key in `resealed` and the check value `old_check` by
    /// `new_check`, with `audit`, only if the keyset is still at
    /// `expected_version` and the check value still `old_check`
    /// (otherwise [`StoreError::Conflict`] and nothing changes). Bumps the
    /// keyset version, so running servers reload their keyring.
    pub async fn rewrap_keys(
        &self,
        expected_version: i64,
        old_check: &str,
        new_check: &str,
        resealed: &[(String, SealedKey)],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        bump_keyset_version(&mut tx, expected_version).await?;
        let checked = sqlx::query(
            "UPDATE master_key_check SET check_value = $1 WHERE id = 1 AND check_value = $2",
        )
        .bind(new_check)
        .bind(old_check)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if checked != 1 {
            return Err(StoreError::Conflict);
        }
        for (kid, sealed) in resealed {
            let updated = sqlx::query(
                "UPDATE keys SET sealed_private = $1 WHERE kid = $2 AND sealed_private IS NOT NULL",
            )
            .bind(sealed.as_bytes().to_vec())
            .bind(kid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(StoreError::Conflict);
            }
        }
        super::audit::insert_audits_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Bumps the keyset version inside the caller's transaction, only from
/// `expected` (otherwise [`StoreError::Conflict`]: another instance or the
/// CLI changed the keyset first), and announces the change to the other
/// instances at commit. Coming first, on PostgreSQL the bump makes a
/// concurrent writer wait on the row lock and then see the new version.
async fn bump_keyset_version(
    conn: &mut sqlx::AnyConnection,
    expected: i64,
) -> Result<(), StoreError> {
    let bumped = sqlx::query(
        "UPDATE versions SET version = version + 1 WHERE name = 'keys' AND version = $1",
    )
    .bind(expected)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if bumped != 1 {
        return Err(StoreError::Conflict);
    }
    notify_change(conn).await
}

async fn insert_key(conn: &mut sqlx::AnyConnection, key: &KeyRow) -> Result<(), StoreError> {
    let columns = Columns::of(&key.lifecycle);
    sqlx::query(
        "INSERT INTO keys (kid, alg, state, public_jwk, sealed_private, created_at, \
         published_at, activated_at, retired_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&key.kid)
    .bind(key.alg.as_str())
    .bind(columns.state.as_str())
    .bind(&key.public_jwk)
    .bind(columns.sealed_private)
    .bind(key.created_at)
    .bind(key.published_at)
    .bind(columns.activated_at)
    .bind(columns.retired_at)
    .bind(columns.revoked_at)
    .execute(conn)
    .await
    .map_err(StoreError::from_write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/keys.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    fn row(kid: &str, lifecycle: KeyLifecycle) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            alg: SigningAlg::EdDsa,
            public_jwk: "{}".into(),
            created_at: 10,
            published_at: 10,
            lifecycle,
        }
    }

    async fn apply(store: &Store, changes: &[KeyChange]) {
        let version = store.versions().await.unwrap().keys;
        store.apply_key_changes(version, changes).await.unwrap();
    }

    async fn sealed_column(store: &Store, kid: &str) -> Option<Vec<u8>> {
        sqlx::query("SELECT sealed_private FROM keys WHERE kid = $1")
            .bind(kid)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get("sealed_private")
            .unwrap()
    }

    #[tokio::test]
    async fn lifecycles_round_trip_and_revocation_nulls_the_private_half() {
        let (_dir, store) = store().await;
        let sealed = SealedKey::from_stored(vec![1, 2, 3]);
        let next = row(
            "a",
            KeyLifecycle::Next {
                sealed: sealed.clone(),
            },
        );
        let current = row(
            "b",
            KeyLifecycle::Current {
                sealed: sealed.clone(),
                activated_at: 20,
            },
        );
        apply(
            &store,
            &[
                KeyChange::Insert(next.clone()),
                KeyChange::Insert(current.clone()),
            ],
        )
        .await;
        assert_eq!(
            store.list_keys().await.unwrap(),
            vec![next.clone(), current.clone()]
        );

        let mut retired = current.clone();
        retired.lifecycle = current.lifecycle.clone().retire(30).unwrap();
        let mut revoked = next.clone();
        revoked.lifecycle = next.lifecycle.clone().revoke(40).unwrap();
        apply(
            &store,
            &[
                KeyChange::Update(retired.clone()),
                KeyChange::Update(revoked.clone()),
            ],
        )
        .await;
        let rows = store.list_keys().await.unwrap();
        assert_eq!(rows, vec![revoked.clone(), retired.clone()]);
        assert_eq!(
            sealed_column(&store, "a").await,
            None,
            "destroyed in the row"
        );
        assert_eq!(sealed_column(&store, "b").await, Some(vec![1, 2, 3]));

        // Revoking a retired key keeps its history.
        let mut revoked_retired = retired.clone();
        revoked_retired.lifecycle = retired.lifecycle.clone().revoke(50).unwrap();
        apply(&store, &[KeyChange::Update(revoked_retired.clone())]).await;
        assert_eq!(
            store.list_keys().await.unwrap()[1].lifecycle,
            KeyLifecycle::Revoked {
                activated_at: Some(20),
                retired_at: Some(30),
                revoked_at: 50,
            }
        );
        assert_eq!(sealed_column(&store, "b").await, None);
    }

    #[tokio::test]
    async fn a_rewrap_applies_only_to_the_keyset_and_check_value_it_read() {
        let (_dir, store) = store().await;
        let sealed = |b: u8| SealedKey::from_stored(vec![b]);
        let current = row(
            "c",
            KeyLifecycle::Current {
                sealed: sealed(1),
                activated_at: 20,
            },
        );
        let revoked = row(
            "r",
            KeyLifecycle::Revoked {
                activated_at: None,
                retired_at: None,
                revoked_at: 30,
            },
        );
        apply(
            &store,
            &[KeyChange::Insert(current), KeyChange::Insert(revoked)],
        )
        .await;
        store.record_master_check("old", 1).await.unwrap();
        let version = store.versions().await.unwrap().keys;
        let resealed = [("c".to_owned(), sealed(2))];
        let unchanged = |store: Store| async move {
            assert_eq!(store.master_check().await.unwrap().as_deref(), Some("old"));
            assert_eq!(sealed_column(&store, "c").await, Some(vec![1]));
            assert_eq!(store.versions().await.unwrap().keys, version);
        };
        // Another writer moved the keyset, or the check value is not the one
        // read: nothing changes.
        let stale = store.rewrap_keys(version - 1, "old", "new", &resealed, &[]);
        assert!(matches!(stale.await, Err(StoreError::Conflict)));
        unchanged(store.clone()).await;
        let wrong_check = store.rewrap_keys(version, "other", "new", &resealed, &[]);
        assert!(matches!(wrong_check.await, Err(StoreError::Conflict)));
        unchanged(store.clone()).await;
        // A destroyed private half is never given one back.
        let revived = [("r".to_owned(), sealed(3))];
        let revive = store.rewrap_keys(version, "old", "new", &revived, &[]);
        assert!(matches!(revive.await, Err(StoreError::Conflict)));
        unchanged(store.clone()).await;
        assert_eq!(sealed_column(&store, "r").await, None);

        store
            .rewrap_keys(version, "old", "new", &resealed, &[])
            .await
            .unwrap();
        assert_eq!(store.master_check().await.unwrap().as_deref(), Some("new"));
        assert_eq!(sealed_column(&store, "c").await, Some(vec![2]));
        assert_eq!(store.versions().await.unwrap().keys, version + 1);
    }

    /// Whether a decoding error is the one expected.
    type Expected = fn(&KeyRowError) -> bool;

    #[tokio::test]
    async fn rows_that_do_not_decode_are_typed_errors() {
        let (_dir, store) = store().await;
        apply(
            &store,
            &[KeyChange::Insert(row(
                "k",
                KeyLifecycle::Current {
                    sealed: SealedKey::from_stored(vec![1]),
                    activated_at: 20,
                },
            ))],
        )
        .await;
        let cases: [(&str, Expected); 5] = [
            (
                "UPDATE keys SET state = 'expired'",
                |e| matches!(e, KeyRowError::Unknown(n) if n.kind == "key state"),
            ),
            (
                "UPDATE keys SET alg = 'HS256'",
                |e| matches!(e, KeyRowError::Unknown(n) if n.kind == "signing algorithm"),
            ),
            ("UPDATE keys SET state = 'revoked', revoked_at = 30", |e| {
                matches!(e, KeyRowError::RevokedWithPrivate)
            }),
            ("UPDATE keys SET sealed_private = NULL", |e| {
                matches!(
                    e,
                    KeyRowError::Missing {
                        state: KeyState::Current,
                        column: "sealed_private"
                    }
                )
            }),
            ("UPDATE keys SET state = 'retired'", |e| {
                matches!(
                    e,
                    KeyRowError::Missing {
                        state: KeyState::Retired,
                        column: "retired_at"
                    }
                )
            }),
        ];
        for (statement, expected) in cases {
            let mut tx = store.pool.begin().await.unwrap();
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
            let row = sqlx::query(
                "SELECT kid, alg, state, public_jwk, sealed_private, created_at, published_at, \
                 activated_at, retired_at, revoked_at FROM keys",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            match key_from_row(&row) {
                Err(StoreError::KeyRow { kid, problem }) => {
                    assert_eq!(kid, "k");
                    assert!(expected(&problem), "{statement}: {problem:?}");
                }
                other => panic!("{statement}: {other:?}"),
            }
        }
        // Untouched, the row still decodes.
        assert_eq!(store.list_keys().await.unwrap().len(), 1);
    }
}
