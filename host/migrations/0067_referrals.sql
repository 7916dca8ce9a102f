-- Referrals: programmes (what a referral pays and who funds it), one invite code per member,
-- and each invitee's referral with its outcome. A referral is decided once, on the invitee's
-- first qualifying purchase: rewarded, or rejected with a reason; a refund of that purchase
-- claws a reward back.

CREATE TABLE referral_programmes (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    referrer_points BIGINT NOT NULL CHECK (referrer_points >= 0),
    invitee_points BIGINT NOT NULL CHECK (invitee_points >= 0),
    funding_brand TEXT REFERENCES brands (id),             -- NULL = the platform
    min_purchase_cents BIGINT NOT NULL CHECK (min_purchase_cents >= 0),
    cap_per_referrer_per_month BIGINT NOT NULL CHECK (cap_per_referrer_per_month > 0),
    starts_at BIGINT,
    ends_at BIGINT,
    active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One invite code per member.
CREATE TABLE referral_codes (
    member_id TEXT PRIMARY KEY REFERENCES members (id),
    code TEXT NOT NULL UNIQUE,
    phone TEXT NOT NULL,                                  -- the member's phone when it was made
    created_at BIGINT NOT NULL
);

-- One referral per invitee (a code is attached once).
CREATE TABLE referrals (
    id TEXT PRIMARY KEY,
    programme_id TEXT NOT NULL REFERENCES referral_programmes (id),
    referrer_id TEXT NOT NULL REFERENCES members (id),
    invitee_id TEXT NOT NULL UNIQUE REFERENCES members (id),
    code TEXT NOT NULL,
    referrer_phone TEXT NOT NULL,                         -- both phones when the code was attached
    invitee_phone TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'rewarded', 'rejected', 'clawed_back')),
    reason TEXT,                                          -- why rejected (stable code)
    purchase_id TEXT,                                     -- the qualifying purchase
    reward_month TEXT,                                    -- 'YYYY-MM' (local) of the reward
    referrer_points BIGINT NOT NULL DEFAULT 0 CHECK (referrer_points >= 0),
    invitee_points BIGINT NOT NULL DEFAULT 0 CHECK (invitee_points >= 0),
    referrer_entry_id TEXT,
    invitee_entry_id TEXT,
    referrer_shortfall BIGINT NOT NULL DEFAULT 0 CHECK (referrer_shortfall >= 0),
    invitee_shortfall BIGINT NOT NULL DEFAULT 0 CHECK (invitee_shortfall >= 0),
    attached_at BIGINT NOT NULL,
    decided_at BIGINT,
    clawed_back_at BIGINT
);
CREATE INDEX referrals_by_referrer ON referrals (referrer_id, status, reward_month);
CREATE INDEX referrals_by_programme ON referrals (programme_id, status);
CREATE UNIQUE INDEX referrals_by_purchase ON referrals (purchase_id);
