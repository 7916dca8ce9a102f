//! The console's main journeys in a real headless Chromium against a test server: an admin
//! reviews, approves, canaries, promotes and kills a plugin version; a brand co-signs a package
//! in the browser and downloads its statement; a member redeems a perk and sees the coupon and
//! the pass; a brand cannot open another brand's plugin or statement; a form without its CSRF
//! token is refused; sessions end. Each journey saves screenshots of its pages at 1280 and
//! 390 px into `docs/console/`.

use coalition::foundation::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::fixtures::{
    coffee_purchase, create_brand, create_key, idem, member_id, partner, ship, upload,
};
use crate::helpers::{Backend, TestApp};

const WIDE: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// Signs in with `key` through the sign-in form and lands on the console's home for the role.
async fn sign_in(browser: &Browser, app: &TestApp, key: &str) {
    browser.goto(&format!("{}/console/", app.base)).await;
    assert!(
        browser.current_url().await.contains("/console/login"),
        "a new visitor is sent to sign in"
    );
    browser.fill("#key", key).await;
    browser.submit_form("form[action='/console/login']").await;
    assert!(
        !browser.current_url().await.contains("/console/login"),
        "signed in: {}",
        browser.page_text().await
    );
}

/// Screenshots of the page shown at both widths, as `<name>-1280.png` and `<name>-390.png`.
async fn screenshots(browser: &Browser, name: &str) {
    browser.set_size(PHONE.0, PHONE.1).await;
    browser.screenshot(&format!("{name}-390")).await;
    browser.set_size(WIDE.0, WIDE.1).await;
    browser.screenshot(&format!("{name}-1280")).await;
}

/// Scrolls the page so the element matching `css` is at the top.
async fn scroll_to(browser: &Browser, css: &str) {
    browser
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView(true);",
            vec![json!(css)],
        )
        .await;
}

/// Fills in and sends one of the version page's action forms.
async fn act(browser: &Browser, action: &str, reason: &str) {
    let form = format!("form[data-action='{action}']");
    assert!(
        browser.exists(&form).await,
        "no {action} form on: {}",
        browser.page_text().await
    );
    browser
        .fill(&format!("{form} textarea[name=reason]"), reason)
        .await;
    browser.click(&format!("{form} input[name=confirm]")).await;
    browser.submit_form(&form).await;
    let notice = browser.page_text().await;
    assert!(
        notice.contains(&format!("Done: {action}")),
        "{action} did not go through: {notice}"
    );
}

