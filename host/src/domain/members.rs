//! Members: one identity shared by every brand of the coalition.
//!
//! This module owns the rules for a member's profile (E.164 phone, name, birthday, email, tags),
//! the masking of personal data for callers who may not see it, blocking with an audit trail,
//! and the SQL behind the members API. Batch import and export live in [`transfer`].
//!
//! # Who sees what
//! Admins and the member's own key see the profile as stored. Every other caller (brand and
//! counter keys, which serve all members of the coalition) gets a masked view: the phone keeps
//! its country prefix and last four digits (`+86138****8000`), the name only its first character
//! (`王**`), the email only the first character of its local part (`a***@example.com`), and the
//! birthday only its month (for birthday-month offers). Enough to recognise a member at a
//! counter, not enough to harvest a contact list.

pub mod transfer;

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::domain::access::Principal;
use crate::foundation::error::DomainError;
use crate::foundation::store::UniqueAsConflict;

/// Tags per member: enough for segments and campaigns, few enough to load with every view.
pub const MAX_TAGS_PER_MEMBER: usize = 64;
/// Characters per tag: a short label, not a note.
pub const MAX_TAG_CHARS: usize = 40;
/// Characters in a name; anything longer is pasted garbage, not a name.
pub const MAX_NAME_CHARS: usize = 100;
/// RFC 5321 limit on the length of an address.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Characters in a block or unblock reason: a sentence for the audit trail.
pub const MAX_REASON_CHARS: usize = 500;
/// The shortest national numbering plans give 7 digits including the country code.
const MIN_PHONE_DIGITS: usize = 7;
/// E.164 caps a number at 15 digits including the country code.
const MAX_PHONE_DIGITS: usize = 15;
/// Earliest accepted birth year; older dates are typos.
const MIN_BIRTH_YEAR: i32 = 1900;
/// Page size when the caller names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page: keeps one list call (members plus their tags) to a few hundred rows.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Leading characters that spreadsheets treat as a formula; refused at the start of free-text
/// fields so an exported CSV can be opened safely.
const FORMULA_PREFIXES: [char; 4] = ['=', '+', '-', '@'];

/// A field that failed validation: a stable code, the field's name and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Stable code, e.g. `invalid_phone`.
    pub code: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub detail: String,
}

impl FieldError {
    fn new(code: &'static str, field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            field,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

impl From<FieldError> for DomainError {
    fn from(err: FieldError) -> Self {
        DomainError::bad_request(err.code, err.detail).with_extra(serde_json::json!({
            "field": err.field,
        }))
    }
}

/// Normalises a phone number to E.164 (`+` and 7–15 digits). Spaces, dashes, dots and
/// parentheses are dropped, so `+86 138-0013-8000` is accepted as `+8613800138000`.
pub fn normalize_phone(raw: &str) -> Result<String, FieldError> {
    let invalid = || {
        FieldError::new(
            "invalid_phone",
            "phone",
            "phone must be in E.164 form: + then the country code and number, 7 to 15 digits, \
             e.g. +8613800138000",
        )
    };
    let rest = raw.trim().strip_prefix('+').ok_or_else(invalid)?;
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len())
        || digits.starts_with('0')
    {
        return Err(invalid());
    }
    Ok(format!("+{digits}"))
}

/// Masks a normalised phone number: the four digits before the last four become `*`, so
/// `+8613800138000` becomes `+86138****8000`.
pub fn mask_phone(phone: &str) -> String {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if !digits.is_ascii() || digits.len() <= 4 {
        return "****".to_owned();
    }
    let masked = 4.min(digits.len() - 4);
    let head_len = digits.len() - 4 - masked;
    format!(
        "+{}{}{}",
        &digits[..head_len],
        "*".repeat(masked),
        &digits[digits.len() - 4..]
    )
}

/// Masks a name: the first character stays, every other non-space character becomes `*`.
/// A one-character name is fully masked (showing it would show all of it).
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let rest: String = chars
        .map(|c| if c.is_whitespace() { c } else { '*' })
        .collect();
    if rest.is_empty() {
        "*".to_owned()
    } else {
        format!("{first}{rest}")
    }
}

