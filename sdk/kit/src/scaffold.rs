//! `coalition plugin new`: a plugin project that builds and passes its tests as generated.
//!
//! Every project has `plugin.toml` (the manifest), the code (`src/lib.rs`, `plugin.js` or
//! `app.py`), `fixtures/` (one recorded call per hook with the decision it must give, run by
//! `coalition plugin test`), a README with the next commands, and a `.gitignore`. Rust projects
//! also have a native unit test (`cargo test`); JavaScript and Python projects carry the WIT in
//! `wit/` (for editors and for the build).
//!
//! The generated hooks are small, working examples of each hook, all for the project's brand:
//! double points on its purchases, a welcome gift perk for 100 points, 10 % off every cart
//! line, and settlement of perks funded by one brand and honoured by another.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::{Lang, WIT_TEXT, WIT_VERSION};

/// The hooks `new` can write, in WIT order.
pub const HOOKS: [&str; 5] = [
    "points-bonus",
    "list-perks",
    "redeem-perk",
    "apply-coupon",
    "settle",
];

/// What to create.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Plugin name, lowercase kebab-case.
    pub name: String,
    /// The language.
    pub lang: Lang,
    /// Hooks to implement (a subset of [`HOOKS`]).
    pub hooks: Vec<String>,
    /// The brand the plugin belongs to.
    pub brand: String,
    /// Other brands the plugin involves (whose money it moves): each must co-sign it.
    pub partners: Vec<String>,
    /// Where to write the project (must not exist, or be empty).
    pub dir: PathBuf,
    /// Rust only: a local `coalition-sdk` (a checkout or an unpacked crate) to use instead of
    /// crates.io, through `[patch.crates-io]`.
    pub sdk_path: Option<PathBuf>,
}

/// Writes the project and returns the files written, relative to its folder.
pub fn create(project: &NewProject) -> Result<Vec<String>> {
    check_name(&project.name, "plugin name")?;
    check_name(&project.brand, "brand")?;
    for partner in &project.partners {
        check_name(partner, "partner brand")?;
        ensure!(
            partner != &project.brand,
            "--partner {partner} is the plugin's own brand"
        );
    }
    ensure!(!project.hooks.is_empty(), "--hooks names no hook");
    for hook in &project.hooks {
        ensure!(
            HOOKS.contains(&hook.as_str()),
            "unknown hook {hook:?}; the hooks are {}",
            HOOKS.join(", ")
        );
    }
    if project.dir.exists()
        && fs::read_dir(&project.dir)
            .with_context(|| format!("while reading {}", project.dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", project.dir.display());
    }
    let hooks: Vec<&str> = HOOKS
        .into_iter()
        .filter(|h| project.hooks.iter().any(|p| p == h))
        .collect();
    let mut files: Vec<(String, String)> = vec![
        ("plugin.toml".into(), manifest(project, &hooks)),
        ("README.md".into(), readme(project, &hooks)),
        (".gitignore".into(), gitignore(project.lang).into()),
    ];
    match project.lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), cargo_toml(project)));
            files.push(("src/lib.rs".into(), rust_code(project, &hooks)));
        }
        Lang::JavaScript => {
            files.push(("plugin.js".into(), js_code(project, &hooks)));
            files.push(("wit/plugin.wit".into(), WIT_TEXT.into()));
        }
        Lang::Python => {
            files.push(("app.py".into(), python_code(project, &hooks)));
            files.push(("wit/plugin.wit".into(), WIT_TEXT.into()));
        }
    }
    for hook in &hooks {
        let fixture = serde_json::to_string_pretty(&fixture(hook, &project.brand))?;
        files.push((format!("fixtures/{hook}.json"), fixture + "\n"));
    }
    for (path, text) in &files {
        let full = project.dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("while creating {}", parent.display()))?;
        }
        fs::write(&full, text).with_context(|| format!("while writing {}", full.display()))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Lowercase kebab-case, 1..=64 bytes, as the manifest requires of names and brand ids.
fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ensure!(
        ok,
        "{what} {name:?} must be lowercase kebab-case (a-z, 0-9, -), 1..=64 bytes"
    );
    Ok(())
}

