//! Referrals: a member invites friends with a short code; the invitee's first qualifying
//! purchase rewards both with points, funded by a brand or by the platform.
//!
//! # Rules
//! - **Programmes** (admins): points for the referrer and for the invitee, the funding brand
//!   (or the platform), the minimum qualifying purchase (eligible spend, cents: what the member
//!   paid with money on lines that earn), a cap on rewarded referrals per referrer per local
//!   calendar month, and an optional window. A code attached while several programmes are in
//!   force joins the newest.
//! - **Codes**: one per member, made on first request and returned unchanged afterwards;
//!   [`CODE_LEN`] characters of an alphabet without look-alikes, from the operating system's
//!   random source (2^50 codes: unguessable at any rate an API key is allowed).
//! - **Attaching**: an invitee attaches one code, once, before their first purchase. A
//!   self-referral is accepted and recorded as rejected (`self_referral`), never an error.
//! - **Deciding** ([`on_purchase`], inside the purchase's transaction): the invitee's first
//!   purchase whose eligible spend reaches the minimum decides the referral once. It is
//!   rejected with a reason — `self_referral`, `same_phone` (a phone either member held when
//!   the code was made or attached, or holds now), `same_person` (both verified under the same
//!   reference), `blacklisted` (either member), `referrer_blocked`, `referrer_cap_reached`,
//!   `programme_ended` — or rewarded: both members are credited through the ledger like a
//!   purchase bonus (an `earn` entry from the funder's issuance account, a lot funded by the
//!   funder), and a brand funder gets a `points-issued` settle event per credit. The
//!   referral row moves out of `pending` with a guarded update, and its purchase id is unique,
//!   so a retried purchase can never reward twice.
//! - **Claw-back** ([`on_refund`], inside the refund's transaction): when a refund leaves the
//!   qualifying purchase below the minimum (or fully refunded), both rewards are taken back:
//!   what the wallet holds, and the rest as refund debt paid from the member's next credits
//!   (the ledger's debt rule), with a `refund` settle event reversing each brand-funded credit.

use std::collections::BTreeMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool};
use utoipa::ToSchema;

use crate::domain::purchases::PurchaseView;
use crate::foundation::clock::local_year_month;
use crate::foundation::error::{DomainError, DomainResult};
use crate::foundation::ids::check_path_id;
use crate::foundation::store::{new_id, Backend, UniqueAsConflict};
use crate::ledger::outbox::{self, EventKind, NewEvent};
use crate::ledger::{
    consume_lots, credit_lot, lock_wallet, points_value_cents, Account, Entry, EntryKind,
    EntryRefs, PointsConfig,
};

/// Characters of an invite code: Crockford's base32 without I, L, O and U, so a code read
/// aloud or typed from a poster cannot be mistaken.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of an invite code: 10 × 5 bits = 2^50 codes, short enough to type.
pub const CODE_LEN: usize = 10;
/// Attempts at a fresh code before giving up (a collision at 2^50 is already improbable).
const CODE_ATTEMPTS: usize = 5;
/// Longest programme title.
pub const MAX_TITLE_LEN: usize = 100;
/// Most points a programme may give one member per referral: a generous welcome, not a
/// payout channel.
pub const MAX_REWARD_POINTS: i64 = 1_000_000;
/// Largest minimum qualifying purchase, cents (the purchases' own order-total limit).
pub const MAX_MIN_PURCHASE_CENTS: i64 = crate::domain::purchases::MAX_ORDER_TOTAL_CENTS;
/// Highest cap of rewarded referrals per referrer per month: above it, a referrer is a
/// reseller, not a friend.
pub const MAX_CAP_PER_MONTH: i64 = 10_000;
/// Most programmes one listing returns; programmes are few and made by hand.
pub const MAX_PROGRAMMES: i64 = 500;
/// Most referrals a member's view lists (newest first); the counts cover all of them.
pub const MAX_REFERRALS_SHOWN: i64 = 200;

/// A referral programme to create (admins).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReferralProgrammeRequest)]
pub struct ProgrammeRequest {
    /// Programme id (letters, digits, `-`, `_`, `.`, `:`; 1..=100).
    pub id: String,
    /// Shown to people, 1..=100 bytes.
    pub title: String,
    /// Points for the referrer per rewarded referral, 0..=1,000,000.
    pub referrer_points: i64,
    /// Points for the invitee, 0..=1,000,000.
    pub invitee_points: i64,
    /// The brand that funds the rewards; omitted = the platform.
    #[serde(default)]
    pub funding_brand: Option<String>,
    /// Smallest eligible spend of the qualifying purchase, cents (0 = any purchase).
    #[serde(default)]
    pub min_purchase_cents: i64,
    /// Rewarded referrals per referrer per local calendar month, 1..=10,000.
    pub cap_per_referrer_per_month: i64,
    /// Codes may be attached from, Unix ms.
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    /// Codes may be attached, and referrals rewarded, until, Unix ms.
    #[serde(default)]
    pub ends_at_ms: Option<i64>,
}