/// Masks an email: the first character of the local part and the domain stay.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Validates a name: trimmed, 1–100 characters, no control characters, and not starting with a
/// spreadsheet formula character.
pub fn validate_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "invalid_name",
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) || name.starts_with(FORMULA_PREFIXES) {
        return Err(FieldError::new(
            "invalid_name",
            "name",
            "name must not contain control characters or start with =, +, - or @",
        ));
    }
    Ok(name.to_owned())
}

/// Validates an email address loosely (one `@`, a dotted domain, no spaces) and lowercases its
/// domain. Deliverability is the mailer's business, not ours.
pub fn validate_email(raw: &str) -> Result<String, FieldError> {
    let invalid = |why: &str| {
        FieldError::new(
            "invalid_email",
            "email",
            format!("email {why}; expected e.g. alice@example.com"),
        )
    };
    let email = raw.trim();
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid(&format!(
            "is longer than {MAX_EMAIL_CHARS} characters"
        )));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains spaces or control characters"));
    }
    if email.starts_with(FORMULA_PREFIXES) {
        return Err(invalid("must not start with =, +, - or @"));
    }
    let (local, domain) = email.split_once('@').ok_or_else(|| invalid("has no @"))?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(invalid("is not of the form local@domain.tld"));
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// Validates a birthday `YYYY-MM-DD`: a real calendar date from 1900 up to tomorrow (UTC), one
/// day of slack for members east of Greenwich born today.
pub fn validate_birthday(raw: &str, now_ms: i64) -> Result<String, FieldError> {
    let invalid = |why: &str| FieldError::new("invalid_birthday", "birthday", why.to_owned());
    let s = raw.trim();
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err(invalid("birthday must be a date YYYY-MM-DD"));
    }
    let year: i32 = s[0..4].parse().map_err(|_| invalid("bad year"))?;
    let month: u8 = s[5..7].parse().map_err(|_| invalid("bad month"))?;
    let day: u8 = s[8..10].parse().map_err(|_| invalid("bad day"))?;
    let month =
        time::Month::try_from(month).map_err(|_| invalid("birthday month must be 01 to 12"))?;
    let date = time::Date::from_calendar_date(year, month, day)
        .map_err(|_| invalid("birthday is not a real calendar date"))?;
    let today = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .map(|t| t.date())
        .unwrap_or(time::Date::MAX);
    let latest = today.next_day().unwrap_or(today);
    if year < MIN_BIRTH_YEAR || date > latest {
        return Err(invalid(&format!(
            "birthday must be between {MIN_BIRTH_YEAR}-01-01 and today"
        )));
    }
    Ok(s.to_owned())
}

/// Normalises a tag: trimmed, lowercased, runs of whitespace become one `-`; then 1–40
/// characters of letters, digits, `-`, `_`, `:` or `.`, starting with a letter or digit.
/// `" Skincare  Enthusiast "` becomes `skincare-enthusiast`; `护肤达人` stays as it is.
pub fn normalize_tag(raw: &str) -> Result<String, FieldError> {
    let mut tag = String::new();
    let mut pending_dash = false;
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            pending_dash = true;
            continue;
        }
        if pending_dash {
            tag.push('-');
            pending_dash = false;
        }
        tag.push(c);
    }
    let count = tag.chars().count();
    let well_formed = tag.chars().next().is_some_and(char::is_alphanumeric)
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    if count == 0 || count > MAX_TAG_CHARS || !well_formed {
        return Err(FieldError::new(
            "invalid_tag",
            "tags",
            format!(
                "tag {raw:?} must be 1 to {MAX_TAG_CHARS} letters, digits, -, _, : or ., \
                 starting with a letter or digit"
            ),
        ));
    }
    Ok(tag)
}

