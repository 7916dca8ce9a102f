//! Coupon templates and coupon instances.
//!
//! A template says what a coupon does (its params go to the coupon-logic plugin named by the
//! template), who funds and who honours it, whether it combines with others, and how long an
//! instance stays valid. An instance belongs to one member and has a unique code of 80 random
//! bits; it moves issued → reserved (during a checkout) → redeemed, or ends expired or voided.

use rand::RngCore;
use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::foundation::clock::DAY_MS;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::store::is_unique_violation;
use crate::foundation::store::UniqueAsConflict;

/// Characters of a code: Crockford's base32 (no I, L, O, U: nothing to misread at a counter).
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of a code: 16 characters of 5 bits, 80 random bits — guessing one live code among a
/// billion takes ~10^15 tries, and the counter endpoints are rate limited far below that.
pub const CODE_LEN: usize = 16;

/// A fresh random code from the operating system's generator.
pub fn generate_code() -> String {
    let mut bytes = [0u8; CODE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

/// A coupon just issued.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedCoupon {
    /// The code the member shows at the counter.
    pub code: String,
    /// Its template.
    pub template_id: String,
    /// Its owner.
    pub member_id: String,
    /// Last moment it can be used, Unix ms.
    pub expires_at_ms: i64,
}

/// Issues one coupon of an active template to a member, in the caller's transaction. The same
/// (source, template, member) issued twice returns the first coupon: issuing is idempotent.
pub async fn issue(
    conn: &mut AnyConnection,
    template_id: &str,
    member_id: &str,
    source_kind: &str,
    source_id: &str,
    now_ms: i64,
) -> DomainResult<IssuedCoupon> {
    let template: Option<(i64, String)> =
        sqlx::query_as("SELECT validity_days, status FROM coupon_templates WHERE id = $1")
            .bind(template_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((validity_days, status)) = template else {
        return Err(DomainError::not_found("coupon template", template_id));
    };
    if status != "active" {
        return Err(DomainError::conflict(
            "coupon_template_retired",
            format!("coupon template {template_id:?} is retired"),
        ));
    }
    let existing: Option<(String, i64)> = sqlx::query_as(
        "SELECT code, expires_at FROM coupons WHERE source_kind = $1 AND source_id = $2
            AND template_id = $3 AND member_id = $4",
    )
    .bind(source_kind)
    .bind(source_id)
    .bind(template_id)
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((code, expires_at_ms)) = existing {
        return Ok(IssuedCoupon {
            code,
            template_id: template_id.to_owned(),
            member_id: member_id.to_owned(),
            expires_at_ms,
        });
    }
    let expires_at_ms = now_ms.saturating_add(validity_days.saturating_mul(DAY_MS));
    // A collision of 80 random bits is not expected in the lifetime of the universe; retrying
    // twice costs nothing and turns "not expected" into "handled".
    for _ in 0..3 {
        let code = generate_code();
        let inserted = sqlx::query(
            "INSERT INTO coupons (code, template_id, member_id, status, source_kind, source_id,
                issued_at, expires_at, updated_at)
             VALUES ($1, $2, $3, 'issued', $4, $5, $6, $7, $6)",
        )
        .bind(&code)
        .bind(template_id)
        .bind(member_id)
        .bind(source_kind)
        .bind(source_id)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {
                return Ok(IssuedCoupon {
                    code,
                    template_id: template_id.to_owned(),
                    member_id: member_id.to_owned(),
                    expires_at_ms,
                })
            }
            Err(err) if is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(DomainError::internal(anyhow::anyhow!(
        "could not draw a unique coupon code"
    )))
}

// ---------------------------------------------------------------------------------------------
// Perk grants the host applies itself

/// The `plugin` of templates the host makes for perks that grant a free item or a fixed
/// discount: the host applies them at the counter itself. `@` is never part of a plugin name
/// (template plugins are slugs), so no plugin can claim these templates.
pub const HOST_RULES: &str = "@host";

/// What a host-made template takes off a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// One unit of the line with this sku, free.
    FreeItem {
        /// The sku handed over.
        sku: String,
    },
    /// A fixed amount off the cart, spread over its lines in order.
    DiscountCents(i64),
}

impl HostRule {
    /// The template params that describe the rule.
    pub fn params(&self) -> serde_json::Value {
        match self {
            HostRule::FreeItem { sku } => serde_json::json!({ "grant": "free-item", "sku": sku }),
            HostRule::DiscountCents(cents) => {
                serde_json::json!({ "grant": "discount-cents", "cents": cents.to_string() })
            }
        }
    }

    /// Reads the rule back from a host-made template's params.
    pub fn from_params(params: &str) -> Option<HostRule> {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(params).ok()?;
        match map.get("grant")?.as_str() {
            "free-item" => Some(HostRule::FreeItem {
                sku: map.get("sku")?.clone(),
            }),
            "discount-cents" => map
                .get("cents")?
                .parse()
                .ok()
                .filter(|c: &i64| *c > 0)
                .map(HostRule::DiscountCents),
            _ => None,
        }
    }
}

/// The coupon template a perk's grant is issued from: a coupon grant names its own; a free item
/// or a discount gets a template the host makes on first use (in the caller's transaction) and
/// applies itself. One host template per (plugin, perk, funding, honouring, rule): its id is a
/// hash of them, so a plugin that changes what its perk grants gets a new template, and coupons
/// already issued keep what they promised.
pub async fn template_for_grant(
    conn: &mut AnyConnection,
    plugin: &str,
    perk: &coalition_runtime::model::Perk,
    validity_days: i64,
    now_ms: i64,
) -> DomainResult<String> {
    use coalition_runtime::model::Grant;
    use sha2::{Digest, Sha256};
    let (rule, value_cents) = match &perk.grant {
        Grant::Coupon(template) => return Ok(template.clone()),
        Grant::FreeItem(sku) => (HostRule::FreeItem { sku: sku.clone() }, perk.value_cents),
        Grant::DiscountCents(cents) => (HostRule::DiscountCents(*cents), *cents),
    };
    let params = rule.params().to_string();
    let mut hash = Sha256::new();
    for part in [
        plugin,
        &perk.id,
        &perk.funding_brand,
        &perk.honouring_brand,
        &params,
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let id = format!("grant-{}", &hex::encode(hash.finalize())[..24]);
    // The runtime already holds perk titles to 120 bytes (the WIT contract); cut defensively.
    let mut title = perk.title.clone();
    while title.len() > MAX_TITLE_LEN {
        title.pop();
    }
    sqlx::query(
        "INSERT INTO coupon_templates (id, title, funding_brand, honouring_brand, plugin, params,
            exclusive, validity_days, value_cents, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, 'active', $9, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&id)
    .bind(&title)
    .bind(&perk.funding_brand)
    .bind(&perk.honouring_brand)
    .bind(HOST_RULES)
    .bind(&params)
    .bind(validity_days.clamp(1, MAX_VALIDITY_DAYS))
    .bind(value_cents.max(0))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

// ---------------------------------------------------------------------------------------------
// Templates and member coupons

/// Longest template id (a slug).
pub const MAX_TEMPLATE_ID_LEN: usize = 64;
/// Longest template title.
pub const MAX_TITLE_LEN: usize = 120;
/// Most params on a template, and longest key or value: plugins get them verbatim.
pub const MAX_PARAMS: usize = 32;
/// Longest param key or value.
pub const MAX_PARAM_LEN: usize = 200;
/// Longest validity: ten years.
pub const MAX_VALIDITY_DAYS: i64 = 3_650;
/// Templates listed at once.
pub const MAX_TEMPLATES_LISTED: i64 = 500;
/// Coupons listed per member.
pub const MAX_COUPONS_LISTED: i64 = 200;

/// A coupon template to create.
#[derive(Debug, Clone, serde::Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// Slug id, e.g. `cinema-ticket-half`.
    pub id: String,
    /// Title shown to members.
    pub title: String,
    /// Brand that pays for the discount (a brand key may only create its own).
    pub funding_brand: String,
    /// Brand whose counters accept it.
    pub honouring_brand: String,
    /// Coupon plugin whose `apply-coupon` computes the discount.
    pub plugin: String,
    /// Params passed to the plugin (e.g. `kind`, `percent-bp`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Never combined with another coupon.
    #[serde(default)]
    pub exclusive: bool,
    /// Days an issued coupon stays valid, 1..=3650.
    pub validity_days: i64,
    /// Nominal face value, cents.
    #[serde(default)]
    pub value_cents: i64,
}

/// A coupon template.
#[derive(Debug, Clone, serde::Deserialize, Serialize, ToSchema)]
pub struct TemplateView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Funding brand.
    pub funding_brand: String,
    /// Honouring brand.
    pub honouring_brand: String,
    /// Coupon plugin.
    pub plugin: String,
    /// Params passed to the plugin.
    pub params: std::collections::BTreeMap<String, String>,
    /// Never combined with another coupon.
    pub exclusive: bool,
    /// Validity of issued coupons, days.
    pub validity_days: i64,
    /// Face value, cents.
    pub value_cents: i64,
    /// `active` or `retired`.
    pub status: String,
    /// Created, Unix ms.
    pub created_at_ms: i64,
}

type TemplateRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
);