/// Budgets per language: a JavaScript or Python guest starts an interpreter on every call.
fn limits(lang: Lang) -> (u64, u32, u32) {
    match lang {
        Lang::Rust => (1_000_000, 16, 20),
        Lang::JavaScript => (20_000_000, 64, 100),
        Lang::Python => (20_000_000, 64, 100),
    }
}

fn manifest(p: &NewProject, hooks: &[&str]) -> String {
    let (fuel, memory, deadline) = limits(p.lang);
    let hooks = hooks
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nwit = \"{WIT_VERSION}\"\n\
         description = \"{brand}'s plugin, written in {lang}.\"\nhooks = [{hooks}]\n\
         brands = [{brands}]\n\n\
         # Budgets per call, within the platform maxima (fuel 50M, 64 MiB, 250 ms).\n\
         # `coalition plugin test` prints what each fixture used against them.\n\
         [limits]\nfuel = {fuel}\nmemory_mib = {memory}\ndeadline_ms = {deadline}\n",
        name = p.name,
        brand = p.brand,
        brands = quoted_brands(p),
        lang = match p.lang {
            Lang::Rust => "Rust",
            Lang::JavaScript => "JavaScript",
            Lang::Python => "Python",
        },
    )
}

/// The manifest's brands, quoted and comma-separated: the plugin's own, then its partners.
fn quoted_brands(p: &NewProject) -> String {
    std::iter::once(&p.brand)
        .chain(&p.partners)
        .map(|b| format!("{b:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\nCargo.lock\n*.key\n",
        Lang::JavaScript => "/target\n/node_modules\n*.key\n",
        Lang::Python => "/target\n__pycache__/\n*.key\n",
    }
}

fn cargo_toml(p: &NewProject) -> String {
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\n# cdylib: the WebAssembly module; rlib: the native unit tests.\n\
         crate-type = [\"cdylib\", \"rlib\"]\n\n\
         [dependencies]\ncoalition-sdk = \"0.1\"\n\n\
         # A plugin is its own workspace.\n[workspace]\n\n\
         # Small, fast components: a panic becomes a trap the host contains.\n\
         [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\nstrip = true\n",
        name = p.name
    );
    if let Some(sdk) = &p.sdk_path {
        text.push_str(&format!(
            "\n# A local coalition-sdk instead of the one on crates.io.\n[patch.crates-io]\n\
             coalition-sdk = {{ path = {:?} }}\n",
            sdk.display().to_string()
        ));
    }
    text
}

fn rust_code(p: &NewProject, hooks: &[&str]) -> String {
    let has = |h: &str| hooks.contains(&h);
    let variants: Vec<&str> = hooks
        .iter()
        .map(|h| match *h {
            "points-bonus" => "Hook::PointsBonus",
            "list-perks" => "Hook::ListPerks",
            "redeem-perk" => "Hook::RedeemPerk",
            "apply-coupon" => "Hook::ApplyCoupon",
            _ => "Hook::Settle",
        })
        .collect();
    let mut imports = vec![
        "export_plugin",
        "Hook",
        "HookResult",
        "Invocation",
        "Plugin",
        "PluginInfo",
    ];
    let mut body = String::new();
    let mut helpers = String::new();
    if has("points-bonus") {
        imports.extend(["Bonus", "MemberContext", "Order"]);
        body.push_str(RUST_POINTS_BONUS);
    }
    if has("list-perks") || has("redeem-perk") {
        imports.extend(["Grant", "MemberContext", "Perk"]);
        helpers.push_str(RUST_GIFT);
    }
    if has("list-perks") {
        body.push_str(RUST_LIST_PERKS);
    }
    if has("redeem-perk") {
        imports.extend(["RedeemDecision", "RedeemRequest"]);
        body.push_str(RUST_REDEEM_PERK);
    }
    if has("apply-coupon") {
        imports.extend(["Cart", "Coupon", "CouponDecision", "LineDiscount"]);
        body.push_str(RUST_APPLY_COUPON);
    }
    if has("settle") {
        imports.extend(["SettleEvent", "SettleKind", "SettlementLine"]);
        body.push_str(RUST_SETTLE);
    }
    imports.sort_unstable_by_key(|s| (s.chars().next().is_some_and(char::is_uppercase), *s));
    imports.dedup();
    RUST_TEMPLATE
        .replace("__IMPORTS__", &imports.join(", "))
        .replace("__HOOK_VARIANTS__", &variants.join(", "))
        .replace("__HOOKS__", &body)
        .replace("__HELPERS__", &helpers)
        .replace(
            "__BRANDS_RUST__",
            &std::iter::once("BRAND.into()".to_owned())
                .chain(p.partners.iter().map(|b| format!("{b:?}.into()")))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .replace("__NAME__", &p.name)
        .replace("__BRAND__", &p.brand)
}

const RUST_TEMPLATE: &str = r#"//! __NAME__: the __BRAND__ brand's plugin. Build it with `coalition plugin build`, test it
//! with `cargo test` and `coalition plugin test`.

use coalition_sdk::{__IMPORTS__};

/// The brand this plugin belongs to (its manifest's only brand).
pub const BRAND: &str = "__BRAND__";
__HELPERS__
/// The plugin.
pub struct Rules;

impl Plugin for Rules {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "__NAME__".into(),
            version: "1.0.0".into(),
            hooks: vec![__HOOK_VARIANTS__],
            brands: vec![__BRANDS_RUST__],
        }
    }
__HOOKS__}

