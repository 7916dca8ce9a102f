//! What every version's binding module has in common, as a macro: the generated types of each
//! WIT package are distinct Rust types, but the code that looks up, calls and converts them is the
//! same text. A version module defines `wit` (its `types` interface), `PluginPre`,
//! `InvocationParts`, `MemberParts` and `event_to`, then expands `host_imports!` and
//! `hook_bindings!` (with its exported interface's name).

/// Expands the pre-linked component, `describe`, `call` and the shared conversions.
macro_rules! hook_bindings {
    ($hooks:literal) => {
        /// The exported interface.
        const HOOKS: &str = $hooks;

        /// The pre-linked component and where each hook's function is among its exports, found once
        /// at load. The generated `instantiate` looks up and type-checks all six exports on every
        /// instantiation (~9,700 of the ~123,000 instructions of a `settle` call, counted with
        /// callgrind); a call here fetches and checks only the function it calls (~1,600: skipping
        /// that check too, with `TypedFunc::new_unchecked`, was measured and is not worth `unsafe`).
        #[derive(Clone)]
        pub(crate) struct Pre {
            pre: PluginPre<CallState>,
            points_bonus: ComponentExportIndex,
            list_perks: ComponentExportIndex,
            redeem_perk: ComponentExportIndex,
            apply_coupon: ComponentExportIndex,
            settle: ComponentExportIndex,
        }

        impl Pre {
            pub(crate) fn new(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Pre> {
                let component = instance_pre.component().clone();
                let pre = PluginPre::new(instance_pre)?;
                let hooks = component
                    .get_export_index(None, HOOKS)
                    .ok_or_else(|| wasmtime::format_err!("no exported instance named `{HOOKS}`"))?;
                let lookup = |name: &str| {
                    component
                        .get_export_index(Some(&hooks), name)
                        .ok_or_else(|| wasmtime::format_err!("`{HOOKS}` does not export `{name}`"))
                };
                Ok(Pre {
                    pre,
                    points_bonus: lookup("points-bonus")?,
                    list_perks: lookup("list-perks")?,
                    redeem_perk: lookup("redeem-perk")?,
                    apply_coupon: lookup("apply-coupon")?,
                    settle: lookup("settle")?,
                })
            }
        }

        /// Instantiates and calls `describe`; the full generated instantiation also type-checks every
        /// export once, at load.
        pub(crate) fn describe(
            pre: &Pre,
            store: &mut Store<CallState>,
        ) -> wasmtime::Result<model::PluginInfo> {
            let world = pre.pre.instantiate(&mut *store)?;
            let info = world.coalition_plugin_hooks().call_describe(&mut *store)?;
            Ok(model::PluginInfo {
                name: info.name,
                version: info.version,
                hooks: info.hooks.into_iter().map(hook_from).collect(),
                brands: info.brands,
            })
        }

        /// Calls the typed function at `index` of `instance` with `params`.
        fn call_export<P, R>(
            store: &mut Store<CallState>,
            instance: &Instance,
            index: &ComponentExportIndex,
            params: P,
        ) -> wasmtime::Result<R>
        where
            P: ComponentNamedList + Lower,
            (R,): ComponentNamedList + Lift,
        {
            let func = instance.get_typed_func::<P, (R,)>(&mut *store, index)?;
            let (result,) = func.call(&mut *store, params)?;
            Ok(result)
        }

        pub(crate) fn call(
            pre: &Pre,
            store: &mut Store<CallState>,
            invocation: &model::Invocation,
            args: &HookArgs<'_>,
        ) -> wasmtime::Result<Result<model::HookOutput, GuestError>> {
            let instance = pre.pre.instance_pre().instantiate(&mut *store)?;
            // Arguments are lowered straight from the model's strings: the bindings borrow them
            // (`ownership: Borrowing`), so no string is copied on the host side.
            let inv_parts = InvocationParts::new(invocation);
            let inv = inv_parts.view(invocation);
            let output = match *args {
                HookArgs::PointsBonus { member, order } => {
                    let member_parts = MemberParts::new(member);
                    let lines = lines_to(&order.lines);
                    let order = wit::Order {
                        order_id: &order.order_id,
                        brand: &order.brand,
                        lines: &lines,
                        total_cents: order.total_cents,
                        paid_with_points_cents: order.paid_with_points_cents,
                        base_points: order.base_points,
                    };
                    call_export::<_, Result<Vec<wit::Bonus>, wit::HookError>>(
                        store,
                        &instance,
                        &pre.points_bonus,
                        (inv, member_parts.view(member), order),
                    )?
                    .map(|bonuses| {
                        model::HookOutput::PointsBonus(
                            bonuses.into_iter().map(bonus_from).collect(),
                        )
                    })
                }
                HookArgs::ListPerks { member } => {
                    let member_parts = MemberParts::new(member);
                    call_export::<_, Result<Vec<wit::Perk>, wit::HookError>>(
                        store,
                        &instance,
                        &pre.list_perks,
                        (inv, member_parts.view(member)),
                    )?
                    .map(|perks| {
                        model::HookOutput::ListPerks(perks.into_iter().map(perk_from).collect())
                    })
                }
                HookArgs::RedeemPerk { member, request } => {
                    let member_parts = MemberParts::new(member);
                    let request = wit::RedeemRequest {
                        perk_id: &request.perk_id,
                        redemption_id: &request.redemption_id,
                    };
                    call_export::<_, Result<wit::RedeemDecision, wit::HookError>>(
                        store,
                        &instance,
                        &pre.redeem_perk,
                        (inv, member_parts.view(member), request),
                    )?
                    .map(|decision| {
                        model::HookOutput::RedeemPerk(match decision {
                            wit::RedeemDecision::Granted(perk) => {
                                model::RedeemDecision::Granted(perk_from(perk))
                            }
                            wit::RedeemDecision::Refused(reason) => {
                                model::RedeemDecision::Refused(reason)
                            }
                        })
                    })
                }
                HookArgs::ApplyCoupon { coupon, cart } => {
                    let params: Vec<(&str, &str)> = coupon
                        .params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let coupon = wit::Coupon {
                        code: &coupon.code,
                        template_id: &coupon.template_id,
                        funding_brand: &coupon.funding_brand,
                        params: &params,
                    };
                    let lines = lines_to(&cart.lines);
                    let applied: Vec<&str> =
                        cart.applied_templates.iter().map(String::as_str).collect();
                    let cart = wit::Cart {
                        brand: &cart.brand,
                        lines: &lines,
                        total_cents: cart.total_cents,
                        applied_templates: &applied,
                    };
                    call_export::<_, Result<wit::CouponDecision, wit::HookError>>(
                        store,
                        &instance,
                        &pre.apply_coupon,
                        (inv, coupon, cart),
                    )?
                    .map(|decision| {
                        model::HookOutput::ApplyCoupon(match decision {
                            wit::CouponDecision::Applied(lines) => model::CouponDecision::Applied(
                                lines
                                    .into_iter()
                                    .map(|l| model::LineDiscount {
                                        line_id: l.line_id,
                                        discount_cents: l.discount_cents,
                                    })
                                    .collect(),
                            ),
                            wit::CouponDecision::Rejected(reason) => {
                                model::CouponDecision::Rejected(reason)
                            }
                        })
                    })
                }
                HookArgs::Settle { event } => {
                    call_export::<_, Result<Vec<wit::SettlementLine>, wit::HookError>>(
                        store,
                        &instance,
                        &pre.settle,
                        (inv, event_to(event)),
                    )?
                    .map(|lines| {
                        model::HookOutput::Settle(
                            lines
                                .into_iter()
                                .map(|l| model::SettlementLine {
                                    payer: l.payer,
                                    payee: l.payee,
                                    amount_cents: l.amount_cents,
                                    reason: l.reason,
                                })
                                .collect(),
                        )
                    })
                }
            };
            Ok(output.map_err(|e| match e {
                wit::HookError::NotImplemented => GuestError::NotImplemented,
                wit::HookError::InvalidInput(reason) => {
                    GuestError::Failure(model::HookFailure::InvalidInput(reason))
                }
                wit::HookError::Failed(reason) => {
                    GuestError::Failure(model::HookFailure::Failed(reason))
                }
            }))
        }

        fn lines_to(lines: &[model::OrderLine]) -> Vec<wit::OrderLine<'_>> {
            lines
                .iter()
                .map(|l| wit::OrderLine {
                    line_id: &l.line_id,
                    sku: &l.sku,
                    category: &l.category,
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                    excluded: l.excluded,
                })
                .collect()
        }

        fn hook_from(hook: wit::Hook) -> model::Hook {
            match hook {
                wit::Hook::PointsBonus => model::Hook::PointsBonus,
                wit::Hook::ListPerks => model::Hook::ListPerks,
                wit::Hook::RedeemPerk => model::Hook::RedeemPerk,
                wit::Hook::ApplyCoupon => model::Hook::ApplyCoupon,
                wit::Hook::Settle => model::Hook::Settle,
            }
        }

        fn bonus_from(b: wit::Bonus) -> model::Bonus {
            model::Bonus {
                points: b.points,
                code: b.code,
                reason: b.reason,
            }
        }

        fn perk_from(p: wit::Perk) -> model::Perk {
            model::Perk {
                id: p.id,
                title: p.title,
                description: p.description,
                funding_brand: p.funding_brand,
                honouring_brand: p.honouring_brand,
                cost_points: p.cost_points,
                value_cents: p.value_cents,
                grant: match p.grant {
                    wit::Grant::Coupon(template) => model::Grant::Coupon(template),
                    wit::Grant::FreeItem(sku) => model::Grant::FreeItem(sku),
                    wit::Grant::DiscountCents(cents) => model::Grant::DiscountCents(cents),
                },
                valid_until_ms: p.valid_until_ms,
            }
        }
    };
}

