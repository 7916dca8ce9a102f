-- The paid membership card (付费会员): plans a brand sells for a fee per period, the cards
-- members hold, every fee paid (sales and renewals) with how it was paid, the fee ledger per
-- owning and selling brand, and the renewal notices. A period is a fixed length (a month is
-- 30 days, a year 365) so a pro-rata refund is the same computation everywhere.

CREATE TABLE membership_plans (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    brand_id TEXT NOT NULL REFERENCES brands (id),      -- the owning brand: receives the fee
    fee_cents BIGINT NOT NULL CHECK (fee_cents > 0),
    period TEXT NOT NULL CHECK (period IN ('month', 'year')),
    benefits TEXT NOT NULL DEFAULT '[]',                  -- JSON array of kebab-case flags
    points_multiplier_percent BIGINT NOT NULL DEFAULT 100
        CHECK (points_multiplier_percent >= 100 AND points_multiplier_percent <= 500),
    tier_floor TEXT,                                      -- a tier code, or NULL
    renewal_notice_days BIGINT NOT NULL CHECK (renewal_notice_days >= 0),
    active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX membership_plans_by_brand ON membership_plans (brand_id);

-- A member's card. `status` is 'active' until cancelled or replaced after expiry; an active
-- card past `expires_at` gives nothing. One active card per member, enforced by the index.
CREATE TABLE membership_cards (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    plan_id TEXT NOT NULL REFERENCES membership_plans (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'cancelled', 'lapsed')),
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    created_at BIGINT NOT NULL,
    CHECK (expires_at > started_at)
);
CREATE UNIQUE INDEX membership_cards_one_active ON membership_cards (member_id)
    WHERE status = 'active';
CREATE INDEX membership_cards_by_expiry ON membership_cards (status, expires_at);

-- Every fee paid: the first sale and each renewal, each for one period of the card.
CREATE TABLE membership_payments (
    id TEXT PRIMARY KEY,
    card_id TEXT NOT NULL REFERENCES membership_cards (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    plan_id TEXT NOT NULL REFERENCES membership_plans (id),
    owning_brand TEXT NOT NULL REFERENCES brands (id),
    selling_brand TEXT NOT NULL REFERENCES brands (id),
    purchase_id TEXT NOT NULL,                            -- the selling brand's order id
    kind TEXT NOT NULL CHECK (kind IN ('sale', 'renewal')),
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'stored_value')),
    fee_cents BIGINT NOT NULL CHECK (fee_cents > 0),
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    refunded_cents BIGINT NOT NULL DEFAULT 0
        CHECK (refunded_cents >= 0 AND refunded_cents <= fee_cents),
    event_id TEXT,                                        -- the membership-fee settle event
    created_at BIGINT NOT NULL,
    UNIQUE (selling_brand, purchase_id),
    CHECK (period_end > period_start)
);
CREATE INDEX membership_payments_by_card ON membership_payments (card_id, period_start);

-- What a stored-value payment drew from each fund, and what a cancellation gave back.
CREATE TABLE membership_draws (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES membership_payments (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    holder_brand TEXT NOT NULL REFERENCES brands (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    returned BIGINT NOT NULL DEFAULT 0 CHECK (returned >= 0 AND returned <= amount),
    event_id TEXT,
    position BIGINT NOT NULL
);
CREATE INDEX membership_draws_by_payment ON membership_draws (payment_id, position);

-- The fee ledger: one row per sale, renewal or refund, signed (refunds negative), per owning
-- and selling brand. Revenue reports and settlement read it.
CREATE TABLE membership_fees (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('sale', 'renewal', 'refund')),
    payment_id TEXT NOT NULL REFERENCES membership_payments (id),
    card_id TEXT NOT NULL REFERENCES membership_cards (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    owning_brand TEXT NOT NULL REFERENCES brands (id),
    selling_brand TEXT NOT NULL REFERENCES brands (id),
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'stored_value')),
    amount_cents BIGINT NOT NULL CHECK (amount_cents <> 0),
    created_at BIGINT NOT NULL,
    CHECK ((kind = 'refund') = (amount_cents < 0))
);
CREATE INDEX membership_fees_by_owner ON membership_fees (owning_brand, created_at);
CREATE INDEX membership_fees_by_card ON membership_fees (card_id);

-- A renewal notice, once per card and period (the expiry it announces).
CREATE TABLE membership_notices (
    id TEXT PRIMARY KEY,
    card_id TEXT NOT NULL REFERENCES membership_cards (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (card_id, expires_at)
);

-- The multiplier an active card applied to a purchase's base earn, percent (100 = none).
ALTER TABLE purchases ADD COLUMN points_multiplier_percent BIGINT NOT NULL DEFAULT 100
    CHECK (points_multiplier_percent >= 100 AND points_multiplier_percent <= 500);

-- A new settle kind: the fee of a card sold by one brand for another brand's plan. Widened the
-- portable way, as in 0060.
ALTER TABLE settle_events ADD COLUMN kind_v3 TEXT NOT NULL DEFAULT 'refund' CHECK (kind_v3 IN
    ('points-issued', 'points-redeemed', 'perk-redeemed', 'coupon-honoured', 'refund',
     'stored-value-redeemed', 'membership-fee'));
UPDATE settle_events SET kind_v3 = kind;
ALTER TABLE settle_events DROP COLUMN kind;
ALTER TABLE settle_events RENAME COLUMN kind_v3 TO kind;