export_plugin!(Rules);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_matches_describe() {
        coalition_sdk::testing::check_manifest::<Rules>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }
}
"#;

const RUST_POINTS_BONUS: &str = r#"
    /// Double points on every purchase at the brand: a bonus equal to the base points.
    fn points_bonus(_inv: &Invocation, _member: &MemberContext, order: &Order) -> HookResult<Vec<Bonus>> {
        if order.brand != BRAND || order.base_points <= 0 {
            return Ok(Vec::new());
        }
        Ok(vec![Bonus::new(order.base_points, "double-points", format!("Double points at {BRAND}"))])
    }
"#;

const RUST_GIFT: &str = r#"
/// The perk's id.
const PERK_ID: &str = "welcome-gift";

/// A welcome gift for 100 points, funded and handed over by the brand.
fn gift() -> Perk {
    Perk {
        id: PERK_ID.into(),
        title: "A welcome gift".into(),
        description: format!("A gift from {BRAND}, for 100 points."),
        funding_brand: BRAND.into(),
        honouring_brand: BRAND.into(),
        cost_points: 100,
        value_cents: 500,
        grant: Grant::FreeItem("welcome-gift".into()),
        valid_until_ms: None,
    }
}
"#;

const RUST_LIST_PERKS: &str = r#"
    /// Every member sees the welcome gift.
    fn list_perks(_inv: &Invocation, _member: &MemberContext) -> HookResult<Vec<Perk>> {
        Ok(vec![gift()])
    }
"#;

const RUST_REDEEM_PERK: &str = r#"
    /// The welcome gift is granted as listed; any other id is refused.
    fn redeem_perk(_inv: &Invocation, _member: &MemberContext, request: &RedeemRequest) -> HookResult<RedeemDecision> {
        if request.perk_id == PERK_ID {
            Ok(RedeemDecision::Granted(gift()))
        } else {
            Ok(RedeemDecision::Refused("No such perk".into()))
        }
    }
"#;

const RUST_APPLY_COUPON: &str = r#"
    /// 10 % off every line of a cart at the brand.
    fn apply_coupon(_inv: &Invocation, _coupon: &Coupon, cart: &Cart) -> HookResult<CouponDecision> {
        if cart.brand != BRAND {
            return Ok(CouponDecision::Rejected(format!("Only at {BRAND}")));
        }
        let mut discounts = Vec::new();
        for line in &cart.lines {
            let total = line.total_cents()?;
            discounts.push(LineDiscount { line_id: line.line_id.clone(), discount_cents: total / 10 });
        }
        Ok(CouponDecision::Applied(discounts))
    }
"#;

const RUST_SETTLE: &str = r#"
    /// A perk funded by one brand and honoured by another: the funder pays its face value.
    fn settle(_inv: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        if event.kind != SettleKind::PerkRedeemed
            || event.funding_brand == event.honouring_brand
            || event.value_cents <= 0
        {
            return Ok(Vec::new());
        }
        Ok(vec![SettlementLine::new(
            event.funding_brand.clone(),
            event.honouring_brand.clone(),
            event.value_cents,
            "Perk value, paid by the funding brand",
        )])
    }
"#;