async fn status(app: &TestApp, id: &str) -> Value {
    let (code, body) = app.get(&format!("/plugins/{id}"), &app.admin_key).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reviews_approves_canaries_promotes_and_kills_a_version() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let coffee = partner(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let v1 = ship(&app, &coffee, "coffee-bonus").await;
    // Recorded calls of the active version: what the dry run replays.
    for phone in ["+8613900000001", "+8613900000002", "+8613900000003"] {
        let member = member_id(&app, phone, "Ann").await;
        coffee_purchase(&app, &counter, &member).await;
    }
    let candidate = upload(&app, &coffee, "coffee-bonus-next").await;
    assert_eq!(candidate["status"], "validated", "{candidate}");
    let id = candidate["id"].as_str().expect("id").to_owned();

    let browser = Browser::start(WIDE.0, WIDE.1).await;
    sign_in(&browser, &app, &app.admin_key).await;
    browser.goto(&format!("{}/console/plugins", app.base)).await;
    let queue = browser.page_text().await;
    assert!(queue.contains("Waiting for review (1)"), "{queue}");
    screenshots(&browser, "review-queue").await;

    // The version page: imports, budgets, and the dry-run diff against recorded inputs.
    browser
        .click_and_wait(&format!("a[href='/console/plugins/{id}']"))
        .await;
    let page = browser.page_text().await;
    assert!(page.contains("coffee-bonus 1.1.0"), "{page}");
    assert!(page.contains("Imports (what it may call)"), "{page}");
    assert!(browser.exists("#exports li").await, "exports listed");
    assert!(
        page.contains("Budgets against the platform's maxima"),
        "{page}"
    );
    browser.submit_form("#dry-run form").await;
    let summary = browser.text("#dry-run-summary").await;
    assert!(summary.contains("of 3 decisions change"), "{summary}");
    assert_eq!(browser.count("#dry-run-table tbody tr").await, 3);
    screenshots(&browser, "plugin-version").await;
    scroll_to(&browser, "#dry-run").await;
    screenshots(&browser, "plugin-dry-run").await;

    // Approve, canary at 20%, promote, kill: each through the page, each checked in the API.
    act(&browser, "approve", "reviewed the diff").await;
    assert_eq!(status(&app, &id).await["status"], "approved");
    browser
        .fill("form[data-action='canary'] input[name=percent]", "20")
        .await;
    act(&browser, "canary", "one in five members first").await;
    let after = status(&app, &id).await;
    assert_eq!(after["canary_basis_points"], 2_000, "{after}");
    assert!(browser
        .page_text()
        .await
        .contains("canary 20.00% of members"));
    act(&browser, "promote", "the canary is healthy").await;
    assert_eq!(status(&app, &id).await["status"], "active");
    act(&browser, "kill", "stop it while we look at a report").await;
    let killed = status(&app, &id).await;
    assert_eq!(killed["killed"], true, "{killed}");

    // The version that served the purchases shows its live calls as numbers and charts.
    browser
        .goto(&format!("{}/console/plugins/{v1}", app.base))
        .await;
    let live = browser.text("#live").await;
    assert!(
        live.contains("points-bonus\n3") || live.contains("points-bonus 3"),
        "{live}"
    );
    assert!(browser.exists("#live figure.chart svg").await, "{live}");
    assert_eq!(browser.count("#receipts tbody tr").await, 3);
    scroll_to(&browser, "#live").await;
    screenshots(&browser, "plugin-live").await;

    // The audit log shows every step and a chain that verifies.
    browser.goto(&format!("{}/console/audit", app.base)).await;
    let audit = browser.page_text().await;
    for reason in [
        "reviewed the diff",
        "one in five members first",
        "the canary is healthy",
    ] {
        assert!(
            audit.contains(reason),
            "{reason} not in the audit page: {audit}"
        );
    }
    assert!(browser.text("#verification").await.contains("ok"));
    screenshots(&browser, "audit").await;

    // The programme overview reads the real purchases: three members, three orders.
    browser
        .goto(&format!("{}/console/overview", app.base))
        .await;
    let kpis = browser.text("#kpis").await;
    assert!(kpis.contains("3\nmembers"), "{kpis}");
    assert!(kpis.contains("3\norders"), "{kpis}");
    assert!(browser.exists("figure.chart svg").await, "charts drawn");
    screenshots(&browser, "programme").await;

    // A member found by phone: balance, lots with their expiry, history and tier progress.
    browser.goto(&format!("{}/console/members", app.base)).await;
    browser.fill("#phone", "+8613900000002").await;
    browser.submit_form("form[role=search]").await;
    browser.click_and_wait("main table a").await;
    let member = browser.page_text().await;
    assert!(member.contains("points balance"), "{member}");
    assert!(member.contains("Lots and expiry"), "{member}");
    assert!(browser.exists("#tier-progress").await, "{member}");
    let history = browser.text("main").await;
    assert!(
        history.contains("Points history") && history.contains("coffee"),
        "{history}"
    );
    screenshots(&browser, "member-admin").await;

    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brand_cosigns_a_member_redeems_and_brands_stay_apart() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let cinema = partner(&app, "cinema").await;
    let restaurant = partner(&app, "restaurant").await;
    create_brand(&app, "coffee").await;
    let coffee_office = create_key(&app, "brand", Some("coffee"), None).await;
    let restaurant_counter = create_key(&app, "counter", Some("restaurant"), None).await;
    let version = upload(&app, &cinema, "cinema-dinner").await;
    assert_eq!(version["status"], "awaiting_cosign", "{version}");
    let id = version["id"].as_str().expect("id").to_owned();

    // The restaurant co-signs in the browser: the secret key never leaves the page.
    let browser = Browser::start(WIDE.0, WIDE.1).await;
    sign_in(&browser, &app, &restaurant.api_key).await;
    let requests = browser.text("#cosign-requests").await;
    assert!(
        requests.contains("Waiting for your co-signature (1)")
            && requests.contains("cinema-dinner"),
        "{requests}"
    );
    browser
        .click_and_wait(&format!("#cosign-requests a[href='/console/plugins/{id}']"))
        .await;
    let page = browser.page_text().await;
    assert!(page.contains("Co-sign this package"), "{page}");
    assert!(page.contains("still to co-sign: restaurant"), "{page}");
    screenshots(&browser, "cosign").await;
    browser.fill("#key_id", &restaurant.key_id).await;
    browser.fill("#secret", &restaurant.secret).await;
    browser.submit_form("#cosign form").await;
    assert!(
        browser.page_text().await.contains("Done: co-signed"),
        "{}",
        browser.page_text().await
    );
    let signed = status(&app, &id).await;
    assert_eq!(signed["status"], "validated", "{signed}");
    let kinds: Vec<&str> = signed["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["upload", "cosign"], "{signed}");
    for (action, reason) in [("approve", "both brands signed"), ("deploy", "go")] {
        let (code, body) = app
            .post(
                &format!("/plugins/{id}/{action}"),
                &app.admin_key,
                &idem(),
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    crate::fixtures::install_plugin(&app, "coupon-logic", json!({})).await;
    crate::fixtures::cinema_template(&app).await;
    let (code, body) = app
        .call(
            reqwest::Method::PUT,
            "/perks/cinema-dinner/cinema-ticket-half/inventory",
            Some(&restaurant.api_key),
            Some(&idem()),
            Some(
                &json!({ "funding_brand": "restaurant", "total_stock": 10, "per_member_limit": 2 }),
            ),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // A member who dined for 600.00 redeems the cinema perk on a phone-sized screen.
    let member = member_id(&app, "+8613900000009", "Mei").await;
    let member_key = create_key(&app, "member", None, Some(&member)).await;
    let (code, body) = app
        .post(
            "/brands/restaurant/purchases",
            &restaurant_counter,
            &idem(),
            &json!({ "order_id": "R-1", "member_id": member, "lines": [
                { "line_id": "1", "sku": "set", "category": "dining", "quantity": 1,
                  "unit_price_cents": 60_000 } ] }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let phone = Browser::start(PHONE.0, PHONE.1).await;
    sign_in(&phone, &app, &member_key).await;
    assert!(phone.current_url().await.ends_with("/console/me"));
    let card = phone.page_text().await;
    assert!(card.contains("600\navailable"), "{card}");
    assert!(card.contains("Half-price cinema ticket"), "{card}");
    assert!(card.contains("Honoured by cinema"), "{card}");
    phone.screenshot("member-card-390").await;
    phone
        .click_and_wait("button[data-perk='cinema-ticket-half']")
        .await;
    let coupon = phone.text("#coupon-code").await;
    assert_eq!(coupon.len(), 16, "a coupon code: {coupon}");
    let (_, coupons) = app
        .get(&format!("/members/{member}/coupons"), &member_key)
        .await;
    assert_eq!(coupons[0]["code"], coupon.as_str(), "{coupons}");
    assert!(phone.page_text().await.contains("100\navailable"));
    let pass_drawn = phone
        .execute(
            "const img = document.querySelector('#pass img'); \
             return img.complete && img.naturalWidth > 0;",
            vec![],
        )
        .await;
    assert_eq!(pass_drawn, json!(true), "the pass QR code loads");
    phone.screenshot("member-redeemed-390").await;
    phone.set_size(WIDE.0, WIDE.1).await;
    phone.screenshot("member-redeemed-1280").await;
    phone.close().await;

    // The redemption settles: the restaurant downloads its statement as CSV.
    let (code, body) = app
        .post("/settlement/run", &app.admin_key, &idem(), &json!({}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let period = coalition::interfaces::console::layout::day(app.clock.now_ms())[..7].to_owned();
    browser
        .goto(&format!("{}/console/settlement/{period}", app.base))
        .await;
    let statements = browser.text("#statements").await;
    assert!(statements.contains("restaurant"), "{statements}");
    screenshots(&browser, "settlement").await;
    // The perk the restaurant funds, one unit down.
    browser.goto(&format!("{}/console/perks", app.base)).await;
    let inventory = browser.text("#inventory").await;
    assert!(
        inventory.contains("cinema-ticket-half") && inventory.contains("9"),
        "{inventory}"
    );
    let redemptions = browser.text("#redemptions").await;
    assert!(
        redemptions.contains("Newest redemptions (1)") && redemptions.contains(&coupon),
        "{redemptions}"
    );
    let csv = browser
        .execute(
            "return fetch(arguments[0]).then(r => r.text().then(t => [r.status, \
             r.headers.get('content-type'), r.headers.get('content-disposition'), t]));",
            vec![json!(format!(
                "/console/settlement/{period}/statements/restaurant/csv"
            ))],
        )
        .await;
    assert_eq!(csv[0], 200, "{csv}");
    assert!(
        csv[1].as_str().unwrap_or_default().starts_with("text/csv"),
        "{csv}"
    );
    assert!(
        csv[2].as_str().unwrap_or_default().contains("attachment"),
        "{csv}"
    );
    let text = csv[3].as_str().unwrap_or_default();
    assert!(
        text.lines().count() >= 2 && text.contains("restaurant"),
        "{text}"
    );
    // …but not the cinema's: the API's rule, in the browser too.
    let other = browser
        .execute(
            "return fetch(arguments[0]).then(r => r.status);",
            vec![json!(format!(
                "/console/settlement/{period}/statements/cinema/csv"
            ))],
        )
        .await;
    assert_eq!(other, 403);
    browser.close().await;

    // The coffee brand cannot open the cinema's plugin or statement.
    let coffee = Browser::start(WIDE.0, WIDE.1).await;
    sign_in(&coffee, &app, &coffee_office).await;
    coffee
        .goto(&format!("{}/console/plugins/{id}", app.base))
        .await;
    let refused = coffee.page_text().await;
    assert!(refused.contains("Not found"), "{refused}");
    assert!(!refused.contains("cinema-dinner"), "{refused}");
    coffee
        .goto(&format!(
            "{}/console/settlement/{period}/statements/cinema",
            app.base
        ))
        .await;
    let refused = coffee.page_text().await;
    assert!(refused.contains("Not allowed"), "{refused}");
    assert!(refused.contains("Status 403"), "{refused}");
    coffee.goto(&format!("{}/console/plugins", app.base)).await;
    assert!(!coffee.page_text().await.contains("cinema-dinner"));
    coffee.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_their_csrf_token_and_sessions_end() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let coffee = partner(&app, "coffee").await;
    let version = upload(&app, &coffee, "coffee-bonus").await;
    let id = version["id"].as_str().expect("id").to_owned();

    let browser = Browser::start(WIDE.0, WIDE.1).await;
    browser.goto(&format!("{}/console/login", app.base)).await;
    screenshots(&browser, "sign-in").await;
    // A wrong key is refused on the page.
    browser.fill("#key", "coa_not-a-key").await;
    browser.submit_form("form[action='/console/login']").await;
    assert!(browser
        .page_text()
        .await
        .contains("unknown, revoked or malformed"));
    sign_in(&browser, &app, &app.admin_key).await;
    let cookie = browser
        .cookie("coalition_session")
        .await
        .expect("a session cookie");
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    assert_eq!(cookie.path.as_deref(), Some("/console"), "{cookie:?}");

    // The approve form without its token: refused, nothing approved.
    browser
        .goto(&format!("{}/console/plugins/{id}", app.base))
        .await;
    // Keyboard first: Tab from the top reaches "Skip to content", and every field of the
    // page's forms has a label.
    browser
        .client()
        .active_element()
        .await
        .expect("focused element")
        .send_keys("\u{E004}")
        .await
        .expect("Tab");
    let focused = browser
        .execute("return document.activeElement.textContent;", vec![])
        .await;
    assert_eq!(focused, "Skip to content");
    let unlabelled = browser
        .execute(
            "return [...document.querySelectorAll('main input:not([type=hidden]), main textarea, \
             main select')].filter(f => !(f.id && document.querySelector(`label[for='${f.id}']`)) \
             && !f.closest('label')).length;",
            vec![],
        )
        .await;
    assert_eq!(unlabelled, 0, "every visible field has a label");
    browser
        .execute(
            "document.querySelector(\"form[data-action='approve'] input[name=csrf]\").remove();",
            vec![],
        )
        .await;
    browser
        .fill(
            "form[data-action='approve'] textarea[name=reason]",
            "sneaky",
        )
        .await;
    browser
        .click("form[data-action='approve'] input[name=confirm]")
        .await;
    browser.submit_form("form[data-action='approve']").await;
    let refused = browser.page_text().await;
    assert!(refused.contains("Form refused"), "{refused}");
    assert!(refused.contains("csrf_token_invalid"), "{refused}");
    assert_eq!(status(&app, &id).await["status"], "validated");
    // A forged token is refused the same way.
    browser
        .goto(&format!("{}/console/plugins/{id}", app.base))
        .await;
    browser
        .execute(
            "document.querySelector(\"form[data-action='approve'] input[name=csrf]\").value = \
             '00'.repeat(32);",
            vec![],
        )
        .await;
    browser
        .fill(
            "form[data-action='approve'] textarea[name=reason]",
            "forged",
        )
        .await;
    browser
        .click("form[data-action='approve'] input[name=confirm]")
        .await;
    browser.submit_form("form[data-action='approve']").await;
    assert!(browser.page_text().await.contains("csrf_token_invalid"));
    assert_eq!(status(&app, &id).await["status"], "validated");

    // Idle past the limit (the server's clock moves, not the test's): signed out.
    app.clock.advance_ms(31 * 60_000);
    browser.goto(&format!("{}/console/plugins", app.base)).await;
    assert!(browser.current_url().await.contains("/console/login?next="));
    // Signing out ends the session for good.
    sign_in(&browser, &app, &app.admin_key).await;
    browser.goto(&format!("{}/console/plugins", app.base)).await;
    browser.submit_form("form[action='/console/logout']").await;
    browser.goto(&format!("{}/console/plugins", app.base)).await;
    assert!(browser.current_url().await.contains("/console/login"));
    browser.close().await;
    app.stop().await;
}

/// A brand sees its budgets filling up and the stored value it holds; an admin sees every
/// brand's; a member sees their stored value and the points pending in a return window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_stored_value_and_pending_points_show_where_they_belong() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    create_brand(&app, "coffee").await;
    create_brand(&app, "mall").await;
    let coffee_office = create_key(&app, "brand", Some("coffee"), None).await;
    let coffee_counter = create_key(&app, "counter", Some("coffee"), None).await;
    let mall_office = create_key(&app, "brand", Some("mall"), None).await;
    let mall_counter = create_key(&app, "counter", Some("mall"), None).await;
    let ann = member_id(&app, "+8613900000001", "Ann").await;
    let ann_key = create_key(&app, "member", None, Some(&ann)).await;
    for (brand, key, label, amount) in [
        ("coffee", &coffee_office, "coffee perks", 20_000),
        ("mall", &mall_office, "mall coupons", 90_000),
    ] {
        let (status, body) = app
            .post(
                &format!("/brands/{brand}/budgets"),
                key,
                &idem(),
                &json!({ "kind": "perk_value", "period": "month", "amount": amount,
                         "label": label }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app
        .post(
            "/brands/coffee/stored-value/topups",
            &coffee_counter,
            &idem(),
            &json!({ "topup_id": "T-1", "member_id": ann, "amount_cents": 5_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            "/brands/mall",
            Some(&app.admin_key),
            Some(&idem()),
            Some(&json!({ "return_window_days": 7 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/brands/mall/purchases",
            &mall_counter,
            &idem(),
            &json!({ "order_id": "M-1", "member_id": ann, "lines": [
                { "line_id": "1", "sku": "scarf", "quantity": 1, "unit_price_cents": 12_300 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let browser = Browser::start(WIDE.0, WIDE.1).await;
    sign_in(&browser, &app, &coffee_office).await;
    browser.goto(&format!("{}/console/money", app.base)).await;
    let budgets = browser.text("#budgets").await;
    assert!(budgets.contains("coffee perks"), "{budgets}");
    assert!(
        !budgets.contains("mall coupons"),
        "another brand's budget: {budgets}"
    );
    let held = browser.text("#stored-value").await;
    assert!(held.contains("50.00"), "{held}");
    screenshots(&browser, "budgets").await;
    browser.close().await;

    let admin = Browser::start(WIDE.0, WIDE.1).await;
    sign_in(&admin, &app, &app.admin_key).await;
    admin.goto(&format!("{}/console/money", app.base)).await;
    let budgets = admin.text("#budgets").await;
    assert!(
        budgets.contains("coffee perks") && budgets.contains("mall coupons"),
        "{budgets}"
    );
    admin.close().await;

    let phone = Browser::start(PHONE.0, PHONE.1).await;
    sign_in(&phone, &app, &ann_key).await;
    phone.goto(&format!("{}/console/me", app.base)).await;
    let card = phone.text("#stored-value").await;
    assert!(card.contains("50.00"), "{card}");
    let pending = phone.text("#pending").await;
    assert!(pending.contains("123 pending"), "{pending}");
    phone.screenshot("member-stored-value-390").await;
    phone.close().await;
    app.stop().await;
}