pub(crate) use hook_bindings;

/// Expands the `host` imports (`log`, `config`) over the generated `Plugin` world, and
/// `add_to_linker`.
macro_rules! host_imports {
    () => {
        use self::Plugin as World;

        use self::coalition::plugin::host::LogLevel;
        use self::coalition::plugin::types as wit;

        struct HostData;

        impl HasData for HostData {
            type Data<'a> = &'a mut HostCtx;
        }

        impl coalition::plugin::host::Host for HostCtx {
            fn log(&mut self, level: LogLevel, message: String) {
                let level = match level {
                    LogLevel::Debug => model::LogLevel::Debug,
                    LogLevel::Info => model::LogLevel::Info,
                    LogLevel::Warn => model::LogLevel::Warn,
                    LogLevel::Error => model::LogLevel::Error,
                };
                HostCtx::log(self, level, message);
            }

            fn config(&mut self, key: String) -> Option<String> {
                HostCtx::config(self, &key)
            }
        }

        impl wit::Host for HostCtx {}

        pub(crate) fn add_to_linker(
            linker: &mut wasmtime::component::Linker<CallState>,
        ) -> wasmtime::Result<()> {
            World::add_to_linker::<CallState, HostData>(linker, |state| &mut state.host)
        }
    };
}

pub(crate) use host_imports;