/// Normalises a list of tags, dropping duplicates (first occurrence wins) and refusing more than
/// [`MAX_TAGS_PER_MEMBER`].
pub fn normalize_tags(raw: &[String]) -> Result<Vec<String>, FieldError> {
    if raw.len() > MAX_TAGS_PER_MEMBER {
        return Err(too_many_tags());
    }
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for t in raw {
        let tag = normalize_tag(t)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

fn too_many_tags() -> FieldError {
    FieldError::new(
        "too_many_tags",
        "tags",
        format!("a member has at most {MAX_TAGS_PER_MEMBER} tags"),
    )
}

/// Validates a block or unblock reason.
pub fn validate_reason(raw: &str) -> Result<String, FieldError> {
    let reason = raw.trim();
    let count = reason.chars().count();
    if count == 0 || count > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(FieldError::new(
            "invalid_reason",
            "reason",
            format!("reason must be 1 to {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    Ok(reason.to_owned())
}

/// A member's status; blocked members are refused by earning and spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Normal.
    Active,
    /// Refused by earning and spending until unblocked.
    Blocked,
}

impl MemberStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> MemberStatus {
        // The CHECK constraint allows only these two values.
        if s == "blocked" {
            MemberStatus::Blocked
        } else {
            MemberStatus::Active
        }
    }
}

/// A trimmed optional field; empty counts as absent.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// A validated new member, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// E.164 phone.
    pub phone: String,
    /// Display name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birthday: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Normalised, deduplicated tags.
    pub tags: Vec<String>,
}

impl NewMember {
    /// Validates raw fields; `now_ms` bounds the birthday. Empty birthday or email count as absent.
    pub fn validate(
        phone: &str,
        name: &str,
        birthday: Option<&str>,
        email: Option<&str>,
        tags: &[String],
        now_ms: i64,
    ) -> Result<NewMember, FieldError> {
        Ok(NewMember {
            phone: normalize_phone(phone)?,
            name: validate_name(name)?,
            birthday: present(birthday)
                .map(|b| validate_birthday(b, now_ms))
                .transpose()?,
            email: present(email).map(validate_email).transpose()?,
            tags: normalize_tags(tags)?,
        })
    }
}

/// Body of `POST /members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMember {
    /// E.164 phone, e.g. `+8613800138000`; unique across the coalition.
    #[schema(example = "+8613800138000")]
    pub phone: String,
    /// Display name, 1–100 characters.
    #[schema(example = "Wang Xiaoming")]
    pub name: String,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    #[schema(example = "1990-05-17")]
    pub birthday: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Tags; normalised (lowercase, spaces to `-`), at most 64 of at most 40 characters.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Body of `PATCH /members/{id}`: only the fields present change; `null` clears an optional one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    /// New E.164 phone; admin only, because the phone is the member's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New email, or `null` to remove it.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, nullable)]
    pub email: Option<Option<String>>,
    /// New birthday `YYYY-MM-DD`, or `null` to remove it.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, nullable)]
    pub birthday: Option<Option<String>>,
}

/// Tells "field present and null" (`Some(None)`) from "field absent" (`None`, via `default`).
fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A member as stored, with its tags.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    /// Id.
    pub id: String,
    /// E.164 phone.
    pub phone: String,
    /// Display name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birthday: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// `active` or `blocked`.
    pub status: String,
    /// Why the member is blocked.
    pub blocked_reason: Option<String>,
    /// Current tier (owned by the tier ladder).
    pub tier: String,
    /// Brand whose key registered the member.
    pub joined_brand_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Tags, sorted.
    #[sqlx(skip)]
    pub tags: Vec<String>,
}

/// Columns of [`Member`] in `SELECT` order.
const MEMBER_COLUMNS: &str = "id, phone, name, birthday, email, status, blocked_reason, tier, \
    joined_brand_id, created_at, updated_at";

/// A member as an API caller sees it; see the module docs for what is masked for whom.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// Id.
    pub id: String,
    /// E.164 phone, masked (`+86138****8000`) unless the caller is an admin or the member.
    pub phone: String,
    /// Display name, masked to its first character unless the caller is an admin or the member.
    pub name: String,
    /// Email, masked unless the caller is an admin or the member.
    pub email: Option<String>,
    /// `YYYY-MM-DD`; `null` in masked views.
    pub birthday: Option<String>,
    /// Birth month 1–12, shown to every caller (birthday-month offers need no more).
    pub birthday_month: Option<u8>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Current tier.
    pub tier: String,
    /// `active` or `blocked`.
    pub status: MemberStatus,
    /// Why the member is blocked; only for admins and the member.
    pub blocked_reason: Option<String>,
    /// Brand whose key registered the member, if any.
    pub joined_brand_id: Option<String>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
    /// Whether personal fields are masked in this view.
    pub masked: bool,
}

