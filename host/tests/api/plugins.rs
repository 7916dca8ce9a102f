//! Plugins inside the host, over HTTP, with the real example and hostile components built by
//! `cargo xtask build-plugins`: bonus points on purchases with stored, replayable receipts; perks
//! listed from plugins; broken plugins failing open; installs rejected for bad components.

use coalition_runtime::model::Hook;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{create_brand, create_key, idem, install_plugin as install, member_id};
use crate::helpers::{TestApp, T0_MS};

const DAY_MS: i64 = 86_400_000;

/// Records a purchase of `lines` `(sku, category, qty, unit cents)` at `brand`.
async fn purchase(
    app: &TestApp,
    counter: &str,
    brand: &str,
    member: &str,
    order_id: &str,
    key: &str,
    lines: &[(&str, &str, i64, i64)],
) -> (StatusCode, Value) {
    let lines: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (sku, category, quantity, unit))| {
            json!({ "line_id": format!("{}", i + 1), "sku": sku, "category": category,
                    "quantity": quantity, "unit_price_cents": unit })
        })
        .collect();
    app.post(
        &format!("/brands/{brand}/purchases"),
        counter,
        key,
        &json!({ "order_id": order_id, "member_id": member, "lines": lines }),
    )
    .await
}

async fn balance(app: &TestApp, member: &str) -> i64 {
    let (status, body) = app
        .get(&format!("/members/{member}/points"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["balance"].as_i64().expect("balance")
}

both_backends!(
    coffee_bonus_doubles_points_on_its_day_with_a_replayable_receipt,
    |app| async move {
        create_brand(&app, "coffee").await;
        let counter = create_key(&app, "counter", Some("coffee"), None).await;
        let member = member_id(&app, "+8613800000001", "Ann").await;
        install(&app, "coffee-bonus", json!({})).await; // double_weekday defaults to monday

        // T0 is a Monday: 2 x 32.00 earns 64 base points, doubled by the plugin.
        let (status, body) = purchase(
            &app,
            &counter,
            "coffee",
            &member,
            "C-1",
            &idem(),
            &[("latte", "coffee", 2, 3_200)],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["base_points"], 64, "{body}");
        assert_eq!(body["bonus_points"], 64, "{body}");
        assert_eq!(body["bonuses"][0]["source"], "coffee-bonus@1.0.0", "{body}");
        assert_eq!(balance(&app, &member).await, 128);

        // The receipt is stored with the purchase and replays bit for bit.
        let purchase_id = body["id"].as_str().expect("id").to_owned();
        let (status, receipts) = app
            .get(
                &format!("/receipts?subject_kind=purchase&subject_id={purchase_id}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{receipts}");
        let receipts = receipts.as_array().expect("array").clone();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0]["plugin"], "coffee-bonus");
        assert_eq!(receipts[0]["hook"], "points-bonus");
        assert!(receipts[0]["fuel_used"].as_i64().expect("fuel") > 0);
        assert_eq!(receipts[0]["output"][0]["points"], 64);
        let receipt_id = receipts[0]["id"].as_str().expect("id");
        let (status, replay) = app
            .post(
                &format!("/receipts/{receipt_id}/replay"),
                &app.admin_key,
                &idem(),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{replay}");
        assert_eq!(replay["matches"], true, "{replay}");
        assert_eq!(replay["recorded_fuel_used"], replay["replayed_fuel_used"]);

        // Tuesday: no bonus; the empty decision still keeps its receipt (dry runs replay it).
        app.clock.advance_ms(DAY_MS);
        let (status, body) = purchase(
            &app,
            &counter,
            "coffee",
            &member,
            "C-2",
            &idem(),
            &[("latte", "coffee", 1, 3_200)],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["bonus_points"], 0, "{body}");
        let purchase_id = body["id"].as_str().expect("id").to_owned();
        let (_, receipts) = app
            .get(
                &format!("/receipts?subject_kind=purchase&subject_id={purchase_id}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(receipts.as_array().map(Vec::len), Some(1), "{receipts}");
        assert_eq!(receipts[0]["output"], json!([]), "{receipts}");
        app.stop().await;
    }
);

both_backends!(admin_config_changes_the_bonus_day, |app| async move {
    create_brand(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let member = member_id(&app, "+8613800000002", "Bo").await;
    install(&app, "coffee-bonus", json!({ "double_weekday": "tuesday" })).await;
    let (_, monday) = purchase(
        &app,
        &counter,
        "coffee",
        &member,
        "C-1",
        &idem(),
        &[("latte", "coffee", 1, 3_200)],
    )
    .await;
    assert_eq!(monday["bonus_points"], 0, "{monday}");
    app.clock.advance_ms(DAY_MS);
    let (_, tuesday) = purchase(
        &app,
        &counter,
        "coffee",
        &member,
        "C-2",
        &idem(),
        &[("latte", "coffee", 1, 3_200)],
    )
    .await;
    assert_eq!(tuesday["bonus_points"], 32, "{tuesday}");
    app.stop().await;
});

both_backends!(retried_purchase_with_bonus_posts_once, |app| async move {
    create_brand(&app, "coffee").await;
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let member = member_id(&app, "+8613800000003", "Cy").await;
    install(&app, "coffee-bonus", json!({})).await;
    let key = idem();
    let (first_status, first) = purchase(
        &app,
        &counter,
        "coffee",
        &member,
        "C-1",
        &key,
        &[("latte", "coffee", 1, 5_000)],
    )
    .await;
    let (second_status, second) = purchase(
        &app,
        &counter,
        "coffee",
        &member,
        "C-1",
        &key,
        &[("latte", "coffee", 1, 5_000)],
    )
    .await;
    assert_eq!(first_status, StatusCode::CREATED);
    assert_eq!(second_status, StatusCode::CREATED);
    assert_eq!(first, second);
    assert_eq!(balance(&app, &member).await, 100);
    let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_receipts")
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
    assert_eq!(n, 1, "one receipt for one purchase");
    app.stop().await;
});

both_backends!(
    cinema_perk_appears_after_restaurant_spend_and_expires_with_the_week,
    |app| async move {
        create_brand(&app, "restaurant").await;
        create_brand(&app, "cinema").await;
        let counter = create_key(&app, "counter", Some("restaurant"), None).await;
        let member = member_id(&app, "+8613800000004", "Di").await;
        let member_key = create_key(&app, "member", None, Some(&member)).await;
        install(&app, "cinema-dinner", json!({})).await;

        let (status, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{perks}");
        assert_eq!(
            perks["perks"].as_array().expect("perks").len(),
            0,
            "{perks}"
        );

        // 150.00 is under the 200.00 threshold; another 60.00 crosses it.
        purchase(
            &app,
            &counter,
            "restaurant",
            &member,
            "R-1",
            &idem(),
            &[("set", "dining", 1, 15_000)],
        )
        .await;
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(
            perks["perks"].as_array().expect("perks").len(),
            0,
            "{perks}"
        );
        purchase(
            &app,
            &counter,
            "restaurant",
            &member,
            "R-2",
            &idem(),
            &[("tea", "drinks", 1, 6_000)],
        )
        .await;
        // 210 points do not cover the 500-point perk: ask for unaffordable perks too.
        let (_, perks) = app
            .get(
                &format!("/members/{member}/perks?include_unaffordable=true"),
                &member_key,
            )
            .await;
        let list = perks["perks"].as_array().expect("perks");
        assert_eq!(list.len(), 1, "{perks}");
        assert_eq!(list[0]["id"], "cinema-ticket-half");
        assert_eq!(list[0]["funding_brand"], "restaurant");
        assert_eq!(list[0]["honouring_brand"], "cinema");
        assert_eq!(list[0]["plugin"], "cinema-dinner");
        assert_eq!(list[0]["grant"]["kind"], "coupon");
        assert_eq!(
            perks["unavailable"].as_array().expect("unavailable").len(),
            0
        );

        // Another member may not read them; eight days later the spend is out of the window.
        let other = member_id(&app, "+8613800000005", "Ed").await;
        let other_key = create_key(&app, "member", None, Some(&other)).await;
        let (status, _) = app
            .get(&format!("/members/{member}/perks"), &other_key)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        app.clock.advance_ms(8 * DAY_MS);
        let (_, perks) = app
            .get(&format!("/members/{member}/perks"), &member_key)
            .await;
        assert_eq!(
            perks["perks"].as_array().expect("perks").len(),
            0,
            "{perks}"
        );
        app.stop().await;
    }
);

both_backends!(
    broken_plugins_fail_open_for_perks_and_purchases,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "parking").await;
        let counter = create_key(&app, "counter", Some("mall"), None).await;
        let member = member_id(&app, "+8613800000006", "Fu").await;
        install(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        install(&app, "panics", json!({})).await;
        install(&app, "infinite-loop", json!({})).await;

        let (status, perks) = app
            .get(&format!("/members/{member}/perks"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{perks}");
        let list = perks["perks"].as_array().expect("perks");
        assert_eq!(list.len(), 1, "{perks}");
        assert_eq!(list[0]["plugin"], "parking-perk");
        let unavailable = perks["unavailable"].as_array().expect("unavailable");
        let mut names: Vec<&str> = unavailable
            .iter()
            .filter_map(|u| u["plugin"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["infinite-loop", "panics"], "{perks}");
        let loop_failure = unavailable
            .iter()
            .find(|u| u["plugin"] == "infinite-loop")
            .expect("loop");
        assert_eq!(loop_failure["failure"], "fuel_exhausted", "{perks}");

        // The broken plugins do not switch the listing cache off for the healthy one: a second
        // listing asks the broken ones again (their failure may be transient) and answers
        // parking-perk's offers from the cache.
        let (status, again) = app
            .get(&format!("/members/{member}/perks"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["perks"], perks["perks"]);
        assert_eq!(again["unavailable"].as_array().map(Vec::len), Some(2));
        let runs = |name: &str| {
            app.state
                .plugins
                .serving(&member)
                .iter()
                .find(|p| p.plugin.name() == name)
                .map(|p| p.plugin.calls_run(Hook::ListPerks))
        };
        assert_eq!(runs("parking-perk"), Some(1), "served from the cache");
        assert_eq!(runs("panics"), Some(2), "failures are not cached");

        // Both broken plugins implement points-bonus for the mall: the purchase still goes
        // through with its base points, and no receipt is stored for the failed decisions.
        let (status, body) = purchase(
            &app,
            &counter,
            "mall",
            &member,
            "M-1",
            &idem(),
            &[("bag", "fashion", 1, 10_000)],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["bonus_points"], 0, "{body}");
        assert_eq!(
            balance(&app, &member).await,
            body["base_points"].as_i64().expect("base")
        );
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_receipts")
            .fetch_one(app.state.store.read())
            .await
            .expect("count");
        assert_eq!(n, 0);
        app.stop().await;
    }
);

both_backends!(bad_components_are_rejected_at_install, |app| async move {
    let err = crate::fixtures::try_install_plugin(&app, "forbidden-import", json!({}))
        .await
        .expect_err("forbidden");
    assert_eq!(err.code, "plugin_rejected");
    assert!(err.detail.contains("coalition:evil"), "{}", err.detail);
    let err = crate::fixtures::try_install_plugin(&app, "corrupt", json!({}))
        .await
        .expect_err("corrupt");
    assert_eq!(err.code, "plugin_rejected");
    let err =
        crate::fixtures::try_install_plugin(&app, "coffee-bonus", json!({ "no_such_key": 1 }))
            .await
            .expect_err("config");
    assert_eq!(err.code, "validation_failed");
    install(&app, "coffee-bonus", json!({})).await;
    let err = crate::fixtures::try_install_plugin(&app, "coffee-bonus", json!({}))
        .await
        .expect_err("same version");
    assert_eq!(err.code, "plugin_version_exists");
    app.stop().await;
});

both_backends!(plugins_are_listed_per_role, |app| async move {
    create_brand(&app, "coffee").await;
    create_brand(&app, "cinema").await;
    install(&app, "coffee-bonus", json!({})).await;
    install(&app, "cinema-dinner", json!({})).await;
    let (status, all) = app.get("/plugins", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all.as_array().expect("list").len(), 2);
    assert!(all
        .as_array()
        .expect("list")
        .iter()
        .all(|p| p["loaded"] == true && p["breaker"] == "closed"));
    let coffee = create_key(&app, "brand", Some("coffee"), None).await;
    let (_, mine) = app.get("/plugins", &coffee).await;
    let mine = mine.as_array().expect("list");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["name"], "coffee-bonus");
    let counter = create_key(&app, "counter", Some("coffee"), None).await;
    let (status, _) = app.get("/plugins", &counter).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let _ = T0_MS;
    app.stop().await;
});

both_backends!(
    demo_seeds_plugins_and_shows_their_effects,
    |app| async move {
        coalition::app::demo::seed_with_plugins(
            &app.state,
            Some(&crate::fixtures::plugins_dir("coffee-bonus")),
        )
        .await
        .expect("demo seed");
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_versions WHERE status = 'active'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("count");
        assert_eq!(
            n, 7,
            "five Rust (one of them on WIT 0.2.0), one JavaScript and one Python example"
        );
        // The coffee chain's next version waits for review, and its dry run replays the two
        // sample coffee purchases.
        let (_, listed) = app.get("/plugins", &app.admin_key).await;
        let next: Vec<&Value> = listed
            .as_array()
            .expect("versions")
            .iter()
            .filter(|v| v["name"] == "coffee-bonus" && v["version"] == "1.1.0")
            .collect();
        assert_eq!(next.len(), 1, "{listed}");
        assert_eq!(next[0]["status"], "validated", "{listed}");
        assert_eq!(next[0]["uploaded_by_brand"], "coffee", "{listed}");
        let next_id = next[0]["id"].as_str().expect("id").to_owned();
        let (status, report) = app
            .call(
                reqwest::Method::POST,
                &format!("/plugins/{next_id}/dry-run"),
                Some(&app.admin_key),
                None,
                Some(&json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        // The two sample coffee purchases' bonuses (settle calls are replayed too when the
        // periodic settlement has run meanwhile: how many depends on timing, so only the
        // bonuses are counted), and no replay differs.
        let items = report["items"].as_array().expect("items");
        let bonuses = items.iter().filter(|i| i["hook"] == "points-bonus").count();
        assert_eq!(bonuses, 2, "{report}");
        assert_eq!(report["differing"], 0, "{report}");
        // The coffee chain's double-points day is set to the day of the first start.
        let (status, coffee) = app
            .get("/brands/coffee/purchases/C-3001", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{coffee}");
        assert!(
            coffee["bonus_points"].as_i64().expect("bonus") > 0,
            "{coffee}"
        );
        assert_eq!(coffee["bonus_points"], coffee["base_points"], "{coffee}");
        // One paid membership card, sold at the coffee counter from stored value.
        let (cards,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM membership_payments
             WHERE payment = 'stored_value' AND selling_brand = 'coffee'",
        )
        .fetch_one(app.state.store.read())
        .await
        .expect("cards");
        assert_eq!(cards, 1, "the demo sells one card");
        // The first member dined and shopped: the cinema perk and Gold parking are listed.
        let keys = coalition::app::demo::read_keys(
            &app.state
                .config
                .data_dir
                .join(coalition::app::demo::KEYS_FILE),
        )
        .expect("keys");
        let member = &keys.members[0];
        let (status, perks) = app
            .get(&format!("/members/{}/perks", member.member_id), &member.key)
            .await;
        assert_eq!(status, StatusCode::OK, "{perks}");
        let mut ids: Vec<&str> = perks["perks"]
            .as_array()
            .expect("perks")
            .iter()
            .filter_map(|p| p["id"].as_str())
            .collect();
        ids.sort_unstable();
        // The popcorn comes from the Python plugin: the member dined at the restaurant. The
        // lounge pass comes from the 0.2.0 plugin, which reads the member's Mall Plus card.
        assert_eq!(
            ids,
            [
                "cinema-ticket-half",
                "lounge-pass",
                "parking-2h",
                "popcorn-after-dinner"
            ],
            "{perks}"
        );
        // The JavaScript plugin triples restaurant points on a (local) Saturday: T0 is a
        // Monday 18:00 at UTC+8, so five days on.
        app.clock.advance_ms(5 * 86_400_000);
        let (status, dinner) = app
            .post(
                "/brands/restaurant/purchases",
                &keys.brands["restaurant"].counter,
                "weekend-dinner",
                &json!({"order_id": "R-SAT", "member_id": member.member_id, "lines": [
                    {"line_id": "1", "sku": "hotpot-set", "category": "dining",
                     "quantity": 1, "unit_price_cents": 12_800}]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{dinner}");
        let bonus = &dinner["bonuses"][0];
        assert_eq!(bonus["code"], "weekend-x3", "{dinner}");
        assert_eq!(
            bonus["points"].as_i64(),
            dinner["base_points"].as_i64().map(|b| b * 2),
            "{dinner}"
        );
        // A second start changes nothing.
        coalition::app::demo::seed_with_plugins(
            &app.state,
            Some(&crate::fixtures::plugins_dir("coffee-bonus")),
        )
        .await
        .expect("second start");
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM purchases")
            .fetch_one(app.state.store.read())
            .await
            .expect("count");
        assert_eq!(
            n, 8,
            "the five samples, the dinner paid partly with stored value, the referred friend's \
             first purchase and the Saturday dinner"
        );
        // The cinema's tickets earned points that wait out its 7-day return window (the clock
        // moved 5 days since the demo started).
        let (_, tickets) = app
            .get("/brands/cinema/purchases/K-4001", &app.admin_key)
            .await;
        assert!(tickets["points_pending"].as_i64() > Some(0), "{tickets}");
        assert_eq!(
            tickets["points_pending"], tickets["points_earned"],
            "{tickets}"
        );
        // The demo's stored value: 200.00 topped up at the coffee chain, 120.00 of it spent on
        // dinner at the restaurant with 5,000 points and cash; the coffee chain holds the rest.
        let (_, mixed) = app
            .get("/brands/restaurant/purchases/R-1002", &app.admin_key)
            .await;
        assert_eq!(
            (
                &mixed["points_spent"],
                &mixed["stored_value_cents"],
                &mixed["cash_cents"]
            ),
            (&json!(5_000), &json!(12_000), &json!(13_000)),
            "{mixed}"
        );
        let (_, sv) = app
            .get(
                &format!(
                    "/members/{}/stored-value",
                    mixed["member_id"].as_str().unwrap_or("")
                ),
                &app.admin_key,
            )
            .await;
        // 200.00 topped up, 120.00 paid at the restaurant, 30.00 for the Mall Plus card.
        assert_eq!(sv["balance_cents"], 5_000, "{sv}");
        assert_eq!(sv["funds"][0]["brand_id"], "coffee", "{sv}");
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM plugin_versions")
            .fetch_one(app.state.store.read())
            .await
            .expect("count");
        assert_eq!(
            n, 8,
            "the seven examples and the version under review, once"
        );
        app.stop().await;
    }
);

/// The JavaScript and Python examples pass their fixtures in the server's sandbox, through
/// `coalition plugin test` on the components `cargo xtask build-plugins` built with the kit.
#[test]
fn javascript_and_python_examples_pass_their_fixtures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    for (name, project) in [
        ("restaurant-weekend", "js/restaurant-weekend"),
        ("cinema-popcorn", "python/cinema-popcorn"),
    ] {
        let built = crate::fixtures::plugins_dir(name);
        let summary = coalition::app::cli::plugin::test_fixtures(
            &root.join(project).join("plugin.toml"),
            &built.join(format!("{name}.wasm")),
            &root.join(project).join("fixtures"),
        )
        .unwrap_or_else(|err| panic!("{name}: {err:#}"));
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_eq!(summary["fixtures"], 4, "{summary}");
    }
}

both_backends!(
    a_reload_keeps_unchanged_versions_loaded_as_they_are,
    |app| async move {
        create_brand(&app, "mall").await;
        create_brand(&app, "parking").await;
        let member = member_id(&app, "+8613800000009", "Ky").await;
        install(&app, "parking-perk", json!({ "min_tier_rank": 0 })).await;
        let (status, perks) = app
            .get(&format!("/members/{member}/perks"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{perks}");
        let runs = || {
            app.state
                .plugins
                .active()
                .iter()
                .find(|p| p.plugin.name() == "parking-perk")
                .map(|p| p.plugin.calls_run(Hook::ListPerks))
        };
        assert_eq!(runs(), Some(1));
        // Another node's change (or a NOTIFY) reloads the registry: the unchanged version keeps
        // its instance — counters, breaker and compiled code — instead of being rebuilt.
        for _ in 0..2 {
            coalition::plugins::registry::reload(&app.state.store, &app.state.plugins)
                .await
                .expect("reload");
        }
        assert_eq!(runs(), Some(1), "the same loaded instance after reloads");
        // A changed config is a changed plugin: it is loaded afresh.
        sqlx::query("UPDATE plugin_versions SET config = $1 WHERE name = 'parking-perk'")
            .bind(r#"{"min_tier_rank": 1}"#)
            .execute(app.state.store.write())
            .await
            .expect("update");
        coalition::plugins::registry::reload(&app.state.store, &app.state.plugins)
            .await
            .expect("reload");
        assert_eq!(runs(), Some(0), "a new instance for the new config");
        app.stop().await;
    }
);
