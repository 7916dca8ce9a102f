//! The coalition's brands and their base earn rules.
//!
//! A brand is a slug id (`coffee`), a name, a status and a base earn rule: `earn_points` points
//! per `earn_unit_cents` of eligible spend, rounded down, where lines whose SKU or category is
//! excluded (gift cards, delivery fees) earn nothing. Multipliers and bonuses come from the
//! brand's plugin; the base rule is what applies without one.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::members::FieldError;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::UniqueAsConflict;

/// Brands in one coalition: a large mall has a few hundred tenants; the bound keeps the
/// unpaginated brand list small.
pub const MAX_BRANDS: i64 = 1_000;
/// Shortest brand id.
const MIN_ID_CHARS: usize = 2;
/// Longest brand id: it appears in URLs, keys and statements.
const MAX_ID_CHARS: usize = 32;
/// Longest brand name.
const MAX_NAME_CHARS: usize = 100;
/// Highest `earn_points` per unit; a typo like 1000 points per yuan would flood the ledger.
pub const MAX_EARN_POINTS: i64 = 1_000;
/// Largest earn unit: 10,000.00 in cents.
pub const MAX_EARN_UNIT_CENTS: i64 = 1_000_000;
/// Entries in each exclusion list; they are matched against every purchase line.
pub const MAX_EXCLUSIONS: usize = 500;
/// Characters in one excluded SKU or category.
const MAX_EXCLUSION_CHARS: usize = 64;

/// A brand's status; a suspended brand stays visible but earns and honours nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrandStatus {
    /// Trading.
    Active,
    /// Temporarily out of the coalition.
    Suspended,
}

impl BrandStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            BrandStatus::Active => "active",
            BrandStatus::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> BrandStatus {
        // The CHECK constraint allows only these two values.
        if s == "suspended" {
            BrandStatus::Suspended
        } else {
            BrandStatus::Active
        }
    }
}

/// A brand with its earn rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Brand {
    /// Slug id, e.g. `coffee`.
    #[schema(example = "coffee")]
    pub id: String,
    /// Display name.
    #[schema(example = "Bean There Coffee")]
    pub name: String,
    /// `active` or `suspended`.
    pub status: BrandStatus,
    /// Points earned per `earn_unit_cents` of eligible spend (0 = earns nothing).
    #[schema(example = 1)]
    pub earn_points: i64,
    /// Spend in cents that earns `earn_points`; partial units earn nothing.
    #[schema(example = 100)]
    pub earn_unit_cents: i64,
    /// SKUs that earn nothing.
    pub excluded_skus: Vec<String>,
    /// Categories that earn nothing, e.g. `gift_card`.
    pub excluded_categories: Vec<String>,
    /// Days a purchase may be returned: points earned here stay pending (visible, not
    /// spendable) until then, and a refund inside the window cancels them (0 = none).
    #[serde(default)]
    pub return_window_days: i64,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
}

/// What every authenticated caller may see of a brand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrandSummary {
    /// Slug id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: BrandStatus,
}

/// Body of `POST /brands`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBrand {
    /// Slug: 2–32 lowercase letters, digits and `-`, starting with a letter.
    #[schema(example = "coffee")]
    pub id: String,
    /// Display name, 1–100 characters.
    pub name: String,
    /// Points per unit (default 1, at most 1000).
    #[serde(default = "default_earn_points")]
    pub earn_points: i64,
    /// Unit in cents (default 100, at most 1,000,000).
    #[serde(default = "default_earn_unit_cents")]
    pub earn_unit_cents: i64,
    /// SKUs that earn nothing (at most 500).
    #[serde(default)]
    pub excluded_skus: Vec<String>,
    /// Categories that earn nothing (at most 500).
    #[serde(default)]
    pub excluded_categories: Vec<String>,
    /// Return window in days, 0..=365 (default 0: points are available at once).
    #[serde(default)]
    pub return_window_days: i64,
}

fn default_earn_points() -> i64 {
    1
}

fn default_earn_unit_cents() -> i64 {
    100
}