impl Member {
    /// The view of this member for `principal`.
    pub fn view_for(&self, principal: &Principal) -> MemberView {
        self.view(!principal.sees_pii_of(&self.id))
    }

    /// The view of this member, masked or not.
    pub fn view(&self, masked: bool) -> MemberView {
        let birthday_month = self
            .birthday
            .as_deref()
            .and_then(|b| b.get(5..7))
            .and_then(|m| m.parse().ok());
        MemberView {
            id: self.id.clone(),
            phone: if masked {
                mask_phone(&self.phone)
            } else {
                self.phone.clone()
            },
            name: if masked {
                mask_name(&self.name)
            } else {
                self.name.clone()
            },
            email: self
                .email
                .as_deref()
                .map(|e| if masked { mask_email(e) } else { e.to_owned() }),
            birthday: if masked { None } else { self.birthday.clone() },
            birthday_month,
            tags: self.tags.clone(),
            tier: self.tier.clone(),
            status: MemberStatus::parse(&self.status),
            blocked_reason: if masked {
                None
            } else {
                self.blocked_reason.clone()
            },
            joined_brand_id: self.joined_brand_id.clone(),
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at,
            masked,
        }
    }
}

fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads the tags of `members` into them.
async fn attach_tags(conn: &mut AnyConnection, members: &mut [Member]) -> Result<(), sqlx::Error> {
    if members.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT member_id, tag FROM member_tags WHERE member_id IN ({}) ORDER BY member_id, tag",
        placeholders(1, members.len())
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for m in members.iter() {
        query = query.bind(m.id.clone());
    }
    let mut by_member: HashMap<String, Vec<String>> = HashMap::new();
    for (member_id, tag) in query.fetch_all(&mut *conn).await? {
        by_member.entry(member_id).or_default().push(tag);
    }
    for m in members.iter_mut() {
        m.tags = by_member.remove(&m.id).unwrap_or_default();
    }
    Ok(())
}

/// Loads a member by id.
pub async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<Member>, sqlx::Error> {
    let sql = format!("SELECT {MEMBER_COLUMNS} FROM members WHERE id = $1");
    let member: Option<Member> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let mut members: Vec<Member> = member.into_iter().collect();
    attach_tags(conn, &mut members).await?;
    Ok(members.pop())
}

/// Loads a member by id or fails with 404.
pub async fn fetch_existing(conn: &mut AnyConnection, id: &str) -> Result<Member, DomainError> {
    fetch(conn, id)
        .await?
        .ok_or_else(|| DomainError::not_found("member", id))
}

/// Filters of a member listing; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Exact normalised phone.
    pub phone: Option<String>,
    /// Normalised tag the member must have.
    pub tag: Option<String>,
    /// Tier name.
    pub tier: Option<String>,
    /// Status.
    pub status: Option<MemberStatus>,
    /// Only members with an id after this one (the cursor).
    pub after: Option<String>,
}

/// One page of members in id (creation) order, and the cursor of the next page if there is one.
pub async fn list(
    conn: &mut AnyConnection,
    filter: &ListFilter,
    limit: u32,
) -> Result<(Vec<Member>, Option<String>), sqlx::Error> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE.max(transfer::EXPORT_PAGE_SIZE));
    let mut conditions: Vec<(&str, &str)> = Vec::new();
    if let Some(after) = filter.after.as_deref() {
        conditions.push(("m.id > ?", after));
    }
    if let Some(phone) = filter.phone.as_deref() {
        conditions.push(("m.phone = ?", phone));
    }
    if let Some(tier) = filter.tier.as_deref() {
        conditions.push(("m.tier = ?", tier));
    }
    if let Some(status) = filter.status {
        conditions.push(("m.status = ?", status.as_str()));
    }
    if let Some(tag) = filter.tag.as_deref() {
        conditions.push((
            "EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.id AND t.tag = ?)",
            tag,
        ));
    }
    let mut sql = format!("SELECT {MEMBER_COLUMNS} FROM members m WHERE 1 = 1");
    for (i, (clause, _)) in conditions.iter().enumerate() {
        sql.push_str(" AND ");
        sql.push_str(&clause.replace('?', &format!("${}", i + 1)));
    }
    // One extra row tells whether there is a next page without a COUNT.
    sql.push_str(&format!(" ORDER BY m.id LIMIT {}", u64::from(limit) + 1));
    let mut query = sqlx::query_as::<_, Member>(&sql);
    for (_, value) in conditions {
        query = query.bind(value);
    }
    let mut members = query.fetch_all(&mut *conn).await?;
    let next = if members.len() > limit as usize {
        members.truncate(limit as usize);
        members.last().map(|m| m.id.clone())
    } else {
        None
    };
    attach_tags(conn, &mut members).await?;
    Ok((members, next))
}