/// A referral programme.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ReferralProgramme)]
pub struct ProgrammeView {
    /// Programme id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Points for the referrer.
    pub referrer_points: i64,
    /// Points for the invitee.
    pub invitee_points: i64,
    /// Funding brand; absent = the platform.
    pub funding_brand: Option<String>,
    /// Minimum qualifying eligible spend, cents.
    pub min_purchase_cents: i64,
    /// Rewarded referrals per referrer per month.
    pub cap_per_referrer_per_month: i64,
    /// Window start, Unix ms.
    pub starts_at_ms: Option<i64>,
    /// Window end, Unix ms.
    pub ends_at_ms: Option<i64>,
    /// Whether it is switched on.
    pub active: bool,
    /// Created, Unix ms.
    pub created_at_ms: i64,
}

/// A member's invite code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InviteCode {
    /// The member.
    pub member_id: String,
    /// The code to share.
    pub code: String,
    /// Made, Unix ms.
    pub created_at_ms: i64,
}

/// An invitee attaching a code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// The referrer's invite code (case and spaces are ignored).
    pub code: String,
}

/// Where a referral stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    /// Waiting for the invitee's first qualifying purchase.
    Pending,
    /// Both members were rewarded.
    Rewarded,
    /// Decided without reward (see `reason`).
    Rejected,
    /// Rewarded, then the qualifying purchase was refunded and the rewards taken back.
    ClawedBack,
}

impl ReferralStatus {
    fn parse(text: &str) -> Self {
        match text {
            "rewarded" => Self::Rewarded,
            "rejected" => Self::Rejected,
            "clawed_back" => Self::ClawedBack,
            _ => Self::Pending,
        }
    }
}

/// One referral.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Referral {
    /// Referral id.
    pub id: String,
    /// Its programme.
    pub programme_id: String,
    /// Who invited.
    pub referrer_id: String,
    /// Who was invited.
    pub invitee_id: String,
    /// The code attached.
    pub code: String,
    /// Where it stands.
    pub status: ReferralStatus,
    /// Why it earned nothing: `self_referral`, `same_phone`, `same_person`, `blacklisted`,
    /// `referrer_blocked`, `referrer_cap_reached`, `programme_ended`.
    pub reason: Option<String>,
    /// The qualifying purchase (internal id).
    pub purchase_id: Option<String>,
    /// Points credited to the referrer.
    pub referrer_points: i64,
    /// Points credited to the invitee.
    pub invitee_points: i64,
    /// On claw-back: points the referrer no longer had, recorded as debt.
    pub referrer_shortfall: i64,
    /// On claw-back: points the invitee no longer had, recorded as debt.
    pub invitee_shortfall: i64,
    /// Attached, Unix ms.
    pub attached_at_ms: i64,
    /// Decided, Unix ms.
    pub decided_at_ms: Option<i64>,
    /// Clawed back, Unix ms.
    pub clawed_back_at_ms: Option<i64>,
}

/// A member's referrals: their code, who invited them, whom they invited.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberReferrals {
    /// The member.
    pub member_id: String,
    /// Their invite code, if they made one.
    pub code: Option<String>,
    /// The referral that brought them, if any.
    pub invited_by: Option<Referral>,
    /// Referrals they made, newest first (at most 200).
    pub invited: Vec<Referral>,
    /// All referrals they made.
    pub invited_count: i64,
    /// Of which rewarded (and not clawed back).
    pub rewarded_count: i64,
}

/// A programme's figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProgrammeStats {
    /// The programme.
    pub programme: ProgrammeView,
    /// Codes attached.
    pub attached: i64,
    /// Waiting for a qualifying purchase.
    pub pending: i64,
    /// Rewarded.
    pub rewarded: i64,
    /// Rewarded, then clawed back.
    pub clawed_back: i64,
    /// Rejected, in all.
    pub rejected: i64,
    /// Rejections per reason.
    pub rejected_by_reason: BTreeMap<String, i64>,
    /// Points credited to referrers (rewarded referrals, net of claw-backs).
    pub referrer_points: i64,
    /// Points credited to invitees (net of claw-backs).
    pub invitee_points: i64,
}

