//! Integer money and points math: cents and points are `i64`, never floats.
//!
//! Every function that divides takes an explicit [`Rounding`], computes in `i128` so that no
//! intermediate product overflows, and returns `None` when the result does not fit `i64`.
//!
//! ```
//! use coalition_sdk::money::{basis_points_of, split_proportionally, Rounding};
//!
//! // 5% platform commission on 4000 cents.
//! assert_eq!(basis_points_of(4_000, 500, Rounding::Down), Some(200));
//! // 33.33% of 100 cents, rounded three ways.
//! assert_eq!(basis_points_of(100, 3_333, Rounding::Down), Some(33));
//! assert_eq!(basis_points_of(100, 3_333, Rounding::Up), Some(34));
//! assert_eq!(basis_points_of(100, 3_350, Rounding::HalfUp), Some(34));
//! // 3000 cents off spread over lines of 10000, 5000 and 5000 cents: exact, no cent lost.
//! assert_eq!(split_proportionally(3_000, &[10_000, 5_000, 5_000]), Some(vec![1_500, 750, 750]));
//! ```

/// Basis points in a whole: 10 000 bp = 100%.
pub const BASIS_POINTS_PER_WHOLE: i64 = 10_000;

/// How a division rounds. Money never rounds implicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Toward negative infinity (floor): the payer's side keeps the fraction.
    Down,
    /// Toward positive infinity (ceiling).
    Up,
    /// To the nearest integer; an exact half rounds up (toward positive infinity).
    HalfUp,
}

/// `value × numerator ÷ denominator`, rounded as asked.
///
/// Returns `None` when `denominator` is 0 or the result does not fit `i64`.
///
/// ```
/// use coalition_sdk::money::{mul_div, Rounding};
/// assert_eq!(mul_div(7, 1, 2, Rounding::Down), Some(3));
/// assert_eq!(mul_div(-7, 1, 2, Rounding::Down), Some(-4));
/// assert_eq!(mul_div(7, 1, 2, Rounding::HalfUp), Some(4));
/// assert_eq!(mul_div(i64::MAX, 2, 1, Rounding::Down), None);
/// ```
pub fn mul_div(value: i64, numerator: i64, denominator: i64, rounding: Rounding) -> Option<i64> {
    if denominator == 0 {
        return None;
    }
    let mut n = i128::from(value) * i128::from(numerator);
    let mut d = i128::from(denominator);
    if d < 0 {
        n = -n;
        d = -d;
    }
    let q = match rounding {
        Rounding::Down => n.div_euclid(d),
        Rounding::Up => -((-n).div_euclid(d)),
        Rounding::HalfUp => (2 * n + d).div_euclid(2 * d),
    };
    i64::try_from(q).ok()
}

/// `basis_points` ÷ 10 000 of `amount` (500 bp = 5%), rounded as asked.
pub fn basis_points_of(amount: i64, basis_points: i64, rounding: Rounding) -> Option<i64> {
    mul_div(amount, basis_points, BASIS_POINTS_PER_WHOLE, rounding)
}

/// `percent` ÷ 100 of `amount`, rounded as asked.
pub fn percent_of(amount: i64, percent: i64, rounding: Rounding) -> Option<i64> {
    mul_div(amount, percent, 100, rounding)
}

/// Sum with overflow check; `None` on overflow.
///
/// ```
/// assert_eq!(coalition_sdk::money::checked_sum([1, 2, 3]), Some(6));
/// assert_eq!(coalition_sdk::money::checked_sum([i64::MAX, 1]), None);
/// ```
pub fn checked_sum(values: impl IntoIterator<Item = i64>) -> Option<i64> {
    values.into_iter().try_fold(0i64, i64::checked_add)
}

