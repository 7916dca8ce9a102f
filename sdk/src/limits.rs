//! The sizes and ranges the `coalition:plugin@0.1.0` contract allows, as named constants.
//!
//! The host rejects a decision that breaks any of these; the SDK's constructors clip texts to
//! them so that a long reason never turns a good decision into a rejected one.

/// Longest reason in a refusal, rejection, bonus, settlement line or hook error, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// Longest perk id or bonus code, in bytes: they are keys in reports.
pub const MAX_CODE_BYTES: usize = 64;
/// Longest perk title, in bytes: it must fit one line of a phone screen.
pub const MAX_TITLE_BYTES: usize = 120;
/// Longest perk description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1000;
/// Most perks one `list-perks` call may return.
pub const MAX_PERKS: usize = 100;
/// Most settlement lines one `settle` call may return.
pub const MAX_SETTLEMENT_LINES: usize = 16;
/// Most log lines the host keeps per call; later lines are dropped and counted.
pub const MAX_LOG_LINES_PER_CALL: usize = 32;
/// Most log bytes the host keeps per call; later lines are dropped and counted.
pub const MAX_LOG_BYTES_PER_CALL: usize = 8 * 1024;
/// Most lines in an order or a cart.
pub const MAX_LINES: usize = 500;
/// Most units on one line.
pub const MAX_QUANTITY: u32 = 10_000;
/// Highest unit price, cents. With [`MAX_QUANTITY`] and [`MAX_LINES`] a total still fits `i64`.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;
/// Lowest local offset from UTC, minutes (UTC-12).
pub const MIN_UTC_OFFSET_MINUTES: i32 = -720;
/// Highest local offset from UTC, minutes (UTC+14).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 840;
/// The settlement lines of one event may move at most this multiple of its `value-cents`.
pub const MAX_SETTLEMENT_MULTIPLE_OF_VALUE: i64 = 2;
/// The WIT package this build implements (the crate root's `WIT_PACKAGE`): a plugin's
/// `plugin.toml` must name it in `wit`.
pub const WIT_PACKAGE: &str = crate::WIT_PACKAGE;

/// Returns `text` cut to at most `max_bytes` bytes, on a character boundary.
///
/// ```
/// assert_eq!(coalition_sdk::limits::clip("héllo", 2), "h");
/// assert_eq!(coalition_sdk::limits::clip("hello", 200), "hello");
/// ```
pub fn clip(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Owned version of [`clip`].
pub fn clip_owned(text: impl Into<String>, max_bytes: usize) -> String {
    let mut text = text.into();
    let end = clip(&text, max_bytes).len();
    text.truncate(end);
    text
}