/// Body of `PATCH /brands/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBrand {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BrandStatus>,
    /// New points per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earn_points: Option<i64>,
    /// New unit in cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earn_unit_cents: Option<i64>,
    /// Replaces the excluded SKUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_skus: Option<Vec<String>>,
    /// Replaces the excluded categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_categories: Option<Vec<String>>,
    /// New return window in days, 0..=365 (applies to purchases recorded after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_window_days: Option<i64>,
}

/// Validates a brand id slug.
pub fn validate_id(id: &str) -> Result<(), FieldError> {
    let ok = (MIN_ID_CHARS..=MAX_ID_CHARS).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && !id.contains("--")
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(field(
            "invalid_brand_id",
            "id",
            format!(
                "a brand id is {MIN_ID_CHARS} to {MAX_ID_CHARS} lowercase letters, digits and \
                 single dashes, starting with a letter, e.g. coffee or cinema-1"
            ),
        ))
    }
}

fn field(code: &'static str, name: &'static str, detail: String) -> FieldError {
    FieldError {
        code,
        field: name,
        detail,
    }
}

fn validate_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(field(
            "invalid_name",
            "name",
            format!("a brand name is 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn validate_earn_rule(earn_points: i64, earn_unit_cents: i64) -> Result<(), FieldError> {
    if !(0..=MAX_EARN_POINTS).contains(&earn_points) {
        return Err(field(
            "invalid_earn_rule",
            "earn_points",
            format!("earn_points must be 0 to {MAX_EARN_POINTS}"),
        ));
    }
    if !(1..=MAX_EARN_UNIT_CENTS).contains(&earn_unit_cents) {
        return Err(field(
            "invalid_earn_rule",
            "earn_unit_cents",
            format!("earn_unit_cents must be 1 to {MAX_EARN_UNIT_CENTS}"),
        ));
    }
    Ok(())
}

/// Trims, deduplicates and bounds an exclusion list.
fn normalize_exclusions(raw: &[String], name: &'static str) -> Result<Vec<String>, FieldError> {
    if raw.len() > MAX_EXCLUSIONS {
        return Err(field(
            "invalid_exclusions",
            name,
            format!("{name} may list at most {MAX_EXCLUSIONS} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for entry in raw {
        let entry = entry.trim();
        let count = entry.chars().count();
        if count == 0 || count > MAX_EXCLUSION_CHARS || entry.chars().any(char::is_control) {
            return Err(field(
                "invalid_exclusions",
                name,
                format!(
                    "each entry of {name} is 1 to {MAX_EXCLUSION_CHARS} characters without \
                     control characters"
                ),
            ));
        }
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_owned());
        }
    }
    Ok(out)
}

type BrandRow = (
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
);

const BRAND_COLUMNS: &str = "id, name, status, earn_points, earn_unit_cents, excluded_skus, \
    excluded_categories, created_at, updated_at, return_window_days";

/// Longest return window, days: a year; beyond it a return is not a return.
pub const MAX_RETURN_WINDOW_DAYS: i64 = 365;

fn validate_return_window(days: i64) -> Result<(), FieldError> {
    if !(0..=MAX_RETURN_WINDOW_DAYS).contains(&days) {
        return Err(field(
            "invalid_return_window",
            "return_window_days",
            format!("return_window_days must be 0 to {MAX_RETURN_WINDOW_DAYS}"),
        ));
    }
    Ok(())
}

fn from_row(row: BrandRow) -> Brand {
    let (
        id,
        name,
        status,
        earn_points,
        earn_unit_cents,
        skus,
        categories,
        created,
        updated,
        window,
    ) = row;
    // The API writes these columns as JSON arrays; anything else reads as empty.
    let list = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap_or_default();
    Brand {
        id,
        name,
        status: BrandStatus::parse(&status),
        earn_points,
        earn_unit_cents,
        excluded_skus: list(&skus),
        excluded_categories: list(&categories),
        return_window_days: window,
        created_at_ms: created,
        updated_at_ms: updated,
    }
}

/// Loads a brand.
pub async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<Brand>, sqlx::Error> {
    let sql = format!("SELECT {BRAND_COLUMNS} FROM brands WHERE id = $1");
    let row: Option<BrandRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(from_row))
}

/// Loads a brand or fails with 404.
pub async fn fetch_existing(conn: &mut AnyConnection, id: &str) -> Result<Brand, DomainError> {
    fetch(conn, id)
        .await?
        .ok_or_else(|| DomainError::not_found("brand", id))
}

/// Every brand's id, name and status, by id (at most [`MAX_BRANDS`]).
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<BrandSummary>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "SELECT id, name, status FROM brands ORDER BY id LIMIT {MAX_BRANDS}"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, status)| BrandSummary {
            id,
            name,
            status: BrandStatus::parse(&status),
        })
        .collect())
}