/// What differs between the JavaScript and the Python project: the file's template, the
/// shared perk helper, each hook's code (in [`HOOKS`] order), the stub of a hook left out, and
/// how `describe()` names a hook.
struct Script {
    template: &'static str,
    gift: &'static str,
    code: [&'static str; 5],
    stub: [&'static str; 5],
    hook_name: fn(&str) -> String,
}

/// The code of a JavaScript or Python project: the chosen hooks written, the others stubs that
/// answer `not-implemented`.
fn script_code(p: &NewProject, hooks: &[&str], script: &Script) -> String {
    let has = |h: &str| hooks.contains(&h);
    let helpers = if has("list-perks") || has("redeem-perk") {
        script.gift
    } else {
        ""
    };
    let body: String = HOOKS
        .iter()
        .enumerate()
        .map(|(i, hook)| {
            if has(hook) {
                script.code[i]
            } else {
                script.stub[i]
            }
        })
        .collect();
    let hook_list = hooks
        .iter()
        .map(|h| (script.hook_name)(h))
        .collect::<Vec<_>>()
        .join(", ");
    script
        .template
        .replace("__HELPERS__", helpers)
        .replace("__BODY__", &body)
        .replace("__HOOK_LIST__", &hook_list)
        .replace("__BRANDS__", &script_brands(p))
        .replace("__NAME__", &p.name)
        .replace("__BRAND__", &p.brand)
}

fn js_code(p: &NewProject, hooks: &[&str]) -> String {
    script_code(
        p,
        hooks,
        &Script {
            template: JS_TEMPLATE,
            gift: JS_GIFT,
            code: [
                JS_POINTS_BONUS,
                JS_LIST_PERKS,
                JS_REDEEM_PERK,
                JS_APPLY_COUPON,
                JS_SETTLE,
            ],
            stub: [
                "  pointsBonus() {\n    throw { tag: \"not-implemented\" };\n  },\n",
                "  listPerks() {\n    throw { tag: \"not-implemented\" };\n  },\n",
                "  redeemPerk() {\n    throw { tag: \"not-implemented\" };\n  },\n",
                "  applyCoupon() {\n    throw { tag: \"not-implemented\" };\n  },\n",
                "  settle() {\n    throw { tag: \"not-implemented\" };\n  },\n",
            ],
            hook_name: |h| format!("{h:?}"),
        },
    )
}

const JS_TEMPLATE: &str = r#"// __NAME__: the __BRAND__ brand's plugin, a component built with `coalition plugin build`.
//
// Records arrive as objects with camelCase fields; s64 and u64 values are BigInt (write 100n),
// u32 and smaller are numbers; a variant is { tag: "kebab-case", val }; an error is thrown as
// { tag: "not-implemented" } or { tag: "failed", val: "why" }. There is no clock and no
// randomness besides inv.nowMs and inv.seed: the host must be able to replay every call.

const BRAND = "__BRAND__";
__HELPERS__
export const hooks = {
  describe() {
    return { name: "__NAME__", version: "1.0.0", hooks: [__HOOK_LIST__], brands: [__BRANDS__] };
  },
__BODY__};
"#;

const JS_POINTS_BONUS: &str = r#"  // Double points on every purchase at the brand: a bonus equal to the base points.
  pointsBonus(inv, member, order) {
    if (order.brand !== BRAND || order.basePoints <= 0n) return [];
    return [{ points: order.basePoints, code: "double-points", reason: `Double points at ${BRAND}` }];
  },
"#;

const JS_GIFT: &str = r#"const PERK_ID = "welcome-gift";

// A welcome gift for 100 points, funded and handed over by the brand.
function gift() {
  return {
    id: PERK_ID,
    title: "A welcome gift",
    description: `A gift from ${BRAND}, for 100 points.`,
    fundingBrand: BRAND,
    honouringBrand: BRAND,
    costPoints: 100n,
    valueCents: 500n,
    grant: { tag: "free-item", val: "welcome-gift" },
    validUntilMs: undefined,
  };
}
"#;

const JS_LIST_PERKS: &str = r#"  // Every member sees the welcome gift.
  listPerks(inv, member) {
    return [gift()];
  },
"#;

const JS_REDEEM_PERK: &str = r#"  // The welcome gift is granted as listed; any other id is refused.
  redeemPerk(inv, member, request) {
    if (request.perkId === PERK_ID) return { tag: "granted", val: gift() };
    return { tag: "refused", val: "No such perk" };
  },
"#;

const JS_APPLY_COUPON: &str = r#"  // 10 % off every line of a cart at the brand.
  applyCoupon(inv, coupon, cart) {
    if (cart.brand !== BRAND) return { tag: "rejected", val: `Only at ${BRAND}` };
    const discounts = cart.lines.map((line) => ({
      lineId: line.lineId,
      discountCents: (BigInt(line.quantity) * line.unitPriceCents) / 10n,
    }));
    return { tag: "applied", val: discounts };
  },
"#;

const JS_SETTLE: &str = r#"  // A perk funded by one brand and honoured by another: the funder pays its face value.
  settle(inv, event) {
    if (event.kind !== "perk-redeemed" || event.fundingBrand === event.honouringBrand || event.valueCents <= 0n) {
      return [];
    }
    return [{
      payer: event.fundingBrand,
      payee: event.honouringBrand,
      amountCents: event.valueCents,
      reason: "Perk value, paid by the funding brand",
    }];
  },
"#;

fn python_code(p: &NewProject, hooks: &[&str]) -> String {
    script_code(
        p,
        hooks,
        &Script {
            template: PY_TEMPLATE,
            gift: PY_GIFT,
            code: [
                PY_POINTS_BONUS,
                PY_LIST_PERKS,
                PY_REDEEM_PERK,
                PY_APPLY_COUPON,
                PY_SETTLE,
            ],
            stub: [
                "\n    def points_bonus(self, inv, member, order):\n        raise Err(t.HookError_NotImplemented())\n",
                "\n    def list_perks(self, inv, member):\n        raise Err(t.HookError_NotImplemented())\n",
                "\n    def redeem_perk(self, inv, member, request):\n        raise Err(t.HookError_NotImplemented())\n",
                "\n    def apply_coupon(self, inv, coupon, cart):\n        raise Err(t.HookError_NotImplemented())\n",
                "\n    def settle(self, inv, event):\n        raise Err(t.HookError_NotImplemented())\n",
            ],
            hook_name: |h| format!("t.Hook.{}", h.replace('-', "_").to_uppercase()),
        },
    )
}

const PY_TEMPLATE: &str = r#""""__NAME__: the __BRAND__ brand's plugin, a component built with `coalition plugin build`.

Records arrive as dataclasses from `wit_world.imports.types` with snake_case fields and int
values; a variant case is its own class (t.Grant_FreeItem("sku")); a hook error is raised as
Err(t.HookError_Failed("why")). There is no clock and no randomness besides inv.now_ms and
inv.seed: the host must be able to replay every call.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types as t

BRAND = "__BRAND__"
__HELPERS__

class Hooks(exports.Hooks):
    def describe(self):
        return t.PluginInfo(
            name="__NAME__", version="1.0.0", hooks=[__HOOK_LIST__], brands=[__BRANDS__]
        )
__BODY__"#;

const PY_POINTS_BONUS: &str = r#"
    def points_bonus(self, inv, member, order):
        """Double points on every purchase at the brand: a bonus equal to the base points."""
        if order.brand != BRAND or order.base_points <= 0:
            return []
        return [t.Bonus(points=order.base_points, code="double-points", reason=f"Double points at {BRAND}")]
"#;

const PY_GIFT: &str = r#"PERK_ID = "welcome-gift"


def gift():
    """A welcome gift for 100 points, funded and handed over by the brand."""
    return t.Perk(
        id=PERK_ID,
        title="A welcome gift",
        description=f"A gift from {BRAND}, for 100 points.",
        funding_brand=BRAND,
        honouring_brand=BRAND,
        cost_points=100,
        value_cents=500,
        grant=t.Grant_FreeItem("welcome-gift"),
        valid_until_ms=None,
    )
"#;

const PY_LIST_PERKS: &str = r#"
    def list_perks(self, inv, member):
        """Every member sees the welcome gift."""
        return [gift()]
"#;

const PY_REDEEM_PERK: &str = r#"
    def redeem_perk(self, inv, member, request):
        """The welcome gift is granted as listed; any other id is refused."""
        if request.perk_id == PERK_ID:
            return t.RedeemDecision_Granted(gift())
        return t.RedeemDecision_Refused("No such perk")
"#;

const PY_APPLY_COUPON: &str = r#"
    def apply_coupon(self, inv, coupon, cart):
        """10 % off every line of a cart at the brand."""
        if cart.brand != BRAND:
            return t.CouponDecision_Rejected(f"Only at {BRAND}")
        return t.CouponDecision_Applied(
            [t.LineDiscount(line_id=l.line_id, discount_cents=l.quantity * l.unit_price_cents // 10) for l in cart.lines]
        )
"#;

const PY_SETTLE: &str = r#"
    def settle(self, inv, event):
        """A perk funded by one brand and honoured by another: the funder pays its face value."""
        if event.kind != t.SettleKind.PERK_REDEEMED or event.funding_brand == event.honouring_brand or event.value_cents <= 0:
            return []
        return [t.SettlementLine(payer=event.funding_brand, payee=event.honouring_brand,
                                 amount_cents=event.value_cents, reason="Perk value, paid by the funding brand")]
"#;

/// The brands list in JavaScript or Python: `BRAND`, then the partners quoted.
fn script_brands(p: &NewProject) -> String {
    std::iter::once("BRAND".to_owned())
        .chain(p.partners.iter().map(|b| format!("{b:?}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The recorded call and expected decision of `hook`'s fixture, for `brand`.
pub fn fixture(hook: &str, brand: &str) -> Value {
    let invocation = json!({
        "now_ms": 1_765_000_000_000_i64, "utc_offset_minutes": 480, "seed": 7, "brand": brand
    });
    let member = json!({
        "member_ref": "m-7f3a", "tier": "silver", "tier_rank": 1, "tags": [],
        "birthday_month": null, "points_balance": 1_200, "qualifying_spend_cents": 50_000,
        "spend": [], "member_since_ms": 1_735_689_600_000_i64
    });
    let lines = json!([
        {"line_id": "1", "sku": "sku-1", "category": "general", "quantity": 2,
         "unit_price_cents": 1_250, "excluded": false},
        {"line_id": "2", "sku": "sku-2", "category": "general", "quantity": 1,
         "unit_price_cents": 999, "excluded": false}
    ]);
    let gift = json!({
        "id": "welcome-gift", "title": "A welcome gift",
        "description": format!("A gift from {brand}, for 100 points."),
        "funding_brand": brand, "honouring_brand": brand, "cost_points": 100,
        "value_cents": 500, "grant": {"free-item": "welcome-gift"}, "valid_until_ms": null
    });
    let (input, expect) = match hook {
        "points-bonus" => (
            json!({"member": member, "order": {
                "order_id": "o-1", "brand": brand, "lines": lines, "total_cents": 3_499,
                "paid_with_points_cents": 0, "base_points": 34}}),
            json!([{"points": 34, "code": "double-points",
                    "reason": format!("Double points at {brand}")}]),
        ),
        "list-perks" => (json!({"member": member}), json!([gift])),
        "redeem-perk" => (
            json!({"member": member,
                   "request": {"perk_id": "welcome-gift", "redemption_id": "r-1"}}),
            json!({"granted": gift}),
        ),
        "apply-coupon" => (
            json!({"coupon": {"code": "TENOFF", "template_id": "ten-percent",
                              "funding_brand": brand, "params": []},
                   "cart": {"brand": brand, "lines": lines, "total_cents": 3_499,
                            "applied_templates": []}}),
            json!({"applied": [{"line_id": "1", "discount_cents": 250},
                               {"line_id": "2", "discount_cents": 99}]}),
        ),
        _ => (
            json!({"event": {"event_id": "e-1", "kind": "perk-redeemed", "brand": "partner",
                   "funding_brand": brand, "honouring_brand": "partner",
                   "reference": "welcome-gift", "points": 100, "value_cents": 500,
                   "occurred_at_ms": 1_765_000_000_000_i64}}),
            json!([{"payer": brand, "payee": "partner", "amount_cents": 500,
                    "reason": "Perk value, paid by the funding brand"}]),
        ),
    };
    json!({
        "call": {"invocation": invocation, "config": {}, "input": {hook: input}},
        "expect": expect
    })
}

fn readme(p: &NewProject, hooks: &[&str]) -> String {
    let (code, test, lang) = match p.lang {
        Lang::Rust => (
            "`src/lib.rs`",
            "cargo test                      # the native unit test\n",
            "Rust",
        ),
        Lang::JavaScript => ("`plugin.js`", "", "JavaScript"),
        Lang::Python => ("`app.py`", "", "Python"),
    };
    format!(
        "# {name}\n\n{brand}'s Coalition plugin, in {lang}: {hooks}. The code is in {code}, the \
         manifest (name, hooks, brands, budgets) in `plugin.toml`, and one recorded call per \
         hook with the decision it must give in `fixtures/`.\n\n\
         ```sh\n{test}coalition plugin build              # -> target/coalition/{name}.wasm\n\
         coalition plugin test               # every fixture, with its cost against the budgets\n\
         coalition plugin run --input fixtures/{first}.json --now 2026-12-05T10:00:00+08:00\n\
         coalition plugin keygen --out {brand}.key\n\
         coalition plugin sign --secret-key {brand}.key\n\
         export COALITION_SERVER=https://coalition.example COALITION_API_KEY=…   # the brand's key\n\
         coalition plugin upload --key-id … --signature …\n```\n\n\
         Without `--manifest` and `--component`, the commands read `plugin.toml` and \
         `target/coalition/{name}.wasm` in the current folder. The partner guide walks \
         through keys, co-signatures, the dry run and deployment.\n",
        name = p.name,
        brand = p.brand,
        hooks = hooks.join(", "),
        first = hooks.first().copied().unwrap_or("points-bonus"),
    )
}

/// The project folder `new` uses when none is given: `./NAME`.
pub fn default_dir(name: &str) -> PathBuf {
    Path::new(".").join(name)
}

/// The brand `new` assumes when none is given: the name's first word (`books-weekend` → `books`).
pub fn default_brand(name: &str) -> String {
    name.split('-').next().unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(lang: Lang, dir: &Path) -> NewProject {
        NewProject {
            name: "books-weekend".into(),
            lang,
            hooks: HOOKS.iter().map(|h| (*h).to_owned()).collect(),
            brand: "books".into(),
            partners: vec!["mall".into()],
            dir: dir.to_owned(),
            sdk_path: None,
        }
    }

    #[test]
    fn every_language_writes_a_manifest_code_fixtures_and_a_readme() {
        for lang in Lang::ALL {
            let root = tempfile::tempdir().expect("temp dir");
            let dir = root.path().join("p");
            let files = create(&project(lang, &dir)).expect("created");
            assert!(files.contains(&"plugin.toml".to_owned()));
            assert!(files.contains(&"fixtures/settle.json".to_owned()));
            assert_eq!(Lang::detect(&dir).expect("detected"), lang);
            let manifest = fs::read_to_string(dir.join("plugin.toml")).expect("manifest");
            assert!(manifest.contains("hooks = [\"points-bonus\", \"list-perks\""));
            assert!(manifest.contains("brands = [\"books\", \"mall\"]"));
        }
    }

    #[test]
    fn bad_names_unknown_hooks_and_full_folders_are_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = project(Lang::Python, &root.path().join("p"));
        p.name = "Books".into();
        assert!(create(&p).is_err());
        let mut p = project(Lang::Python, &root.path().join("p"));
        p.hooks = vec!["sleep".into()];
        assert!(create(&p)
            .expect_err("unknown hook")
            .to_string()
            .contains("unknown hook"));
        fs::write(root.path().join("keep"), "x").expect("write");
        let p = project(Lang::Python, root.path());
        assert!(create(&p)
            .expect_err("full folder")
            .to_string()
            .contains("not empty"));
    }

    #[test]
    fn only_the_chosen_hooks_are_implemented() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = project(Lang::JavaScript, &root.path().join("p"));
        p.hooks = vec!["settle".into()];
        create(&p).expect("created");
        let code = fs::read_to_string(root.path().join("p/plugin.js")).expect("code");
        assert!(code.contains("hooks: [\"settle\"]"));
        assert_eq!(
            code.matches("throw { tag: \"not-implemented\" }").count(),
            4
        );
        assert!(!root.path().join("p/fixtures/points-bonus.json").exists());
    }
}