fn invalid(code: &'static str, detail: impl Into<String>) -> DomainError {
    DomainError::bad_request(code, detail)
}

fn validate_programme(req: &ProgrammeRequest) -> DomainResult<()> {
    check_path_id("programme", &req.id)
        .map_err(|_| invalid("invalid_programme_id", "id: 1..=100 of A-Z a-z 0-9 - _ . :"))?;
    let title = req.title.trim();
    if title.is_empty() || req.title.len() > MAX_TITLE_LEN {
        return Err(invalid(
            "invalid_programme_title",
            format!("title: 1..={MAX_TITLE_LEN} bytes, not blank"),
        ));
    }
    for (field, points) in [
        ("referrer_points", req.referrer_points),
        ("invitee_points", req.invitee_points),
    ] {
        if !(0..=MAX_REWARD_POINTS).contains(&points) {
            return Err(invalid(
                "invalid_reward_points",
                format!("{field} must be 0..={MAX_REWARD_POINTS}"),
            ));
        }
    }
    if req.referrer_points + req.invitee_points == 0 {
        return Err(invalid(
            "invalid_reward_points",
            "a programme rewards the referrer, the invitee or both",
        ));
    }
    if !(0..=MAX_MIN_PURCHASE_CENTS).contains(&req.min_purchase_cents) {
        return Err(invalid(
            "invalid_min_purchase",
            format!("min_purchase_cents must be 0..={MAX_MIN_PURCHASE_CENTS}"),
        ));
    }
    if !(1..=MAX_CAP_PER_MONTH).contains(&req.cap_per_referrer_per_month) {
        return Err(invalid(
            "invalid_referral_cap",
            format!("cap_per_referrer_per_month must be 1..={MAX_CAP_PER_MONTH}"),
        ));
    }
    if let (Some(start), Some(end)) = (req.starts_at_ms, req.ends_at_ms) {
        if end <= start {
            return Err(invalid(
                "invalid_window",
                "ends_at_ms must be after starts_at_ms",
            ));
        }
    }
    if req.starts_at_ms.is_some_and(|t| t < 0) || req.ends_at_ms.is_some_and(|t| t < 0) {
        return Err(invalid("invalid_window", "times are Unix ms, >= 0"));
    }
    Ok(())
}

const PROGRAMME_COLUMNS: &str = "id, title, referrer_points, invitee_points, funding_brand, \
    min_purchase_cents, cap_per_referrer_per_month, starts_at, ends_at, active, created_at";

type ProgrammeRow = (
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
);

fn programme_view(r: ProgrammeRow) -> ProgrammeView {
    ProgrammeView {
        id: r.0,
        title: r.1,
        referrer_points: r.2,
        invitee_points: r.3,
        funding_brand: r.4,
        min_purchase_cents: r.5,
        cap_per_referrer_per_month: r.6,
        starts_at_ms: r.7,
        ends_at_ms: r.8,
        active: r.9 != 0,
        created_at_ms: r.10,
    }
}

impl ProgrammeView {
    /// Whether the programme is switched on and `now_ms` is inside its window.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.active
            && self.starts_at_ms.is_none_or(|s| s <= now_ms)
            && self.ends_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// Creates a programme (the caller checked the admin role).
pub async fn create_programme(
    conn: &mut AnyConnection,
    req: &ProgrammeRequest,
    now_ms: i64,
) -> DomainResult<ProgrammeView> {
    validate_programme(req)?;
    if let Some(brand) = &req.funding_brand {
        check_path_id("brand", brand)?;
        crate::ledger::require_brand_exists(conn, brand).await?;
    }
    sqlx::query(
        "INSERT INTO referral_programmes (id, title, referrer_points, invitee_points,
            funding_brand, min_purchase_cents, cap_per_referrer_per_month, starts_at, ends_at,
            active, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10)",
    )
    .bind(&req.id)
    .bind(req.title.trim())
    .bind(req.referrer_points)
    .bind(req.invitee_points)
    .bind(req.funding_brand.as_deref())
    .bind(req.min_purchase_cents)
    .bind(req.cap_per_referrer_per_month)
    .bind(req.starts_at_ms)
    .bind(req.ends_at_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| {
        DomainError::conflict(
            "programme_exists",
            format!("referral programme {:?} already exists", req.id),
        )
    })?;
    programme(conn, &req.id).await
}

