//! Journal entries: accounts, postings that sum to zero, lots created by credits, bulk inserts.

use super::*;

/// The kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Points earned by a purchase (base and bonuses).
    Earn,
    /// Points spent paying for a purchase.
    Spend,
    /// Points reserved by a hold.
    Hold,
    /// A hold captured (and its remainder released).
    Capture,
    /// A hold released by the member or a counter.
    Release,
    /// A hold released because it timed out.
    HoldTimeout,
    /// Lots past their expiry.
    Expiry,
    /// An admin adjustment.
    Adjustment,
    /// A refund: restored spend and clawed-back earn.
    Refund,
    /// Refund debt paid from later credits.
    DebtSettlement,
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Earn => "earn",
            EntryKind::Spend => "spend",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::HoldTimeout => "hold_timeout",
            EntryKind::Expiry => "expiry",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Refund => "refund",
            EntryKind::DebtSettlement => "debt_settlement",
        }
    }
}

/// An account postings move points between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account<'a> {
    /// The entry member's spendable points.
    Wallet,
    /// The entry member's held points.
    Held,
    /// The entry member's refund debt (negative balance = points owed).
    Receivable,
    /// Where a brand's (or the platform's, `None`) points come from.
    Issuance(Option<&'a str>),
    /// Where points spent at a brand go.
    Redemption(Option<&'a str>),
    /// Where expired points go, by the brand that funded them.
    Expiry(Option<&'a str>),
    /// The counterpart of admin adjustments.
    Adjustment(Option<&'a str>),
}

impl Account<'_> {
    fn name(self) -> &'static str {
        match self {
            Account::Wallet => "wallet",
            Account::Held => "held",
            Account::Receivable => "receivable",
            Account::Issuance(_) => "issuance",
            Account::Redemption(_) => "redemption",
            Account::Expiry(_) => "expiry",
            Account::Adjustment(_) => "adjustment",
        }
    }

    fn brand(self) -> Option<String> {
        match self {
            Account::Wallet | Account::Held | Account::Receivable => None,
            Account::Issuance(b)
            | Account::Redemption(b)
            | Account::Expiry(b)
            | Account::Adjustment(b) => b.map(str::to_owned),
        }
    }

    fn is_member(self) -> bool {
        matches!(self, Account::Wallet | Account::Held | Account::Receivable)
    }
}

#[derive(Debug)]
pub(super) struct PostingRow {
    id: String,
    account: &'static str,
    member: bool,
    brand_id: Option<String>,
    amount: i64,
    memo: String,
}

/// A lot to create when the entry closes (its posting must exist first).
#[derive(Debug, Clone)]
pub struct NewLot {
    /// The wallet credit posting this lot belongs to.
    pub posting_id: String,
    /// Funding brand; `None` = platform.
    pub brand_id: Option<String>,
    /// `earn`, `bonus`, `adjustment` or `restore`.
    pub source: &'static str,
    /// Points in the lot.
    pub amount: i64,
    /// When it expires.
    pub expires_at: i64,
    /// The purchase that earned it.
    pub purchase_id: Option<String>,
    /// For restored points, the consumption they give back.
    pub origin_consumption_id: Option<String>,
}

/// References an entry may carry.
#[derive(Debug, Default, Clone)]
pub struct EntryRefs {
    /// Brand the event happened at.
    pub brand_id: Option<String>,
    /// Purchase (internal id).
    pub purchase_id: Option<String>,
    /// Refund (internal id).
    pub refund_id: Option<String>,
    /// Hold.
    pub hold_id: Option<String>,
}

/// A journal entry being written: its header row exists; postings and lots are written in
/// batches (`flush`), and on `close` the running totals are checked: postings sum to zero, the
/// member accounts moved exactly as the materialised wallet did, and lots add up to the wallet
/// credits they belong to. An entry that does not add up fails the whole transaction.
#[derive(Debug)]
pub struct Entry {
    /// Entry id.
    pub id: String,
    kind: EntryKind,
    member_id: String,
    /// True once the entry added spendable points: closing it then pays refund debt first.
    credited: bool,
    pending_postings: Vec<PostingRow>,
    pending_lots: Vec<NewLot>,
    postings_count: usize,
    postings_sum: i128,
    wallet_sum: i64,
    held_sum: i64,
    receivable_sum: i64,
    /// Wallet credit postings that carry lots: posting id → (posting amount, lot total).
    lot_backing: BTreeMap<String, (i64, i64)>,
    applied_balance: i64,
    applied_held: i64,
    applied_debt: i64,
}

impl Entry {
    /// Inserts the entry header (consumptions refer to it) and starts collecting postings.
    pub async fn open(
        conn: &mut AnyConnection,
        kind: EntryKind,
        member_id: &str,
        refs: &EntryRefs,
        reason: &str,
        now_ms: i64,
    ) -> DomainResult<Entry> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO ledger_entries
               (id, kind, member_id, brand_id, purchase_id, refund_id, hold_id, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(kind.as_str())
        .bind(member_id)
        .bind(refs.brand_id.as_deref())
        .bind(refs.purchase_id.as_deref())
        .bind(refs.refund_id.as_deref())
        .bind(refs.hold_id.as_deref())
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        Ok(Entry {
            id,
            kind,
            member_id: member_id.to_owned(),
            credited: false,
            pending_postings: Vec::new(),
            pending_lots: Vec::new(),
            postings_count: 0,
            postings_sum: 0,
            wallet_sum: 0,
            held_sum: 0,
            receivable_sum: 0,
            lot_backing: BTreeMap::new(),
            applied_balance: 0,
            applied_held: 0,
            applied_debt: 0,
        })
    }

    /// The member whose accounts this entry moves.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Adds a posting and returns its id (for lots).
    pub fn post(&mut self, account: Account<'_>, amount: i64, memo: &str) -> String {
        let id = new_id();
        self.postings_count += 1;
        self.postings_sum += i128::from(amount);
        match account {
            Account::Wallet => self.wallet_sum += amount,
            Account::Held => self.held_sum += amount,
            Account::Receivable => self.receivable_sum += amount,
            _ => {}
        }
        self.pending_postings.push(PostingRow {
            id: id.clone(),
            account: account.name(),
            member: account.is_member(),
            brand_id: account.brand(),
            amount,
            memo: memo.to_owned(),
        });
        id
    }

    /// Queues a lot for a wallet credit posting of this entry.
    pub fn add_lot(&mut self, lot: NewLot) {
        let posting_amount = self
            .pending_postings
            .iter()
            .find(|p| p.id == lot.posting_id)
            .map(|p| p.amount)
            .unwrap_or(0);
        let backing = self
            .lot_backing
            .entry(lot.posting_id.clone())
            .or_insert((posting_amount, 0));
        backing.1 += lot.amount;
        self.pending_lots.push(lot);
    }

    /// Applies deltas to the member's materialised wallet in one guarded statement: the update
    /// matches no row if the balance, held or debt would go negative, and the caller gets
    /// `insufficient_points` (the `CHECK` constraints are the second line of defence).
    pub async fn apply_wallet(
        &mut self,
        conn: &mut AnyConnection,
        balance_delta: i64,
        held_delta: i64,
        debt_delta: i64,
        now_ms: i64,
    ) -> DomainResult<()> {
        let updated = sqlx::query(
            "UPDATE point_wallets
             SET balance = balance + $1, held = held + $2, debt = debt + $3, updated_at = $4
             WHERE member_id = $5 AND balance + $1 >= 0 AND held + $2 >= 0 AND debt + $3 >= 0",
        )
        .bind(balance_delta)
        .bind(held_delta)
        .bind(debt_delta)
        .bind(now_ms)
        .bind(&self.member_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated == 0 {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(
                "SELECT balance, held, debt FROM point_wallets WHERE member_id = $1",
            )
            .bind(&self.member_id)
            .fetch_optional(&mut *conn)
            .await?;
            return Err(match row {
                Some((balance, _, _)) if balance + balance_delta < 0 => {
                    insufficient(balance, -balance_delta)
                }
                _ => DomainError::internal(anyhow::anyhow!(
                    "wallet update refused for member {}: held or debt would go negative",
                    self.member_id
                )),
            });
        }
        self.applied_balance += balance_delta;
        self.credited |= balance_delta > 0;
        self.applied_held += held_delta;
        self.applied_debt += debt_delta;
        Ok(())
    }

    /// Writes the postings and lots collected so far (lots must exist before a later step of
    /// the same entry can draw from them).
    pub async fn flush(&mut self, conn: &mut AnyConnection, now_ms: i64) -> DomainResult<()> {
        let member_id = self.member_id.clone();
        let entry_id = self.id.clone();
        insert_rows(
            conn,
            "ledger_postings (id, entry_id, account, member_id, brand_id, amount, memo, created_at)",
            std::mem::take(&mut self.pending_postings)
                .into_iter()
                .map(|p| {
                    vec![
                        Val::Text(p.id),
                        Val::Text(entry_id.clone()),
                        Val::Text(p.account.to_owned()),
                        Val::OptText(p.member.then(|| member_id.clone())),
                        Val::OptText(p.brand_id),
                        Val::Int(p.amount),
                        Val::Text(p.memo),
                        Val::Int(now_ms),
                    ]
                })
                .collect(),
        )
        .await?;
        insert_rows(
            conn,
            "point_lots (id, member_id, posting_id, brand_id, source, amount, remaining, \
             earned_at, expires_at, purchase_id, origin_consumption_id)",
            std::mem::take(&mut self.pending_lots)
                .into_iter()
                .map(|l| {
                    vec![
                        Val::Text(new_id()),
                        Val::Text(member_id.clone()),
                        Val::Text(l.posting_id),
                        Val::OptText(l.brand_id),
                        Val::Text(l.source.to_owned()),
                        Val::Int(l.amount),
                        Val::Int(l.amount),
                        Val::Int(now_ms),
                        Val::Int(l.expires_at),
                        Val::OptText(l.purchase_id),
                        Val::OptText(l.origin_consumption_id),
                    ]
                })
                .collect(),
        )
        .await?;
        Ok(())
    }

    /// Checks the entry adds up, writes what is left, then pays refund debt if the entry added
    /// spendable points (see [`Entry::close_settling`]). Returns the entry id.
    pub async fn close(self, conn: &mut AnyConnection, now_ms: i64) -> DomainResult<String> {
        self.close_settling(conn, now_ms).await.map(|(id, _)| id)
    }

    /// [`Entry::close`], also returning the refund debt paid.
    ///
    /// **The debt rule lives here, in one place**: every entry that adds spendable points to a
    /// wallet — earn, refund restore, hold release or timeout, coupon return, campaign or
    /// referral points, adjustments — pays the member's refund debt from them before anything
    /// else can draw on them, as a `debt_settlement` entry in the same transaction. A credit
    /// path added later goes through an `Entry` too, so it cannot forget the debt. After every
    /// committed write a wallet has spendable points or debt, never both.
    pub async fn close_settling(
        mut self,
        conn: &mut AnyConnection,
        now_ms: i64,
    ) -> DomainResult<(String, i64)> {
        self.finish(conn, now_ms).await?;
        let settled = if self.credited && self.kind != EntryKind::DebtSettlement {
            settle_debt_of(conn, &self.member_id, now_ms).await?
        } else {
            0
        };
        Ok((self.id, settled))
    }

    /// Checks the entry adds up and writes what is left.
    pub(super) async fn finish(
        &mut self,
        conn: &mut AnyConnection,
        now_ms: i64,
    ) -> DomainResult<()> {
        let lots_ok = self
            .lot_backing
            .values()
            .all(|(posting, lots)| posting == lots && *posting > 0);
        if self.postings_count < 2
            || self.postings_sum != 0
            || self.pending_postings.iter().any(|p| p.amount == 0)
            || self.wallet_sum != self.applied_balance
            || self.held_sum != self.applied_held
            || -self.receivable_sum != self.applied_debt
            || !lots_ok
        {
            return Err(DomainError::internal(anyhow::anyhow!(
                "unbalanced ledger entry {}: {} postings summing to {}, wallet {} vs {}, \
                 held {} vs {}, debt {} vs {}, lots {:?}",
                self.id,
                self.postings_count,
                self.postings_sum,
                self.wallet_sum,
                self.applied_balance,
                self.held_sum,
                self.applied_held,
                -self.receivable_sum,
                self.applied_debt,
                self.lot_backing
            )));
        }
        self.flush(conn, now_ms).await
    }
}

/// A value bound in a multi-row insert.
#[derive(Debug, Clone)]
pub enum Val {
    /// BIGINT.
    Int(i64),
    /// TEXT.
    Text(String),
    /// Nullable TEXT.
    OptText(Option<String>),
}

/// Inserts rows in chunks with one statement per chunk (`table` includes the column list).
pub async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    rows: Vec<Vec<Val>>,
) -> DomainResult<()> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(());
    };
    for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
        let mut sql = format!("INSERT INTO {table} VALUES ");
        let mut n = 0usize;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            sql.push(')');
        }
        let mut query = sqlx::query(&sql);
        for row in chunk {
            for value in row {
                query = match value {
                    Val::Int(v) => query.bind(*v),
                    Val::Text(v) => query.bind(v.clone()),
                    Val::OptText(v) => query.bind(v.clone()),
                };
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