/// Splits `total` into shares proportional to `weights`, exactly: the shares add up to `total`.
///
/// Each share is first rounded down; the cents left over go one each to the shares with the
/// largest remainders, ties to the earlier weight (largest-remainder method, deterministic).
/// When `0 <= total <= sum(weights)`, every share is at most its weight, so a discount spread
/// this way never exceeds a line.
///
/// Returns `None` when `total` or a weight is negative, when the weights sum to 0 while `total`
/// is not 0, or on overflow.
pub fn split_proportionally(total: i64, weights: &[i64]) -> Option<Vec<i64>> {
    if total < 0 || weights.iter().any(|w| *w < 0) {
        return None;
    }
    let weight_sum = i128::from(checked_sum(weights.iter().copied())?);
    if total == 0 {
        return Some(vec![0; weights.len()]);
    }
    if weight_sum == 0 {
        return None;
    }
    let total = i128::from(total);
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut allotted: i128 = 0;
    for (index, weight) in weights.iter().enumerate() {
        let product = total * i128::from(*weight);
        let share = product / weight_sum;
        allotted += share;
        shares.push(share);
        remainders.push((product % weight_sum, index));
    }
    // Largest remainder first; on a tie the earlier line wins, so the split is reproducible.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left_over = usize::try_from(total - allotted).ok()?;
    for (_, index) in remainders.iter().take(left_over) {
        shares[*index] += 1;
    }
    shares.into_iter().map(|s| i64::try_from(s).ok()).collect()
}

/// Formats cents as a decimal amount for messages, for example `12345` → `"123.45"`.
///
/// ```
/// assert_eq!(coalition_sdk::money::format_cents(20_000), "200.00");
/// assert_eq!(coalition_sdk::money::format_cents(-5), "-0.05");
/// ```
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_exactly_and_never_exceeds_a_weight() {
        let weights = [333, 333, 334, 1, 0, 9_999];
        for total in [0, 1, 2, 7, 500, 1_000, 11_000] {
            let shares = split_proportionally(total, &weights).expect("valid split");
            assert_eq!(shares.iter().sum::<i64>(), total, "total {total}");
            for (share, weight) in shares.iter().zip(weights) {
                assert!(
                    *share <= weight,
                    "share {share} > weight {weight} for total {total}"
                );
                assert!(*share >= 0);
            }
        }
    }

    #[test]
    fn split_gives_left_over_cents_to_largest_remainders_then_earliest() {
        // 10 over three equal lines: 3.33 each, the spare cent goes to the first line.
        assert_eq!(split_proportionally(10, &[1, 1, 1]), Some(vec![4, 3, 3]));
        // 2 over 1:2: 0.67 and 1.33 → remainders 2/3 and 1/3: first gets the spare cent.
        assert_eq!(split_proportionally(2, &[1, 2]), Some(vec![1, 1]));
    }

    #[test]
    fn split_rejects_bad_input() {
        assert_eq!(split_proportionally(-1, &[1]), None);
        assert_eq!(split_proportionally(1, &[0, 0]), None);
        assert_eq!(split_proportionally(1, &[-1, 2]), None);
        assert_eq!(split_proportionally(0, &[0, 0]), Some(vec![0, 0]));
    }

    #[test]
    fn rounding_is_explicit_for_negative_values_too() {
        assert_eq!(mul_div(-5, 1, 2, Rounding::Up), Some(-2));
        assert_eq!(mul_div(-5, 1, 2, Rounding::HalfUp), Some(-2));
        assert_eq!(mul_div(5, 1, -2, Rounding::Down), Some(-3));
        assert_eq!(mul_div(1, 1, 0, Rounding::Down), None);
    }

    #[test]
    fn basis_points_use_no_intermediate_overflow() {
        // i64::MAX cents × 10 000 bp overflows i64 but not i128; the result fits.
        assert_eq!(
            basis_points_of(i64::MAX, 10_000, Rounding::Down),
            Some(i64::MAX)
        );
        assert_eq!(basis_points_of(i64::MAX, 10_001, Rounding::Down), None);
    }
}