const TEMPLATE_COLUMNS: &str = "id, title, funding_brand, honouring_brand, plugin, params, \
    exclusive, validity_days, value_cents, status, created_at";

fn to_template(r: TemplateRow) -> TemplateView {
    TemplateView {
        id: r.0,
        title: r.1,
        funding_brand: r.2,
        honouring_brand: r.3,
        plugin: r.4,
        params: serde_json::from_str(&r.5).unwrap_or_default(),
        exclusive: r.6 != 0,
        validity_days: r.7,
        value_cents: r.8,
        status: r.9,
        created_at_ms: r.10,
    }
}

fn slug_ok(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Creates a template in the caller's transaction.
pub async fn create_template(
    conn: &mut AnyConnection,
    req: &TemplateRequest,
    now_ms: i64,
) -> DomainResult<TemplateView> {
    if !slug_ok(&req.id, MAX_TEMPLATE_ID_LEN) || !slug_ok(&req.plugin, MAX_TEMPLATE_ID_LEN) {
        return Err(DomainError::validation(format!(
            "id and plugin must be 1..={MAX_TEMPLATE_ID_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    if req.title.trim().is_empty() || req.title.len() > MAX_TITLE_LEN {
        return Err(DomainError::validation(format!(
            "title must be 1..={MAX_TITLE_LEN} bytes"
        )));
    }
    if req.params.len() > MAX_PARAMS
        || req
            .params
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_PARAM_LEN || v.len() > MAX_PARAM_LEN)
    {
        return Err(DomainError::validation(format!(
            "at most {MAX_PARAMS} params, keys 1..={MAX_PARAM_LEN} and values 0..={MAX_PARAM_LEN} bytes"
        )));
    }
    if !(1..=MAX_VALIDITY_DAYS).contains(&req.validity_days) {
        return Err(DomainError::validation(format!(
            "validity_days must be 1..={MAX_VALIDITY_DAYS}"
        )));
    }
    if !(0..=crate::domain::purchases::MAX_ORDER_TOTAL_CENTS).contains(&req.value_cents) {
        return Err(DomainError::validation("value_cents out of range"));
    }
    crate::ledger::require_brand_exists(conn, &req.funding_brand).await?;
    crate::ledger::require_brand_exists(conn, &req.honouring_brand).await?;
    let params = serde_json::to_string(&req.params).map_err(DomainError::internal)?;
    sqlx::query(
        "INSERT INTO coupon_templates (id, title, funding_brand, honouring_brand, plugin, params,
            exclusive, validity_days, value_cents, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10)",
    )
    .bind(&req.id)
    .bind(&req.title)
    .bind(&req.funding_brand)
    .bind(&req.honouring_brand)
    .bind(&req.plugin)
    .bind(&params)
    .bind(i64::from(req.exclusive))
    .bind(req.validity_days)
    .bind(req.value_cents)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "coupon_template_exists",
            format!("coupon template {:?} already exists", req.id),
        )
    })?;
    get_template(conn, &req.id).await
}

