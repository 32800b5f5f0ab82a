//! Sticky cohorts: a user keeps a cohort number in a cookie, and the number decides the release.

use rand::Rng;

/// Number of cohorts; also the granularity of a sticky split (0.01 %).
pub const COHORTS: u32 = 10_000;

/// Longest cookie value worth parsing: `COHORTS - 1` has four digits, one more tolerates a
/// leading zero, and anything longer is rejected without scanning it.
const MAX_COHORT_DIGITS: usize = 5;

/// Sticky cohorts: a user's cohort number (0..COHORTS, kept in a cookie) maps to a pool by
/// cumulative weight in pool order, so raising the first pool's weight only moves users towards
/// it. Ineligible or zero-weight pools are skipped by renormalising over the eligible ones.
/// None when no pool is eligible.
///
/// A cohort out of range (which [`parse_cohort`] never returns) is taken modulo [`COHORTS`].
pub fn cohort_pool(
    cohort: u32,
    weights: &[u32],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    // Collected once so `eligible` is asked once per pool and the walk sees the same set as the
    // total.
    let eligible_weights: Vec<(usize, u64)> = weights
        .iter()
        .enumerate()
        .filter(|&(i, &w)| w > 0 && eligible(i))
        .map(|(i, &w)| (i, u64::from(w)))
        .collect();
    // Overflowing u64 would take 2^32 pools of maximal weight; saturating keeps even that sane.
    let total = eligible_weights
        .iter()
        .fold(0_u64, |sum, &(_, w)| sum.saturating_add(w));
    if total == 0 {
        return None;
    }
    // Pools up to the one with cumulative weight `cum` hold the cohorts with
    // `cohort × total < cum × COHORTS` (flooring `point` does not change that), so every pool
    // whose share is a multiple of 1/COHORTS gets exactly that share of the cohorts.
    let point = u128::from(cohort % COHORTS) * u128::from(total) / u128::from(COHORTS);
    let mut cumulative: u128 = 0;
    eligible_weights.iter().find_map(|&(i, w)| {
        cumulative += u128::from(w);
        (point < cumulative).then_some(i)
    })
}

/// Parse a cohort cookie value (decimal 0..COHORTS); None for anything else (bad input from
/// clients must never panic).
pub fn parse_cohort(value: &str) -> Option<u32> {
    // `u32::from_str` also accepts a leading `+`; a cookie we wrote never has one.
    let well_formed = !value.is_empty()
        && value.len() <= MAX_COHORT_DIGITS
        && value.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return None;
    }
    value.parse::<u32>().ok().filter(|&c| c < COHORTS)
}

/// A cohort for a user who has none yet, uniform over 0..COHORTS.
pub fn random_cohort(rng: &mut impl Rng) -> u32 {
    rng.random_range(0..COHORTS)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn all(_: usize) -> bool {
        true
    }

    fn cohorts_per_pool(weights: &[u32], eligible: impl Fn(usize) -> bool) -> Vec<u32> {
        let mut counts = vec![0; weights.len()];
        for cohort in 0..COHORTS {
            counts[cohort_pool(cohort, weights, &eligible).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn proportions_are_exact_over_all_cohorts() {
        assert_eq!(cohorts_per_pool(&[90, 10], all), [9000, 1000]);
        assert_eq!(cohorts_per_pool(&[10, 90], all), [1000, 9000]);
        assert_eq!(cohorts_per_pool(&[5, 3, 2], all), [5000, 3000, 2000]);
        assert_eq!(cohorts_per_pool(&[1, 9999], all), [1, 9999]);
        assert_eq!(cohorts_per_pool(&[1_000_000, 3_000_000], all), [2500, 7500]);
        // Not a multiple of 0.01 %: off by at most one cohort per pool.
        assert_eq!(cohorts_per_pool(&[1, 1, 1], all), [3334, 3333, 3333]);
    }

    #[test]
    fn pools_are_contiguous_in_pool_order() {
        // The newest release (listed first) gets the lowest cohorts.
        assert_eq!(cohort_pool(0, &[10, 90], all), Some(0));
        assert_eq!(cohort_pool(999, &[10, 90], all), Some(0));
        assert_eq!(cohort_pool(1000, &[10, 90], all), Some(1));
        assert_eq!(cohort_pool(COHORTS - 1, &[10, 90], all), Some(1));
    }

    #[test]
    fn raising_the_first_weight_only_moves_users_towards_it() {
        for cohort in 0..COHORTS {
            let before = cohort_pool(cohort, &[10, 90], all).unwrap();
            let after = cohort_pool(cohort, &[50, 90], all).unwrap();
            assert!(
                after <= before,
                "cohort {cohort} moved from {before} to {after}"
            );
        }
        for (low, high) in [(1, 2), (10, 50), (50, 90), (90, 100)] {
            for cohort in 0..COHORTS {
                let before = cohort_pool(cohort, &[low, 100 - low], all).unwrap();
                let after = cohort_pool(cohort, &[high, 100 - high], all).unwrap();
                assert!(
                    after <= before,
                    "cohort {cohort} moved from {before} to {after}"
                );
            }
        }
    }

    #[test]
    fn ineligible_and_zero_weight_pools_are_skipped() {
        assert_eq!(cohorts_per_pool(&[5, 3, 2], |i| i != 1), [7143, 0, 2857]);
        assert_eq!(cohorts_per_pool(&[0, 3, 1], all), [0, 7500, 2500]);
        assert_eq!(cohorts_per_pool(&[50, 50], |i| i == 1), [0, 10_000]);
    }

    #[test]
    fn no_eligible_pool() {
        assert_eq!(cohort_pool(5, &[], all), None);
        assert_eq!(cohort_pool(5, &[0, 0], all), None);
        assert_eq!(cohort_pool(5, &[1, 2], |_| false), None);
        assert_eq!(cohort_pool(5, &[0, 2], |i| i == 0), None);
    }

    #[test]
    fn out_of_range_cohort_and_huge_weights_do_not_panic() {
        assert_eq!(
            cohort_pool(u32::MAX, &[1, 1], all),
            cohort_pool(u32::MAX % COHORTS, &[1, 1], all)
        );
        let weights = vec![u32::MAX; 1000];
        assert_eq!(cohort_pool(0, &weights, all), Some(0));
        assert_eq!(cohort_pool(COHORTS - 1, &weights, all), Some(999));
    }

    #[test]
    fn parses_valid_cohorts() {
        assert_eq!(parse_cohort("0"), Some(0));
        assert_eq!(parse_cohort("42"), Some(42));
        assert_eq!(parse_cohort("9999"), Some(9999));
        assert_eq!(parse_cohort("0042"), Some(42));
    }

    #[test]
    fn rejects_anything_else() {
        let long = "1".repeat(10_000);
        for bad in [
            "",
            "-1",
            "+1",
            "10000",
            "99999",
            "4294967296",
            "abc",
            "1e3",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "٣",
            &long,
        ] {
            assert_eq!(parse_cohort(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_cohorts_are_in_range_and_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let cohort = random_cohort(&mut rng);
            assert!(cohort < COHORTS);
            assert_eq!(parse_cohort(&cohort.to_string()), Some(cohort));
        }
    }
}