/// One programme, or 404.
pub async fn programme(conn: &mut AnyConnection, id: &str) -> DomainResult<ProgrammeView> {
    let row: Option<ProgrammeRow> = sqlx::query_as(&format!(
        "SELECT {PROGRAMME_COLUMNS} FROM referral_programmes WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(programme_view)
        .ok_or_else(|| DomainError::not_found("referral programme", id))
}

/// Every programme, newest first (at most [`MAX_PROGRAMMES`]).
pub async fn programmes(pool: &AnyPool) -> DomainResult<Vec<ProgrammeView>> {
    let rows: Vec<ProgrammeRow> = sqlx::query_as(&format!(
        "SELECT {PROGRAMME_COLUMNS} FROM referral_programmes
         ORDER BY created_at DESC, id LIMIT {MAX_PROGRAMMES}"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(programme_view).collect())
}

/// Switches a programme on or off (off: no new codes attach, pending referrals are rejected
/// with `programme_ended` when they would qualify).
pub async fn set_active(
    conn: &mut AnyConnection,
    id: &str,
    active: bool,
    now_ms: i64,
) -> DomainResult<ProgrammeView> {
    let done =
        sqlx::query("UPDATE referral_programmes SET active = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(active))
            .bind(now_ms)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if done == 0 {
        return Err(DomainError::not_found("referral programme", id));
    }
    programme(conn, id).await
}

fn fresh_code() -> String {
    let mut bytes = [0u8; CODE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(b % 32)]))
        .collect()
}

/// Normalises a typed code: upper case, spaces and dashes dropped, look-alikes mapped
/// (`O`→`0`, `I`/`L`→`1`).
fn normalise_code(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

async fn member_phone(conn: &mut AnyConnection, member_id: &str) -> DomainResult<String> {
    let row: Option<(String,)> = sqlx::query_as("SELECT phone FROM members WHERE id = $1")
        .bind(member_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|(p,)| p)
        .ok_or_else(|| DomainError::not_found("member", member_id))
}

/// The member's invite code, made on the first call; later calls return the same code. The
/// boolean says whether it was made now.
pub async fn invite_code(
    conn: &mut AnyConnection,
    member_id: &str,
    now_ms: i64,
) -> DomainResult<(InviteCode, bool)> {
    let phone = member_phone(conn, member_id).await?;
    if let Some(code) = existing_code(conn, member_id).await? {
        return Ok((code, false));
    }
    for _ in 0..CODE_ATTEMPTS {
        let code = fresh_code();
        // A code clash and a concurrent first call both hit a unique index; the second case
        // is resolved by reading the winner's code below.
        let inserted = sqlx::query(
            "INSERT INTO referral_codes (member_id, code, phone, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(member_id)
        .bind(&code)
        .bind(&phone)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if let Some(found) = existing_code(conn, member_id).await? {
            return Ok((found, inserted == 1));
        }
    }
    Err(DomainError::internal(anyhow::anyhow!(
        "no free invite code after {CODE_ATTEMPTS} attempts"
    )))
}

async fn existing_code(
    conn: &mut AnyConnection,
    member_id: &str,
) -> DomainResult<Option<InviteCode>> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT code, created_at FROM referral_codes WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(code, created_at_ms)| InviteCode {
        member_id: member_id.to_owned(),
        code,
        created_at_ms,
    }))
}

/// The invitee attaches a code: once, before their first purchase, while a programme is in
/// force. A self-referral or a shared phone is recorded as rejected at once.
pub async fn attach(
    conn: &mut AnyConnection,
    invitee_id: &str,
    req: &AttachRequest,
    now_ms: i64,
) -> DomainResult<Referral> {
    let code = normalise_code(&req.code);
    if code.len() != CODE_LEN || !code.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
        return Err(invalid(
            "invalid_invite_code",
            format!("an invite code is {CODE_LEN} letters and digits"),
        ));
    }
    let invitee_phone = member_phone(conn, invitee_id).await?;
    let owner: Option<(String, String)> =
        sqlx::query_as("SELECT member_id, phone FROM referral_codes WHERE code = $1")
            .bind(&code)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((referrer_id, code_phone)) = owner else {
        return Err(DomainError::unprocessable(
            "unknown_invite_code",
            "no member has this invite code",
        ));
    };
    let already: Option<(String,)> =
        sqlx::query_as("SELECT id FROM referrals WHERE invitee_id = $1")
            .bind(invitee_id)
            .fetch_optional(&mut *conn)
            .await?;
    if already.is_some() {
        return Err(referral_exists(invitee_id));
    }
    let bought: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM purchases WHERE member_id = $1")
        .bind(invitee_id)
        .fetch_optional(&mut *conn)
        .await?;
    if bought.is_some() {
        return Err(DomainError::unprocessable(
            "invitee_has_purchased",
            "a code is attached before the member's first purchase",
        ));
    }
    let programmes: Vec<ProgrammeRow> = sqlx::query_as(&format!(
        "SELECT {PROGRAMME_COLUMNS} FROM referral_programmes WHERE active = 1
         ORDER BY created_at DESC, id LIMIT {MAX_PROGRAMMES}"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let Some(programme) = programmes
        .into_iter()
        .map(programme_view)
        .find(|p| p.in_force(now_ms))
    else {
        return Err(DomainError::unprocessable(
            "no_referral_programme",
            "no referral programme is in force",
        ));
    };
    let referrer_phone = member_phone(conn, &referrer_id).await?;
    let reason = if referrer_id == invitee_id {
        Some("self_referral")
    } else if [&code_phone, &referrer_phone].contains(&&invitee_phone) {
        Some("same_phone")
    } else {
        None
    };
    let id = new_id();
    sqlx::query(
        "INSERT INTO referrals (id, programme_id, referrer_id, invitee_id, code, referrer_phone,
            invitee_phone, status, reason, decided_at, attached_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&programme.id)
    .bind(&referrer_id)
    .bind(invitee_id)
    .bind(&code)
    .bind(&referrer_phone)
    .bind(&invitee_phone)
    .bind(if reason.is_some() {
        "rejected"
    } else {
        "pending"
    })
    .bind(reason)
    .bind(reason.map(|_| now_ms))
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(|| referral_exists(invitee_id))?;
    load(conn, &id).await
}

fn referral_exists(invitee_id: &str) -> DomainError {
    DomainError::conflict(
        "referral_exists",
        format!("member {invitee_id:?} has already attached an invite code"),
    )
}

const REFERRAL_COLUMNS: &str = "id, programme_id, referrer_id, invitee_id, code, status, \
    reason, purchase_id, referrer_points, invitee_points, referrer_shortfall, \
    invitee_shortfall, attached_at, decided_at, clawed_back_at";

type ReferralRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

fn referral_view(r: ReferralRow) -> Referral {
    Referral {
        id: r.0,
        programme_id: r.1,
        referrer_id: r.2,
        invitee_id: r.3,
        code: r.4,
        status: ReferralStatus::parse(&r.5),
        reason: r.6,
        purchase_id: r.7,
        referrer_points: r.8,
        invitee_points: r.9,
        referrer_shortfall: r.10,
        invitee_shortfall: r.11,
        attached_at_ms: r.12,
        decided_at_ms: r.13,
        clawed_back_at_ms: r.14,
    }
}

async fn load(conn: &mut AnyConnection, id: &str) -> DomainResult<Referral> {
    let row: Option<ReferralRow> = sqlx::query_as(&format!(
        "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(referral_view)
        .ok_or_else(|| DomainError::not_found("referral", id))
}

/// Why a referral earns nothing now, if it does not earn.
async fn rejection(
    conn: &mut AnyConnection,
    referral: &Referral,
    programme: &ProgrammeView,
    points: &PointsConfig,
    now_ms: i64,
) -> DomainResult<Option<&'static str>> {
    use crate::domain::risk::{is_blacklisted, SubjectKind};
    if referral.referrer_id == referral.invitee_id {
        return Ok(Some("self_referral"));
    }
    if !programme.in_force(now_ms) {
        return Ok(Some("programme_ended"));
    }
    let phones: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.referrer_phone, r.invitee_phone, m.phone, c.phone
         FROM referrals r JOIN members m ON m.id = r.referrer_id
         LEFT JOIN referral_codes c ON c.member_id = r.referrer_id
         WHERE r.id = $1",
    )
    .bind(&referral.id)
    .fetch_all(&mut *conn)
    .await?;
    let invitee_now = member_phone(conn, &referral.invitee_id).await?;
    for (referrer_then, invitee_then, referrer_now, code_phone) in phones {
        let theirs = [Some(referrer_then), Some(referrer_now), code_phone];
        if theirs
            .iter()
            .flatten()
            .any(|p| *p == invitee_then || *p == invitee_now)
        {
            return Ok(Some("same_phone"));
        }
    }
    let same_person: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM member_verifications a JOIN member_verifications b
           ON a.reference = b.reference
         WHERE a.member_id = $1 AND b.member_id = $2",
    )
    .bind(&referral.referrer_id)
    .bind(&referral.invitee_id)
    .fetch_optional(&mut *conn)
    .await?;
    if same_person.is_some() {
        return Ok(Some("same_person"));
    }
    for member in [&referral.referrer_id, &referral.invitee_id] {
        if is_blacklisted(conn, SubjectKind::Member, member).await? {
            return Ok(Some("blacklisted"));
        }
    }
    let (status,): (String,) = sqlx::query_as("SELECT status FROM members WHERE id = $1")
        .bind(&referral.referrer_id)
        .fetch_one(&mut *conn)
        .await?;
    if status != "active" {
        return Ok(Some("referrer_blocked"));
    }
    let month = reward_month(points, now_ms)?;
    let (rewarded,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM referrals
         WHERE referrer_id = $1 AND status = 'rewarded' AND reward_month = $2",
    )
    .bind(&referral.referrer_id)
    .bind(&month)
    .fetch_one(&mut *conn)
    .await?;
    if rewarded >= programme.cap_per_referrer_per_month {
        return Ok(Some("referrer_cap_reached"));
    }
    Ok(None)
}

fn reward_month(points: &PointsConfig, now_ms: i64) -> DomainResult<String> {
    let (year, month) = local_year_month(now_ms, points.utc_offset_minutes)?;
    Ok(format!("{year:04}-{month:02}"))
}

/// Decides the invitee's pending referral on a purchase just recorded in this transaction:
/// nothing unless it is their first purchase reaching the programme's minimum (see the module
/// doc). Returns the decided referral.
pub async fn on_purchase(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    purchase: &PurchaseView,
    now_ms: i64,
) -> DomainResult<Option<Referral>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM referrals WHERE invitee_id = $1 AND status = 'pending'")
            .bind(&purchase.member_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((id,)) = row else {
        return Ok(None);
    };
    let referral = load(conn, &id).await?;
    let programme = programme(conn, &referral.programme_id).await?;
    if purchase.eligible_cents < programme.min_purchase_cents {
        return Ok(None);
    }
    if let Some(reason) = rejection(conn, &referral, &programme, points, now_ms).await? {
        let done = sqlx::query(
            "UPDATE referrals SET status = 'rejected', reason = $1, purchase_id = $2,
                decided_at = $3
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(reason)
        .bind(&purchase.id)
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        return if done == 1 {
            Ok(Some(load(conn, &id).await?))
        } else {
            Ok(None)
        };
    }
    // Claim the decision first: a concurrent purchase of the same invitee finds it taken.
    let month = reward_month(points, now_ms)?;
    let claimed = sqlx::query(
        "UPDATE referrals SET status = 'rewarded', purchase_id = $1, decided_at = $2,
            reward_month = $3, referrer_points = $4, invitee_points = $5
         WHERE id = $6 AND status = 'pending'",
    )
    .bind(&purchase.id)
    .bind(now_ms)
    .bind(&month)
    .bind(programme.referrer_points)
    .bind(programme.invitee_points)
    .bind(&id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed != 1 {
        return Ok(None);
    }
    let funder = programme.funding_brand.as_deref();
    let mut entries: [Option<String>; 2] = [None, None];
    // Referrer first, then invitee: one order everywhere.
    for (slot, (side, member, reward)) in [
        ("referrer", &referral.referrer_id, programme.referrer_points),
        ("invitee", &referral.invitee_id, programme.invitee_points),
    ]
    .into_iter()
    .enumerate()
    {
        if reward <= 0 {
            continue;
        }
        let _wallet = lock_wallet(conn, backend, member, now_ms).await?;
        let refs = EntryRefs {
            brand_id: funder.map(str::to_owned),
            purchase_id: Some(purchase.id.clone()),
            ..EntryRefs::default()
        };
        let memo = format!("referral reward ({side})");
        let mut entry = Entry::open(conn, EntryKind::Earn, member, &refs, &memo, now_ms).await?;
        credit_lot(
            conn,
            &mut entry,
            Account::Issuance(funder),
            reward,
            "bonus",
            &memo,
            points.expiry_for(now_ms)?,
            None,
            funder,
            now_ms,
        )
        .await?;
        let (entry_id, _debt_settled) = entry.close_settling(conn, now_ms).await?;
        entries[slot] = Some(entry_id);
        if let Some(brand) = funder {
            outbox::record(
                conn,
                &NewEvent {
                    kind: EventKind::PointsIssued,
                    brand_id: brand,
                    funding_brand: brand,
                    honouring_brand: brand,
                    reference: None,
                    plugin: None,
                    points: reward,
                    value_cents: points_value_cents(points, reward),
                    member_id: Some(member),
                    subject_kind: "referral",
                    subject_id: &format!("{id}:{side}"),
                    reverses_event_id: None,
                    occurred_at: now_ms,
                },
                now_ms,
            )
            .await?;
        }
    }
    sqlx::query("UPDATE referrals SET referrer_entry_id = $1, invitee_entry_id = $2 WHERE id = $3")
        .bind(entries[0].as_deref())
        .bind(entries[1].as_deref())
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    let referral = load(conn, &id).await?;
    // The brand where the qualifying purchase happened hears of it, and the funder if
    // another brand.
    let mut told = vec![purchase.brand_id.as_str()];
    if let Some(brand) = funder.filter(|b| *b != purchase.brand_id) {
        told.push(brand);
    }
    for brand in told {
        crate::domain::webhooks::record(
            conn,
            brand,
            crate::domain::webhooks::EventType::ReferralRewarded,
            Some(&referral.invitee_id),
            serde_json::json!({
                "referral_id": referral.id,
                "programme_id": referral.programme_id,
                "referrer_id": referral.referrer_id,
                "invitee_id": referral.invitee_id,
                "purchase_id": purchase.id,
                "order_id": purchase.order_id,
                "referrer_points": referral.referrer_points,
                "invitee_points": referral.invitee_points,
            }),
        )
        .await?;
    }
    Ok(Some(referral))
}

/// Claws back a referral's rewards when a refund (recorded in this transaction) leaves its
/// qualifying purchase below the programme's minimum, or fully refunded. Returns the
/// clawed-back referral.
pub async fn on_refund(
    conn: &mut AnyConnection,
    backend: Backend,
    points: &PointsConfig,
    purchase_id: &str,
    refund_pk: &str,
    now_ms: i64,
) -> DomainResult<Option<Referral>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM referrals WHERE purchase_id = $1 AND status = 'rewarded'")
            .bind(purchase_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((id,)) = row else {
        return Ok(None);
    };
    let referral = load(conn, &id).await?;
    let programme = programme(conn, &referral.programme_id).await?;
    // What is left of the purchase: per line, the eligible spend less its refunded share
    // (the refunds' own cumulative rule, so it matches what they reversed).
    let lines: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT eligible_cents, quantity, refunded_quantity FROM purchase_lines
         WHERE purchase_id = $1",
    )
    .bind(purchase_id)
    .fetch_all(&mut *conn)
    .await?;
    let fully_refunded = lines.iter().all(|(_, q, r)| q == r);
    let left: i64 = lines
        .iter()
        .map(|(eligible, q, r)| {
            let refunded = i128::from(*eligible) * i128::from(*r) / i128::from((*q).max(1));
            eligible - i64::try_from(refunded).unwrap_or(*eligible)
        })
        .sum();
    if !fully_refunded && left >= programme.min_purchase_cents {
        return Ok(None);
    }
    let claimed = sqlx::query(
        "UPDATE referrals SET status = 'clawed_back', clawed_back_at = $1
         WHERE id = $2 AND status = 'rewarded'",
    )
    .bind(now_ms)
    .bind(&id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed != 1 {
        return Ok(None);
    }
    let funder = programme.funding_brand.as_deref();
    let mut shortfalls = [0i64; 2];
    for (slot, (side, member, reward)) in [
        ("referrer", &referral.referrer_id, referral.referrer_points),
        ("invitee", &referral.invitee_id, referral.invitee_points),
    ]
    .into_iter()
    .enumerate()
    {
        if reward <= 0 {
            continue;
        }
        let wallet = lock_wallet(conn, backend, member, now_ms).await?;
        let refs = EntryRefs {
            brand_id: funder.map(str::to_owned),
            purchase_id: Some(purchase_id.to_owned()),
            refund_id: Some(refund_pk.to_owned()),
            ..EntryRefs::default()
        };
        let memo = format!("referral reward clawed back ({side})");
        let mut entry = Entry::open(conn, EntryKind::Refund, member, &refs, &memo, now_ms).await?;
        // The refund rule: what the wallet holds is taken, the rest becomes debt.
        let clawed = reward.min(wallet.balance);
        let shortfall = reward - clawed;
        entry
            .apply_wallet(conn, -clawed, 0, shortfall, now_ms)
            .await?;
        if clawed > 0 {
            consume_lots(conn, &entry, clawed, None, now_ms).await?;
            entry.post(Account::Wallet, -clawed, "referral clawback");
        }
        if shortfall > 0 {
            entry.post(
                Account::Receivable,
                -shortfall,
                "referral clawback shortfall",
            );
        }
        entry.post(Account::Issuance(funder), reward, "referral clawback");
        entry.close(conn, now_ms).await?;
        shortfalls[slot] = shortfall;
        if let Some(brand) = funder {
            let subject = format!("{id}:{side}");
            let reverses =
                outbox::find(conn, "referral", &subject, EventKind::PointsIssued, None).await?;
            outbox::record(
                conn,
                &NewEvent {
                    kind: EventKind::Refund,
                    brand_id: brand,
                    funding_brand: brand,
                    honouring_brand: brand,
                    reference: Some(EventKind::PointsIssued.as_str()),
                    plugin: None,
                    points: reward,
                    value_cents: points_value_cents(points, reward),
                    member_id: Some(member),
                    subject_kind: "referral_clawback",
                    subject_id: &subject,
                    reverses_event_id: reverses.as_deref(),
                    occurred_at: now_ms,
                },
                now_ms,
            )
            .await?;
        }
    }
    sqlx::query(
        "UPDATE referrals SET referrer_shortfall = $1, invitee_shortfall = $2 WHERE id = $3",
    )
    .bind(shortfalls[0])
    .bind(shortfalls[1])
    .bind(&id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(load(conn, &id).await?))
}

/// A member's code and referrals.
pub async fn member_referrals(pool: &AnyPool, member_id: &str) -> DomainResult<MemberReferrals> {
    let mut conn = pool.acquire().await?;
    member_phone(&mut conn, member_id).await?;
    let code = existing_code(&mut conn, member_id).await?.map(|c| c.code);
    let by: Option<ReferralRow> = sqlx::query_as(&format!(
        "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE invitee_id = $1"
    ))
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    let invited: Vec<ReferralRow> = sqlx::query_as(&format!(
        "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referrer_id = $1
         ORDER BY attached_at DESC, id LIMIT {MAX_REFERRALS_SHOWN}"
    ))
    .bind(member_id)
    .fetch_all(&mut *conn)
    .await?;
    let (invited_count, rewarded_count): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN status = 'rewarded' THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM referrals WHERE referrer_id = $1",
    )
    .bind(member_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(MemberReferrals {
        member_id: member_id.to_owned(),
        code,
        invited_by: by.map(referral_view),
        invited: invited.into_iter().map(referral_view).collect(),
        invited_count,
        rewarded_count,
    })
}

/// A programme's figures, counted in SQL.
pub async fn programme_stats(pool: &AnyPool, id: &str) -> DomainResult<ProgrammeStats> {
    let mut conn = pool.acquire().await?;
    let programme = programme(&mut conn, id).await?;
    let rows: Vec<(String, Option<String>, i64, i64, i64)> = sqlx::query_as(
        "SELECT status, reason, CAST(COUNT(*) AS BIGINT),
                CAST(COALESCE(SUM(referrer_points), 0) AS BIGINT),
                CAST(COALESCE(SUM(invitee_points), 0) AS BIGINT)
         FROM referrals WHERE programme_id = $1 GROUP BY status, reason",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut stats = ProgrammeStats {
        programme,
        attached: 0,
        pending: 0,
        rewarded: 0,
        clawed_back: 0,
        rejected: 0,
        rejected_by_reason: BTreeMap::new(),
        referrer_points: 0,
        invitee_points: 0,
    };
    for (status, reason, n, referrer_points, invitee_points) in rows {
        stats.attached += n;
        match ReferralStatus::parse(&status) {
            ReferralStatus::Pending => stats.pending += n,
            ReferralStatus::Rewarded => {
                stats.rewarded += n;
                stats.referrer_points += referrer_points;
                stats.invitee_points += invitee_points;
            }
            ReferralStatus::ClawedBack => stats.clawed_back += n,
            ReferralStatus::Rejected => {
                stats.rejected += n;
                *stats
                    .rejected_by_reason
                    .entry(reason.unwrap_or_default())
                    .or_default() += n;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_and_from_the_alphabet() {
        let a = fresh_code();
        let b = fresh_code();
        assert_eq!(a.len(), CODE_LEN);
        assert!(a.bytes().all(|c| CODE_ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(normalise_code("ab-cd o1 il"), "ABCD0111");
        assert_eq!(normalise_code(" 7k3m-9p2q-rs "), "7K3M9P2QRS");
    }
}
