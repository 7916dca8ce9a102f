//! Key figures over HTTP on both databases, on a small fixture checked against hand-computed
//! numbers: coalition-wide for an admin, one brand for its brand key (which may not ask for
//! another's), the same series as CSV, and the range limits as problem+json.
//!
//! The fixture (the clock starts Monday 2026-03-02 10:00 UTC; the programme runs on UTC; the
//! brands earn 1 point per 100 cents; 100 points pay 100 cents):
//! - day 1 (03-02): Ann, Bob and Cat join; Ann buys 10.00 at the cafe (10 points), Bob 30.00
//!   at the cafe (30).
//! - day 2 (03-03) 10:00: Ann 20.00 at the cafe (20); 11:00: Ann 50.00 at the shoe shop (50).
//! - day 3 (03-04) 10:00: Bob 10.00 at the shoe shop (10); Ann 10.00 at the cafe paying 50
//!   points (50 cents), so 9.50 cash earns 9.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, member_id};
use crate::helpers::TestApp;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

async fn buy(app: &TestApp, key: &str, brand: &str, member: &str, cents: i64, points: i64) {
    let (status, body) = app
        .post(
            &format!("/brands/{brand}/purchases"),
            key,
            &idem(),
            &json!({ "order_id": format!("O-{}", idem()), "member_id": member,
                "points_spent": points,
                "lines": [{ "line_id": "1", "sku": "x", "quantity": 1,
                    "unit_price_cents": cents }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn fixture(app: &TestApp) {
    create_brand(app, "cafe").await;
    create_brand(app, "shoe").await;
    let cafe = create_key(app, "counter", Some("cafe"), None).await;
    let shoe = create_key(app, "counter", Some("shoe"), None).await;
    let ann = member_id(app, "+8613800000101", "Ann").await;
    let bob = member_id(app, "+8613800000102", "Bob").await;
    member_id(app, "+8613800000103", "Cat").await;
    buy(app, &cafe, "cafe", &ann, 1_000, 0).await;
    buy(app, &cafe, "cafe", &bob, 3_000, 0).await;
    app.clock.advance_ms(DAY_MS);
    buy(app, &cafe, "cafe", &ann, 2_000, 0).await;
    app.clock.advance_ms(HOUR_MS);
    buy(app, &shoe, "shoe", &ann, 5_000, 0).await;
    app.clock.advance_ms(DAY_MS - HOUR_MS);
    buy(app, &shoe, "shoe", &bob, 1_000, 0).await;
    buy(app, &cafe, "cafe", &ann, 1_000, 50).await;
}

const RANGE: &str = "from=2026-03-02&to=2026-03-04";

fn series(body: &Value, field: &str) -> Vec<i64> {
    body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|b| b[field].as_i64().expect("integer"))
        .collect()
}

both_backends!(kpis_match_hand_computed_figures, |app| async move {
    fixture(&app).await;
    check_hand_computed(&app).await;
});

async fn run_rollups(app: &TestApp) -> Value {
    let (status, report) = app
        .post("/jobs/kpi-rollups", &app.admin_key, &idem(), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

// 2026-03-02, 03-03 and 03-04 as days since 1970.
const DAY1: i64 = 20_514;

// The same figures when the roll-up job has closed some of the days (the range is then read
// from rolled-up rows and from the purchases themselves), and when it has closed all of them:
// buyers, repeat buyers and members counted across the closed and open days must not count
// anyone twice.
both_backends!(kpis_are_the_same_from_rolled_up_days, |app| async move {
    fixture(&app).await;
    // Now 03-04 10:00: 03-02 and 03-03 have ended, 03-04 has not.
    let report = run_rollups(&app).await;
    assert_eq!(report["days_closed"], 2, "{report}");
    assert_eq!(report["closed_before_day"], DAY1 + 2, "{report}");
    assert_eq!(report["more"], false);
    check_hand_computed(&app).await;
    // The RFM distribution is now the snapshot of the closed days: Ann and Bob, not yet the
    // purchases of 03-04, and so is a page of members.
    let (status, snap) = app.get("/segments/rfm", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{snap}");
    assert_eq!(snap["as_of_ms"], (DAY1 + 2) * DAY_MS, "{snap}");
    assert_eq!(snap["members"], 2);
    let (_, page) = app.get("/segments/rfm?members=true", &app.admin_key).await;
    assert_eq!(page["as_of_ms"], (DAY1 + 2) * DAY_MS, "{page}");
    // Bob's 30.00 and Ann's 10.00, 20.00 and 50.00 before 03-04 (not their 03-04 purchases).
    let mut bought: Vec<(i64, i64)> = page["page"]
        .as_array()
        .expect("page")
        .iter()
        .map(|row| {
            let n = |field: &str| row[field].as_i64().expect("integer");
            (n("orders"), n("spend_cents"))
        })
        .collect();
    bought.sort_unstable();
    assert_eq!(bought, [(1, 3_000), (3, 8_000)], "{page}");
    // Nothing more to close until the day and the grace have passed.
    let again = run_rollups(&app).await;
    assert_eq!(again["days_closed"], 0, "{again}");
    app.clock.advance_ms(14 * HOUR_MS);
    // 03-05 00:00: 03-04 ended, but not 15 minutes ago.
    assert_eq!(run_rollups(&app).await["days_closed"], 0);
    app.clock.advance_ms(HOUR_MS);
    let report = run_rollups(&app).await;
    assert_eq!(report["days_closed"], 1, "{report}");
    assert_eq!(report["closed_before_day"], DAY1 + 3);
    check_hand_computed(&app).await;
    // Purchases on the open day join the rolled-up ones: Dan, whom the job never numbered,
    // is a buyer, a repeat buyer and an active member, once.
    let cafe = create_key(&app, "counter", Some("cafe"), None).await;
    let dan = member_id(&app, "+8613800000104", "Dan").await;
    buy(&app, &cafe, "cafe", &dan, 4_000, 0).await;
    buy(&app, &cafe, "cafe", &dan, 1_000, 0).await;
    let (status, all) = app
        .get("/kpis?from=2026-03-02&to=2026-03-05", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let t = &all["totals"];
    assert_eq!(t["orders"], 8, "{t}");
    assert_eq!(t["buyers"], 3);
    assert_eq!(t["repurchase_rate_bp"], 10_000);
    assert_eq!(t["active_30d"], 3);
    assert_eq!(series(&all, "active_members"), [2, 1, 2, 1]);
    let (status, cafe_figures) = app
        .get(
            "/kpis?from=2026-03-02&to=2026-03-05&brand=cafe",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cafe_figures}");
    // The cafe's members: Ann, Bob and now Dan; Ann and Dan bought twice there.
    assert_eq!(cafe_figures["totals"]["members"], 3);
    assert_eq!(cafe_figures["totals"]["repurchase_rate_bp"], 6_666);
    // Closing that day too changes nothing.
    app.clock.advance_ms(DAY_MS);
    assert_eq!(run_rollups(&app).await["days_closed"], 1);
    let (_, rolled) = app
        .get("/kpis?from=2026-03-02&to=2026-03-05", &app.admin_key)
        .await;
    assert_eq!(rolled["totals"], all["totals"]);
    assert_eq!(rolled["series"], all["series"]);
    let (_, rolled_cafe) = app
        .get(
            "/kpis?from=2026-03-02&to=2026-03-05&brand=cafe",
            &app.admin_key,
        )
        .await;
    assert_eq!(rolled_cafe["totals"], cafe_figures["totals"]);
    // With every purchase in closed days, the snapshot ranks exactly as the live ranking,
    // coalition-wide and per brand.
    for scope in ["", "?brand=cafe", "?brand=shoe"] {
        let (_, snap) = app
            .get(&format!("/segments/rfm{scope}"), &app.admin_key)
            .await;
        assert_eq!(snap["as_of_ms"], (DAY1 + 4) * DAY_MS, "{snap}");
        let live = live_rfm(&app, &format!("/segments/rfm{scope}")).await;
        assert_eq!(live.get("as_of_ms"), None, "{live}");
        for field in ["members", "recency", "frequency", "monetary", "cells"] {
            assert_eq!(snap[field], live[field], "{scope} {field}");
        }
    }
    let (_, all_rfm) = app.get("/segments/rfm", &app.admin_key).await;
    assert_eq!(all_rfm["members"], 3);
});

/// `path` ranked live: the snapshot is dropped for the one request, then retaken (the roll-up
/// pass retakes a missing snapshot even when it closes no day).
async fn live_rfm(app: &TestApp, path: &str) -> Value {
    let before = coalition::domain::rfm::snapshot_as_of(app.state.store.read())
        .await
        .expect("snapshot")
        .expect("a snapshot to drop");
    sqlx::query("DELETE FROM rfm_snapshot_state")
        .execute(app.state.store.write())
        .await
        .expect("drop the snapshot");
    let (status, live) = app.get(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{live}");
    let report = run_rollups(app).await;
    assert_eq!(report["days_closed"], 0, "{report}");
    let after = coalition::domain::rfm::snapshot_as_of(app.state.store.read())
        .await
        .expect("snapshot");
    assert_eq!(after, Some(before), "the pass retook the snapshot");
    live
}

// RFM pages from the snapshot: fourteen members with ties on every dimension (many buy once,
// several spend the same), at two brands. Once the roll-up job has closed every day of
// purchases, each page of members scored from the snapshot's quintile starts equals the page
// ranked live, member for member, coalition-wide and per brand, whole and in pages of three;
// a purchase on a day not yet closed is not in the snapshot's page until its day is.
both_backends!(
    rfm_pages_from_the_snapshot_match_the_live_ranking,
    |app| async move {
        create_brand(&app, "cafe").await;
        create_brand(&app, "shoe").await;
        let cafe = create_key(&app, "counter", Some("cafe"), None).await;
        let shoe = create_key(&app, "counter", Some("shoe"), None).await;
        let mut members = Vec::new();
        for i in 0..14 {
            members.push(member_id(&app, &format!("+86138000003{i:02}"), &format!("R{i}")).await);
        }
        for (i, member) in members.iter().enumerate() {
            // Orders 1, 1, 2, 1, 3, 1, 2, ...; spend 5.00 or 12.00 a purchase, so many tie.
            let orders = [1, 1, 2, 1, 3][i % 5];
            let cents = if i % 3 == 0 { 500 } else { 1_200 };
            for o in 0..orders {
                let (key, brand) = if (i + o) % 4 == 0 {
                    (&shoe, "shoe")
                } else {
                    (&cafe, "cafe")
                };
                buy(&app, key, brand, member, cents, 0).await;
            }
            // Recency: pairs of members share an hour.
            if i % 2 == 1 {
                app.clock.advance_ms(HOUR_MS);
            }
        }
        app.clock.advance_ms(DAY_MS);
        let report = run_rollups(&app).await;
        assert!(
            report["days_closed"].as_i64().expect("days") >= 1,
            "{report}"
        );
        let as_of = coalition::domain::rfm::snapshot_as_of(app.state.store.read())
            .await
            .expect("snapshot")
            .expect("taken");
        for scope in ["", "brand=cafe&", "brand=shoe&"] {
            let whole = format!("/segments/rfm?{scope}members=true&limit=500");
            let (status, snap) = app.get(&whole, &app.admin_key).await;
            assert_eq!(status, StatusCode::OK, "{snap}");
            assert_eq!(snap["as_of_ms"], as_of, "{snap}");
            let live = live_rfm(&app, &whole).await;
            assert_eq!(live.get("as_of_ms"), None, "{live}");
            assert!(
                snap["page"].as_array().expect("page").len() >= 4,
                "{scope}: {snap}"
            );
            for field in [
                "members",
                "recency",
                "frequency",
                "monetary",
                "cells",
                "page",
            ] {
                assert_eq!(snap[field], live[field], "{scope} {field}");
            }
            // In pages of three, by member id.
            let mut paged = Vec::new();
            let first = format!("/segments/rfm?{scope}members=true&limit=3");
            let mut path = first.clone();
            loop {
                let (status, part) = app.get(&path, &app.admin_key).await;
                assert_eq!(status, StatusCode::OK, "{part}");
                paged.extend(part["page"].as_array().expect("page").iter().cloned());
                match part["next_after"].as_str() {
                    Some(next) => path = format!("{first}&after={next}"),
                    None => break,
                }
            }
            assert_eq!(Value::Array(paged), snap["page"], "{scope}");
        }
        // A new buyer on the open day is not in the snapshot's page; closing the day adds them.
        let late = member_id(&app, "+8613800000399", "Late").await;
        buy(&app, &cafe, "cafe", &late, 9_900, 0).await;
        let listed = |page: &Value| {
            page["page"]
                .as_array()
                .expect("page")
                .iter()
                .any(|row| row["member_id"] == late.as_str())
        };
        let (_, before) = app
            .get("/segments/rfm?members=true&limit=500", &app.admin_key)
            .await;
        assert!(!listed(&before), "{before}");
        app.clock.advance_ms(DAY_MS);
        assert_eq!(run_rollups(&app).await["days_closed"], 1);
        let (_, after) = app
            .get("/segments/rfm?members=true&limit=500", &app.admin_key)
            .await;
        assert!(listed(&after), "{after}");
        let live = live_rfm(&app, "/segments/rfm?members=true&limit=500").await;
        assert_eq!(after["page"], live["page"]);
    }
);

async fn check_hand_computed(app: &TestApp) {
    let (status, all) = app.get(&format!("/kpis?{RANGE}"), &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let t = &all["totals"];
    // 6 orders: 10 + 30 + 20 + 50 + 10 + 10 = 130.00; 13,000 / 6 = 2,166.
    assert_eq!(t["orders"], 6, "{t}");
    assert_eq!(t["sales_cents"], 13_000);
    assert_eq!(t["average_order_cents"], 2_166);
    // Every recorded sale is a member's.
    assert_eq!(t["member_share_of_sales_bp"], 10_000);
    // 3 members, 2 bought, both more than once; 2 / 3 = 6,666 bp.
    assert_eq!(t["members"], 3);
    assert_eq!(t["buyers"], 2);
    assert_eq!(t["repurchase_rate_bp"], 10_000);
    assert_eq!(t["active_30d"], 2);
    assert_eq!(t["active_rate_30d_bp"], 6_666);
    assert_eq!(t["active_rate_90d_bp"], 6_666);
    // 13,000 / 3 = 4,333.
    assert_eq!(t["ltv_cents"], 4_333);
    // Issued 10 + 30 + 20 + 50 + 10 + 9 = 129, 50 redeemed, nothing expired: 79 left.
    assert_eq!(t["points_issued"], 129);
    assert_eq!(t["points_redeemed"], 50);
    assert_eq!(t["points_expired"], 0);
    assert_eq!(t["breakage_bp"], 0);
    assert_eq!(t["points_outstanding"], 79);
    assert_eq!(all["brand_id"], Value::Null);
    // Per day: 2 / 2 / 2 orders; 40.00 / 70.00 / 20.00; 40 / 70 / 19 points issued.
    assert_eq!(series(&all, "orders"), [2, 2, 2]);
    assert_eq!(series(&all, "sales_cents"), [4_000, 7_000, 2_000]);
    assert_eq!(series(&all, "active_members"), [2, 1, 2]);
    assert_eq!(series(&all, "points_issued"), [40, 70, 19]);
    assert_eq!(series(&all, "points_redeemed"), [0, 0, 50]);
    assert_eq!(all["series"][0]["period"], "2026-03-02");

    // One month bucket holds everything.
    let (status, month) = app
        .get(
            "/kpis?from=2026-03-01&to=2026-03-31&granularity=month",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{month}");
    assert_eq!(series(&month, "orders"), [6]);
    // Weeks from Monday: 2026-03-02 is one.
    let (status, week) = app
        .get(
            "/kpis?from=2026-02-26&to=2026-03-04&granularity=week",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{week}");
    assert_eq!(series(&week, "orders"), [0, 6]);
    assert_eq!(week["series"][1]["period"], "2026-03-02");

    // The cafe's own figures, for its brand key (no brand named: forced to its own).
    let cafe_office = create_key(app, "brand", Some("cafe"), None).await;
    let (status, cafe) = app.get(&format!("/kpis?{RANGE}"), &cafe_office).await;
    assert_eq!(status, StatusCode::OK, "{cafe}");
    assert_eq!(cafe["brand_id"], "cafe");
    let t = &cafe["totals"];
    // 4 orders: 10 + 30 + 20 + 10 = 70.00; 7,000 / 4 = 1,750; 7,000 / 13,000 = 5,384 bp.
    assert_eq!(t["orders"], 4, "{t}");
    assert_eq!(t["sales_cents"], 7_000);
    assert_eq!(t["average_order_cents"], 1_750);
    assert_eq!(t["member_share_of_sales_bp"], 5_384);
    // Its members: Ann and Bob; only Ann bought twice there: 5,000 bp; LTV 7,000 / 2.
    assert_eq!(t["members"], 2);
    assert_eq!(t["repurchase_rate_bp"], 5_000);
    assert_eq!(t["active_rate_30d_bp"], 10_000);
    assert_eq!(t["ltv_cents"], 3_500);
    // It funded 10 + 30 + 20 + 9 = 69 and took the 50 points paid at its till. Ann's 50
    // drew her lots oldest first: cafe 10, cafe 20, then 20 of the shoe shop's 50; the cafe's
    // lots hold Bob's 30 and Ann's new 9.
    assert_eq!(t["points_issued"], 69);
    assert_eq!(t["points_redeemed"], 50);
    assert_eq!(t["points_outstanding"], 39);
    assert_eq!(series(&cafe, "orders"), [2, 1, 1]);
    assert_eq!(series(&cafe, "points_issued"), [40, 20, 9]);

    // The same via the admin naming the brand; the shoe shop's are the rest.
    let (status, named) = app
        .get(&format!("/kpis?{RANGE}&brand=cafe"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{named}");
    assert_eq!(named["totals"], cafe["totals"]);
    let (status, shoe) = app
        .get(&format!("/kpis?{RANGE}&brand=shoe"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{shoe}");
    assert_eq!(shoe["totals"]["sales_cents"], 6_000);
    assert_eq!(shoe["totals"]["points_outstanding"], 40);

    // CSV: the same series, by `format=csv` or by `Accept: text/csv`.
    for (query, accept) in [
        (format!("/kpis?{RANGE}&format=csv"), "*/*"),
        (format!("/kpis?{RANGE}"), "text/csv"),
    ] {
        let resp = app
            .client
            .get(format!("{}{query}", app.base))
            .bearer_auth(&app.admin_key)
            .header("Accept", accept)
            .send()
            .await
            .expect("csv");
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers()["content-type"]
            .to_str()
            .expect("type")
            .to_owned();
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let text = resp.text().await.expect("body");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(header[0], "period");
        let rows: Vec<Vec<String>> = lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        assert_eq!(rows.len(), 3);
        for (row, bucket) in rows.iter().zip(all["series"].as_array().expect("series")) {
            assert_eq!(row.len(), header.len());
            for (name, cell) in header.iter().zip(row) {
                let expected = match &bucket[*name] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(cell, &expected, "{name}");
            }
        }
    }
}

both_backends!(kpis_are_scoped_and_bounded, |app| async move {
    create_brand(&app, "cafe").await;
    create_brand(&app, "shoe").await;
    let cafe_office = create_key(&app, "brand", Some("cafe"), None).await;
    let cafe_till = create_key(&app, "counter", Some("cafe"), None).await;
    // A brand may not ask for another brand's figures; a counter for none.
    let (status, body) = app.get("/kpis?brand=shoe", &cafe_office).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app.get("/kpis", &cafe_till).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Authorization comes before validation.
    let (status, _) = app
        .get("/kpis?brand=shoe&from=nonsense", &cafe_office)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (query, code) in [
        ("from=2026-13-01", "invalid_date"),
        ("from=2026-03-05&to=2026-03-04", "invalid_range"),
        ("from=2025-01-01&to=2026-03-04", "range_too_long"),
        ("granularity=hour", "invalid_granularity"),
        ("format=xml", "validation_failed"),
    ] {
        let (status, body) = app.get(&format!("/kpis?{query}"), &app.admin_key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    // 400 days fit at week granularity.
    let (status, body) = app
        .get(
            "/kpis?from=2025-01-01&to=2026-03-04&granularity=week",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
});

// RFM fixture: five members, each its own quintile on every dimension. Member `i` (1..=5)
// makes `i` purchases (frequency score `i`); members buy in the order 5, 4, 3, 2, 1, an hour
// apart, so recency is 5 for member 1 down to 1 for member 5; each purchase is 1.00 except
// member 1's 100.00, so spend ranks 2, 3, 4, 5, 1 (monetary 1, 2, 3, 4 for members 2..=5 and
// 5 for member 1).
both_backends!(rfm_quintiles_and_an_rfm_campaign, |app| async move {
    create_brand(&app, "cafe").await;
    let till = create_key(&app, "counter", Some("cafe"), None).await;
    let mut members = Vec::new();
    for i in 1..=5 {
        members.push(member_id(&app, &format!("+86138000002{i:02}"), &format!("M{i}")).await);
    }
    let never = member_id(&app, "+8613800000299", "Never").await;
    for i in (1..=5usize).rev() {
        app.clock.advance_ms(HOUR_MS);
        for _ in 0..i {
            let cents = if i == 1 { 10_000 } else { 100 };
            buy(&app, &till, "cafe", &members[i - 1], cents, 0).await;
        }
    }
    let (status, dist) = app
        .get("/segments/rfm?members=true&limit=500", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{dist}");
    assert_eq!(dist["members"], 5, "{dist}");
    for dim in ["recency", "frequency", "monetary"] {
        assert_eq!(dist[dim], json!([1, 1, 1, 1, 1]), "{dim}: {dist}");
    }
    let expected = [(5, 1, 5), (4, 2, 1), (3, 3, 2), (2, 4, 3), (1, 5, 4)];
    let page = dist["page"].as_array().expect("page");
    assert_eq!(page.len(), 5);
    for (i, member) in members.iter().enumerate() {
        let row = page
            .iter()
            .find(|r| r["member_id"] == member.as_str())
            .expect("scored");
        let (r, f, m) = expected[i];
        assert_eq!(
            (row["r"].clone(), row["f"].clone(), row["m"].clone()),
            (json!(r), json!(f), json!(m)),
            "member {}",
            i + 1
        );
    }
    assert!(page.iter().all(|r| r["member_id"] != never.as_str()));
    // Pages of two, by member id.
    let (status, first) = app
        .get("/segments/rfm?members=true&limit=2", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let after = first["next_after"].as_str().expect("next").to_owned();
    let (status, second) = app
        .get(
            &format!("/segments/rfm?members=true&limit=2&after={after}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second["page"][0]["member_id"].as_str().expect("id") > after.as_str());
    // Bad input and scope.
    let (status, body) = app.get("/segments/rfm?limit=0", &app.admin_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = app.get("/segments/rfm", &till).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A campaign to recency 4..=5 reaches members 1 and 2 exactly (issued an hour after the
    // last purchase, so no earlier sale counts for its ROI).
    app.clock.advance_ms(HOUR_MS);
    crate::counter::support::sql_coupon_template(&app, "latte", "cafe", "cafe", 30, 500).await;
    let (status, bad) = app
        .post(
            "/campaigns",
            &app.admin_key,
            &idem(),
            &json!({ "title": "Recent", "template_id": "latte", "cap": 100,
                "segment": { "rfm": { "recency_min": 6 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["code"], "invalid_rfm_range");
    let (status, campaign) = app
        .post(
            "/campaigns",
            &app.admin_key,
            &idem(),
            &json!({ "title": "Recent", "template_id": "latte", "cap": 100,
                "segment": { "rfm": { "recency_min": 4 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let id = campaign["id"].as_str().expect("id").to_owned();
    let (status, issued) = app
        .post(
            &format!("/campaigns/{id}/issue"),
            &app.admin_key,
            &idem(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let mut reached: Vec<String> = sqlx::query_as::<_, (String,)>(
        "SELECT member_id FROM coupons WHERE source_kind = 'campaign' AND source_id = $1",
    )
    .bind(&id)
    .fetch_all(app.state.store.read())
    .await
    .expect("coupons")
    .into_iter()
    .map(|(m,)| m)
    .collect();
    reached.sort();
    let mut want = vec![members[0].clone(), members[1].clone()];
    want.sort();
    assert_eq!(reached, want);
    // Its ROI: member 1 buys 20.00 after receiving the coupon; nothing redeemed yet.
    app.clock.advance_ms(HOUR_MS);
    buy(&app, &till, "cafe", &members[0], 2_000, 0).await;
    let (status, kpis) = app.get("/kpis", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{kpis}");
    let roi = &kpis["campaigns"][0];
    assert_eq!(roi["campaign_id"], id.as_str(), "{kpis}");
    assert_eq!(roi["recipients"], 2);
    assert_eq!(roi["sales_cents"], 2_000);
    assert_eq!(roi["coupon_value_spent_cents"], 0);
    assert_eq!(roi["roi_bp"], Value::Null);
});

both_backends!(journey_roi_counts_sales_after_the_touch, |app| async move {
    create_brand(&app, "cafe").await;
    let till = create_key(&app, "counter", Some("cafe"), None).await;
    let ann = member_id(&app, "+8613800000301", "Ann").await;
    member_id(&app, "+8613800000302", "Bob").await;
    // Ann's purchase before the journey does not count for it.
    buy(&app, &till, "cafe", &ann, 9_900, 0).await;
    app.clock.advance_ms(HOUR_MS);
    let (status, journey) = app
        .post(
            "/journeys",
            &app.admin_key,
            &idem(),
            &json!({ "title": "Welcome", "trigger": { "kind": "joined", "within_days": 30 },
                "actions": [{ "kind": "grant_points", "funding_brand_id": "cafe",
                    "points": 100 }],
                "status": "active" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{journey}");
    let (status, run) = app
        .call(
            reqwest::Method::POST,
            "/jobs/journeys",
            Some(&app.admin_key),
            Some(&idem()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    app.clock.advance_ms(HOUR_MS);
    buy(&app, &till, "cafe", &ann, 5_000, 0).await;
    let (status, kpis) = app.get("/kpis", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{kpis}");
    let roi = &kpis["journeys"][0];
    assert_eq!(roi["journey_id"], journey["id"], "{kpis}");
    // Both touched, 100 points each at 100 points = 1.00: cost 2.00; sales after: 50.00;
    // (5,000 − 200) × 10,000 ÷ 200 = 240,000 bp.
    assert_eq!(roi["members_touched"], 2, "{roi}");
    assert_eq!(roi["points_value_granted_cents"], 200);
    assert_eq!(roi["coupon_value_spent_cents"], 0);
    assert_eq!(roi["orders"], 1);
    assert_eq!(roi["sales_cents"], 5_000);
    assert_eq!(roi["roi_bp"], 240_000);
});