/// Creates a brand; 409 `brand_exists` if the id is taken.
pub async fn create(
    conn: &mut AnyConnection,
    req: &CreateBrand,
    now_ms: i64,
) -> Result<Brand, DomainError> {
    validate_id(&req.id)?;
    let name = validate_name(&req.name)?;
    validate_earn_rule(req.earn_points, req.earn_unit_cents)?;
    validate_return_window(req.return_window_days)?;
    let skus = normalize_exclusions(&req.excluded_skus, "excluded_skus")?;
    let categories = normalize_exclusions(&req.excluded_categories, "excluded_categories")?;
    let (count,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM brands")
        .fetch_one(&mut *conn)
        .await?;
    if count >= MAX_BRANDS {
        return Err(DomainError::unprocessable(
            "brand_limit_reached",
            format!("a coalition has at most {MAX_BRANDS} brands"),
        ));
    }
    let exists =
        || DomainError::conflict("brand_exists", format!("brand {:?} already exists", req.id));
    if fetch(conn, &req.id).await?.is_some() {
        return Err(exists());
    }
    sqlx::query(
        "INSERT INTO brands (id, name, status, earn_points, earn_unit_cents, excluded_skus,
                             excluded_categories, created_at, updated_at, return_window_days)
         VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(&req.id)
    .bind(&name)
    .bind(req.earn_points)
    .bind(req.earn_unit_cents)
    .bind(serde_json::to_string(&skus).map_err(DomainError::internal)?)
    .bind(serde_json::to_string(&categories).map_err(DomainError::internal)?)
    .bind(now_ms)
    .bind(req.return_window_days)
    .execute(&mut *conn)
    .await
    .unique_as(exists)?;
    fetch_existing(conn, &req.id).await
}

/// Applies an update to a brand.
pub async fn update(
    conn: &mut AnyConnection,
    id: &str,
    req: &UpdateBrand,
    now_ms: i64,
) -> Result<Brand, DomainError> {
    let current = fetch_existing(conn, id).await?;
    let name = req.name.as_deref().map(validate_name).transpose()?;
    let earn_points = req.earn_points.unwrap_or(current.earn_points);
    let earn_unit_cents = req.earn_unit_cents.unwrap_or(current.earn_unit_cents);
    validate_earn_rule(earn_points, earn_unit_cents)?;
    let return_window_days = req.return_window_days.unwrap_or(current.return_window_days);
    validate_return_window(return_window_days)?;
    let skus = match &req.excluded_skus {
        Some(list) => normalize_exclusions(list, "excluded_skus")?,
        None => current.excluded_skus,
    };
    let categories = match &req.excluded_categories {
        Some(list) => normalize_exclusions(list, "excluded_categories")?,
        None => current.excluded_categories,
    };
    sqlx::query(
        "UPDATE brands SET name = $1, status = $2, earn_points = $3, earn_unit_cents = $4,
                excluded_skus = $5, excluded_categories = $6, updated_at = $7,
                return_window_days = $9
         WHERE id = $8",
    )
    .bind(name.unwrap_or(current.name))
    .bind(req.status.unwrap_or(current.status).as_str())
    .bind(earn_points)
    .bind(earn_unit_cents)
    .bind(serde_json::to_string(&skus).map_err(DomainError::internal)?)
    .bind(serde_json::to_string(&categories).map_err(DomainError::internal)?)
    .bind(now_ms)
    .bind(id)
    .bind(return_window_days)
    .execute(&mut *conn)
    .await?;
    fetch_existing(conn, id).await
}

// ---------------------------------------------------------------------------------------------
// Earn rules as purchases read them

/// A brand's base earn rule and exclusions.
#[derive(Debug, Clone, Default)]
pub struct EarnRule {
    /// Points per `earn_unit_cents` of eligible spend.
    pub earn_points: i64,
    /// See `earn_points`.
    pub earn_unit_cents: i64,
    /// SKUs that earn nothing (gift cards, delivery fees).
    pub excluded_skus: HashSet<String>,
    /// Categories that earn nothing.
    pub excluded_categories: HashSet<String>,
}

/// A brand as purchases need it.
#[derive(Debug, Clone)]
pub struct BrandRule {
    /// `active` or `suspended`.
    pub status: String,
    /// The earn rule.
    pub rule: EarnRule,
    /// Return window, days (0 = none): earned points stay pending that long.
    pub return_window_days: i64,
}

/// Loads a brand's status and earn rule; unknown brand: 404.
pub async fn load_brand(conn: &mut AnyConnection, brand_id: &str) -> DomainResult<BrandRule> {
    let row: Option<(String, i64, i64, String, String, i64)> = sqlx::query_as(
        "SELECT status, earn_points, earn_unit_cents, excluded_skus, excluded_categories,
                return_window_days
         FROM brands WHERE id = $1",
    )
    .bind(brand_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, earn_points, earn_unit_cents, skus, categories, return_window_days) =
        row.ok_or_else(|| DomainError::not_found("brand", brand_id))?;
    let parse = |json: &str| -> DomainResult<HashSet<String>> {
        serde_json::from_str::<Vec<String>>(json)
            .map(|v| v.into_iter().collect())
            .map_err(|e| DomainError::internal(anyhow::anyhow!("brand {brand_id} exclusions: {e}")))
    };
    Ok(BrandRule {
        status,
        rule: EarnRule {
            earn_points,
            earn_unit_cents,
            excluded_skus: parse(&skus)?,
            excluded_categories: parse(&categories)?,
        },
        return_window_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_ids_are_slugs() {
        for good in ["mall", "coffee", "cinema-1", "b2"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "Coffee",
            "1mall",
            "mall-",
            "a--b",
            "caf\u{e9}",
            "a b",
            &"a".repeat(33),
        ] {
            assert_eq!(
                validate_id(bad).map_err(|e| e.code),
                Err("invalid_brand_id"),
                "{bad}"
            );
        }
    }

    #[test]
    fn earn_rule_bounds() {
        assert!(validate_earn_rule(0, 1).is_ok());
        assert!(validate_earn_rule(MAX_EARN_POINTS, MAX_EARN_UNIT_CENTS).is_ok());
        assert!(validate_earn_rule(-1, 100).is_err());
        assert!(validate_earn_rule(1, 0).is_err());
        assert!(validate_earn_rule(MAX_EARN_POINTS + 1, 100).is_err());
    }

    #[test]
    fn exclusions_are_trimmed_deduplicated_and_bounded() {
        let list = vec![
            " gift_card ".to_owned(),
            "gift_card".to_owned(),
            "delivery".to_owned(),
        ];
        assert_eq!(
            normalize_exclusions(&list, "excluded_categories"),
            Ok(vec!["gift_card".to_owned(), "delivery".to_owned()])
        );
        assert!(normalize_exclusions(&["".to_owned()], "excluded_skus").is_err());
        let many: Vec<String> = (0..=MAX_EXCLUSIONS).map(|i| format!("s{i}")).collect();
        assert!(normalize_exclusions(&many, "excluded_skus").is_err());
    }
}