fn phone_taken() -> DomainError {
    DomainError::conflict(
        "phone_taken",
        "a member with this phone number already exists",
    )
}

/// Inserts a new member and its tags; 409 `phone_taken` if the phone is registered.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewMember,
    joined_brand_id: Option<&str>,
    now_ms: i64,
) -> Result<String, DomainError> {
    // Checked first for a clean answer in the common case; the UNIQUE index settles races.
    let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE phone = $1")
        .bind(&new.phone)
        .fetch_optional(&mut *conn)
        .await?;
    if existing.is_some() {
        return Err(phone_taken());
    }
    let id = crate::foundation::store::new_id();
    sqlx::query(
        "INSERT INTO members (id, phone, name, birthday, email, joined_brand_id, created_at,
                              updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(&new.phone)
    .bind(&new.name)
    .bind(new.birthday.as_deref())
    .bind(new.email.as_deref())
    .bind(joined_brand_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .unique_as(phone_taken)?;
    insert_tags(conn, &id, &new.tags, now_ms).await?;
    Ok(id)
}

async fn insert_tags(
    conn: &mut AnyConnection,
    member_id: &str,
    tags: &[String],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for tag in tags {
        sqlx::query(
            "INSERT INTO member_tags (member_id, tag, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (member_id, tag) DO NOTHING",
        )
        .bind(member_id)
        .bind(tag)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Takes the member's row lock (on PostgreSQL) by touching `updated_at`, so that concurrent
/// changes to one member (e.g. two tag additions racing past the tag limit) run one after the
/// other. Fails with 404 if the member does not exist.
async fn lock_member(conn: &mut AnyConnection, id: &str, now_ms: i64) -> Result<(), DomainError> {
    let touched = sqlx::query("UPDATE members SET updated_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if touched == 0 {
        return Err(DomainError::not_found("member", id));
    }
    Ok(())
}

/// Applies a profile patch; `allow_phone` is false for callers who may not change the phone.
pub async fn update_profile(
    conn: &mut AnyConnection,
    id: &str,
    patch: &MemberPatch,
    allow_phone: bool,
    now_ms: i64,
) -> Result<(), DomainError> {
    if patch.phone.is_some() && !allow_phone {
        return Err(DomainError::forbidden(
            "only an admin may change a member's phone number",
        ));
    }
    let phone = patch.phone.as_deref().map(normalize_phone).transpose()?;
    let name = patch.name.as_deref().map(validate_name).transpose()?;
    let email = match &patch.email {
        Some(v) => Some(present(v.as_deref()).map(validate_email).transpose()?),
        None => None,
    };
    let birthday = match &patch.birthday {
        Some(v) => Some(
            present(v.as_deref())
                .map(|b| validate_birthday(b, now_ms))
                .transpose()?,
        ),
        None => None,
    };
    lock_member(conn, id, now_ms).await?;
    if let Some(phone) = &phone {
        let other: Option<(String,)> =
            sqlx::query_as("SELECT id FROM members WHERE phone = $1 AND id <> $2")
                .bind(phone)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        if other.is_some() {
            return Err(phone_taken());
        }
    }
    // COALESCE keeps a field unless a new value is given; the email/birthday flags say whether
    // to overwrite (possibly with NULL).
    sqlx::query(
        "UPDATE members SET
             phone = COALESCE($1, phone),
             name = COALESCE($2, name),
             email = CASE WHEN $3 = 1 THEN $4 ELSE email END,
             birthday = CASE WHEN $5 = 1 THEN $6 ELSE birthday END,
             updated_at = $7
         WHERE id = $8",
    )
    .bind(phone.as_deref())
    .bind(name.as_deref())
    .bind(i64::from(email.is_some()))
    .bind(email.flatten())
    .bind(i64::from(birthday.is_some()))
    .bind(birthday.flatten())
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await
    .unique_as(phone_taken)?;
    Ok(())
}

/// Adds tags to a member, refusing to go over [`MAX_TAGS_PER_MEMBER`] in total.
pub async fn add_tags(
    conn: &mut AnyConnection,
    id: &str,
    tags: &[String],
    now_ms: i64,
) -> Result<(), DomainError> {
    lock_member(conn, id, now_ms).await?;
    let existing: Vec<(String,)> =
        sqlx::query_as("SELECT tag FROM member_tags WHERE member_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let new_count = tags
        .iter()
        .filter(|t| !existing.iter().any(|(e,)| e == *t))
        .count();
    if existing.len() + new_count > MAX_TAGS_PER_MEMBER {
        return Err(too_many_tags().into());
    }
    insert_tags(conn, id, tags, now_ms).await?;
    Ok(())
}

/// Removes a tag from a member (a no-op if the member does not have it).
pub async fn remove_tag(
    conn: &mut AnyConnection,
    id: &str,
    tag: &str,
    now_ms: i64,
) -> Result<(), DomainError> {
    lock_member(conn, id, now_ms).await?;
    sqlx::query("DELETE FROM member_tags WHERE member_id = $1 AND tag = $2")
        .bind(id)
        .bind(tag)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Blocks or unblocks a member, recording who did it and why.
pub async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    status: MemberStatus,
    reason: &str,
    actor_key_id: &str,
    now_ms: i64,
) -> Result<(), DomainError> {
    let (from, code, detail) = match status {
        MemberStatus::Blocked => (
            MemberStatus::Active,
            "member_already_blocked",
            "the member is already blocked",
        ),
        MemberStatus::Active => (
            MemberStatus::Blocked,
            "member_not_blocked",
            "the member is not blocked",
        ),
    };
    let (blocked_reason, blocked_at) = match status {
        MemberStatus::Blocked => (Some(reason), Some(now_ms)),
        MemberStatus::Active => (None, None),
    };
    // The status guard in the WHERE makes the transition atomic: of two racing blocks, one
    // changes the row and the other sees zero rows and a conflict.
    let changed = sqlx::query(
        "UPDATE members SET status = $1, blocked_reason = $2, blocked_at = $3, updated_at = $4
         WHERE id = $5 AND status = $6",
    )
    .bind(status.as_str())
    .bind(blocked_reason)
    .bind(blocked_at)
    .bind(now_ms)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        fetch_existing(conn, id).await?;
        return Err(DomainError::conflict(code, detail));
    }
    sqlx::query(
        "INSERT INTO member_status_changes (id, member_id, status, reason, actor_key_id,
                                            created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(crate::foundation::store::new_id())
    .bind(id)
    .bind(status.as_str())
    .bind(reason)
    .bind(actor_key_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-02T10:00:00Z.
    const NOW_MS: i64 = 1_772_445_600_000;

    #[test]
    fn phone_is_normalised_to_e164() {
        assert_eq!(
            normalize_phone(" +86 138-0013-8000 ").as_deref(),
            Ok("+8613800138000")
        );
        assert_eq!(
            normalize_phone("+1 (415) 555.2671").as_deref(),
            Ok("+14155552671")
        );
    }

    #[test]
    fn bad_phones_are_refused() {
        for bad in [
            "13800138000",
            "+",
            "+0123456789",
            "+123456",
            "+1234567890123456",
            "+86138a0013800",
            "+８６１３８００１３８０００",
            "",
        ] {
            let err = normalize_phone(bad).expect_err(bad);
            assert_eq!(err.code, "invalid_phone", "{bad}");
        }
    }

    #[test]
    fn phone_masking_keeps_prefix_and_last_four() {
        assert_eq!(mask_phone("+8613800138000"), "+86138****8000");
        assert_eq!(mask_phone("+14155552671"), "+141****2671");
        assert_eq!(mask_phone("+6834002"), "+***4002");
        assert_eq!(mask_phone("+12"), "****");
    }

    #[test]
    fn name_and_email_masking() {
        assert_eq!(mask_name("王小明"), "王**");
        assert_eq!(mask_name("Alice Smith"), "A**** *****");
        assert_eq!(mask_name("X"), "*");
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
    }

    #[test]
    fn tags_are_normalised() {
        assert_eq!(
            normalize_tag(" Skincare  Enthusiast ").as_deref(),
            Ok("skincare-enthusiast")
        );
        assert_eq!(normalize_tag("护肤达人").as_deref(), Ok("护肤达人"));
        assert_eq!(normalize_tag("VIP:Gold").as_deref(), Ok("vip:gold"));
        for bad in [
            "",
            "   ",
            "-vip",
            "a/b",
            "=cmd",
            &"x".repeat(MAX_TAG_CHARS + 1),
        ] {
            assert_eq!(
                normalize_tag(bad).map_err(|e| e.code),
                Err("invalid_tag"),
                "{bad}"
            );
        }
        assert!(normalize_tag(&"x".repeat(MAX_TAG_CHARS)).is_ok());
    }

    #[test]
    fn tag_lists_are_deduplicated_and_bounded() {
        let tags = vec!["VIP".to_owned(), "vip".to_owned(), "new".to_owned()];
        assert_eq!(
            normalize_tags(&tags),
            Ok(vec!["vip".to_owned(), "new".to_owned()])
        );
        let many: Vec<String> = (0..=MAX_TAGS_PER_MEMBER).map(|i| format!("t{i}")).collect();
        assert_eq!(
            normalize_tags(&many).map_err(|e| e.code),
            Err("too_many_tags")
        );
    }

    #[test]
    fn birthdays_must_be_real_past_dates() {
        assert_eq!(
            validate_birthday("1990-05-17", NOW_MS).as_deref(),
            Ok("1990-05-17")
        );
        assert!(validate_birthday("2000-02-29", NOW_MS).is_ok());
        for bad in [
            "2001-02-29",
            "1990-13-01",
            "1990-5-17",
            "17/05/1990",
            "1899-12-31",
            "2026-03-04",
            "+990-05-17",
        ] {
            assert_eq!(
                validate_birthday(bad, NOW_MS).map_err(|e| e.code),
                Err("invalid_birthday"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_and_emails() {
        assert_eq!(validate_name("  Alice ").as_deref(), Ok("Alice"));
        for bad in [
            "",
            "  ",
            "=HYPERLINK(\"x\")",
            "a\u{0}b",
            &"n".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert_eq!(validate_name(bad).map_err(|e| e.code), Err("invalid_name"));
        }
        assert_eq!(
            validate_email("Alice@Example.COM").as_deref(),
            Ok("Alice@example.com")
        );
        for bad in [
            "alice",
            "alice@",
            "@x.com",
            "a b@x.com",
            "a@b@c.com",
            "a@localhost",
            "=a@b.co",
        ] {
            assert_eq!(
                validate_email(bad).map_err(|e| e.code),
                Err("invalid_email"),
                "{bad}"
            );
        }
    }

    #[test]
    fn views_mask_everything_personal() {
        let member = Member {
            id: "0".repeat(32),
            phone: "+8613800138000".to_owned(),
            name: "王小明".to_owned(),
            birthday: Some("1990-05-17".to_owned()),
            email: Some("xm@example.com".to_owned()),
            status: "blocked".to_owned(),
            blocked_reason: Some("coupon abuse".to_owned()),
            tier: "bronze".to_owned(),
            joined_brand_id: None,
            created_at: 1,
            updated_at: 2,
            tags: vec![],
        };
        let masked = member.view(true);
        assert_eq!(masked.phone, "+86138****8000");
        assert_eq!(masked.name, "王**");
        assert_eq!(masked.email.as_deref(), Some("x***@example.com"));
        assert_eq!(masked.birthday, None);
        assert_eq!(masked.birthday_month, Some(5));
        assert_eq!(masked.blocked_reason, None);
        assert_eq!(masked.status, MemberStatus::Blocked);
        let full = member.view(false);
        assert_eq!(full.phone, "+8613800138000");
        assert_eq!(full.birthday.as_deref(), Some("1990-05-17"));
        assert_eq!(full.blocked_reason.as_deref(), Some("coupon abuse"));
    }
}