/// One template; unknown: 404.
pub async fn get_template(conn: &mut AnyConnection, id: &str) -> DomainResult<TemplateView> {
    let row: Option<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM coupon_templates WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(to_template)
        .ok_or_else(|| DomainError::not_found("coupon template", id))
}

/// Templates by id.
pub async fn list_templates(conn: &mut AnyConnection) -> DomainResult<Vec<TemplateView>> {
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM coupon_templates ORDER BY id LIMIT $1"
    ))
    .bind(MAX_TEMPLATES_LISTED)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(to_template).collect())
}

/// A member's coupon.
#[derive(Debug, Clone, serde::Deserialize, Serialize, ToSchema)]
pub struct CouponView {
    /// Code.
    pub code: String,
    /// Template.
    pub template_id: String,
    /// Template title.
    pub title: String,
    /// Owner.
    pub member_id: String,
    /// Brand whose counters accept it.
    pub honouring_brand: String,
    /// `issued`, `reserved`, `redeemed`, `expired` or `voided` (a lapsed reservation shows as
    /// `issued`, a coupon past its expiry as `expired`).
    pub status: String,
    /// Where it came from: `perk`, `campaign`, `admin`.
    pub source_kind: String,
    /// Its source's id (redemption, campaign).
    pub source_id: String,
    /// Issued, Unix ms.
    pub issued_at_ms: i64,
    /// Last moment it can be used, Unix ms.
    pub expires_at_ms: i64,
    /// The purchase that redeemed it.
    pub purchase_id: Option<String>,
    /// What it took off, cents.
    pub discount_cents: Option<i64>,
}

type CouponRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

const COUPON_COLUMNS: &str = "c.code, c.template_id, t.title, c.member_id, t.honouring_brand, \
    c.status, c.source_kind, c.source_id, c.issued_at, c.expires_at, c.reserved_until, \
    c.purchase_id, c.discount_cents";

fn to_coupon(r: CouponRow, now_ms: i64) -> CouponView {
    let status = match r.5.as_str() {
        "reserved" if r.10.is_some_and(|u| u <= now_ms) => "issued",
        other => other,
    };
    let status = if (status == "issued" || status == "reserved") && r.9 <= now_ms {
        "expired"
    } else {
        status
    };
    CouponView {
        code: r.0,
        template_id: r.1,
        title: r.2,
        member_id: r.3,
        honouring_brand: r.4,
        status: status.to_owned(),
        source_kind: r.6,
        source_id: r.7,
        issued_at_ms: r.8,
        expires_at_ms: r.9,
        purchase_id: r.11,
        discount_cents: r.12,
    }
}

/// A member's coupons, newest first; with `brand`, only those that brand funds or honours.
pub async fn member_coupons(
    conn: &mut AnyConnection,
    member_id: &str,
    brand: Option<&str>,
    now_ms: i64,
) -> DomainResult<Vec<CouponView>> {
    let rows: Vec<CouponRow> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupons c JOIN coupon_templates t ON t.id = c.template_id
         WHERE c.member_id = $1
           AND ($3 = '' OR t.funding_brand = $3 OR t.honouring_brand = $3)
         ORDER BY c.issued_at DESC, c.code LIMIT $2"
    ))
    .bind(member_id)
    .bind(MAX_COUPONS_LISTED)
    .bind(brand.unwrap_or_default())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| to_coupon(r, now_ms)).collect())
}

/// One coupon by code; unknown: 404.
pub async fn get_coupon(
    conn: &mut AnyConnection,
    code: &str,
    now_ms: i64,
) -> DomainResult<CouponView> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupons c JOIN coupon_templates t ON t.id = c.template_id
         WHERE c.code = $1"
    ))
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| to_coupon(r, now_ms))
        .ok_or_else(|| DomainError::not_found("coupon", code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_distinct_and_unambiguous() {
        let a = generate_code();
        let b = generate_code();
        assert_eq!(a.len(), CODE_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| CODE_ALPHABET.contains(&c)));
        assert!(!a.contains(['I', 'L', 'O', 'U']));
    }
}
