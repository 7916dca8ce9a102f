//! Who acts: roles, principals and API keys. Every request carries `Authorization: Bearer <key>`; keys are stored as
//! SHA-256 hashes (they are 256-bit random, so a plain hash is enough — no password stretching).
//!
//! Roles and scopes:
//! - `admin`: the platform operator; sees and manages everything.
//! - `brand`: one brand's back office; manages that brand's data only.
//! - `counter`: one brand's POS; records purchases and refunds at that brand only.
//! - `member`: one member's app; sees and acts for that member only.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::foundation::error::DomainError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Platform operator.
    Admin,
    /// A brand's back office.
    Brand,
    /// A brand's counter / POS.
    Counter,
    /// A member's own app.
    Member,
}

impl Role {
    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Brand => "brand",
            Role::Counter => "counter",
            Role::Member => "member",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "brand" => Some(Role::Brand),
            "counter" => Some(Role::Counter),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Id of the API key used.
    pub key_id: String,
    /// The key's role.
    pub role: Role,
    /// The brand a `brand` or `counter` key is scoped to.
    pub brand_id: Option<String>,
    /// The member a `member` key is scoped to.
    pub member_id: Option<String>,
}

impl Principal {
    /// Whether this is a platform admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Only platform admins may pass.
    pub fn require_admin(&self) -> Result<(), DomainError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(DomainError::forbidden(
                "this operation needs a platform admin key",
            ))
        }
    }

    /// Admins, or `brand` keys of `brand_id`, may pass.
    pub fn require_brand(&self, brand_id: &str) -> Result<(), DomainError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Brand if self.brand_id.as_deref() == Some(brand_id) => Ok(()),
            _ => Err(DomainError::forbidden(format!(
                "this operation needs an admin key or a brand key of {brand_id:?}"
            ))),
        }
    }

    /// Admins, or `counter` keys of `brand_id`, may pass.
    pub fn require_counter(&self, brand_id: &str) -> Result<(), DomainError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Counter if self.brand_id.as_deref() == Some(brand_id) => Ok(()),
            _ => Err(DomainError::forbidden(format!(
                "this operation needs an admin key or a counter key of {brand_id:?}"
            ))),
        }
    }

    /// Admins, brand and counter keys (any brand: members are shared by the coalition), or the
    /// member's own key may read a member.
    pub fn require_member_read(&self, member_id: &str) -> Result<(), DomainError> {
        match self.role {
            Role::Admin | Role::Brand | Role::Counter => Ok(()),
            Role::Member if self.member_id.as_deref() == Some(member_id) => Ok(()),
            Role::Member => Err(DomainError::forbidden(
                "a member key can only see its own member",
            )),
        }
    }

    /// Admins or the member's own key may act as the member (spend, update profile).
    pub fn require_member_self(&self, member_id: &str) -> Result<(), DomainError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Member if self.member_id.as_deref() == Some(member_id) => Ok(()),
            _ => Err(DomainError::forbidden(
                "only the member's own key or an admin key may do this",
            )),
        }
    }

    /// For reads of a member's brand-specific records (coupons, redemptions, order ids in the
    /// history): the brand whose records a brand or counter key sees; `None` for the member's
    /// own key and admins, who see all of them.
    pub fn brand_scope(&self) -> Option<&str> {
        match self.role {
            Role::Brand | Role::Counter => self.brand_id.as_deref(),
            Role::Admin | Role::Member => None,
        }
    }

    /// The brand a brand-level read (an overview, a list of redemptions) is limited to: an
    /// admin may name one brand or none (every brand); a brand key is always limited to its own
    /// brand and may name only that (`not_own` otherwise); other roles are refused
    /// (`not_allowed`). Roles are checked before the named brand is validated.
    pub fn brand_read_scope(
        &self,
        asked: Option<&str>,
        not_own: &'static str,
        not_allowed: &'static str,
    ) -> Result<Option<String>, DomainError> {
        let brand = match self.role {
            Role::Admin => asked.map(str::to_owned),
            Role::Brand if asked.is_none() || asked == self.brand_id.as_deref() => {
                self.brand_id.clone()
            }
            Role::Brand => return Err(DomainError::forbidden(not_own)),
            Role::Counter | Role::Member => return Err(DomainError::forbidden(not_allowed)),
        };
        if let Some(brand) = &brand {
            crate::foundation::ids::check_path_id("brand", brand)?;
        }
        Ok(brand)
    }

    /// Whether personal data (full phone number) may be shown for `member_id`.
    pub fn sees_pii_of(&self, member_id: &str) -> bool {
        self.is_admin() || self.member_id.as_deref() == Some(member_id)
    }

    /// Namespace for idempotency keys, so that two callers cannot collide on a key.
    pub fn idempotency_scope(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

/// Length of the random part of a key, in bytes.
const KEY_RANDOM_BYTES: usize = 32;
/// Prefix that makes keys recognisable to secret scanners.
pub const KEY_PREFIX: &str = "coa_";

/// Generates a new secret key string.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_RANDOM_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The stored hash of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A newly created key; the secret is shown once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// Key id, for listing and revoking.
    pub id: String,
    /// The secret to send as `Authorization: Bearer <secret>`; shown only now.
    pub secret: String,
    /// The key's role.
    pub role: Role,
    /// Brand scope for brand and counter keys.
    pub brand_id: Option<String>,
    /// Member scope for member keys.
    pub member_id: Option<String>,
    /// Free-text label.
    pub label: String,
}

/// Creates a key in the database (used by the API, the CLI bootstrap and the demo).
/// `executor` is a pool or a transaction's connection, so a key can be created atomically with
/// other writes (the keys API, the demo seed).
pub async fn create_key<'e, E>(
    executor: E,
    role: Role,
    brand_id: Option<&str>,
    member_id: Option<&str>,
    label: &str,
    now_ms: i64,
) -> Result<CreatedKey, DomainError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    match role {
        Role::Admin if brand_id.is_some() || member_id.is_some() => {
            return Err(DomainError::validation(
                "an admin key has no brand or member scope",
            ))
        }
        Role::Brand | Role::Counter if brand_id.is_none() || member_id.is_some() => {
            return Err(DomainError::validation(
                "brand and counter keys need a brand_id and no member_id",
            ))
        }
        Role::Member if member_id.is_none() || brand_id.is_some() => {
            return Err(DomainError::validation(
                "member keys need a member_id and no brand_id",
            ))
        }
        _ => {}
    }
    let secret = generate_key();
    let id = crate::foundation::store::new_id();
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, prefix, role, brand_id, member_id, label, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(hash_key(&secret))
    .bind(&secret[..KEY_PREFIX.len() + 8])
    .bind(role.as_str())
    .bind(brand_id)
    .bind(member_id)
    .bind(label)
    .bind(now_ms)
    .execute(executor)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            DomainError::validation("the brand or member of this key does not exist")
        }
        _ => DomainError::from(err),
    })?;
    Ok(CreatedKey {
        id,
        secret,
        role,
        brand_id: brand_id.map(str::to_owned),
        member_id: member_id.map(str::to_owned),
        label: label.to_owned(),
    })
}
