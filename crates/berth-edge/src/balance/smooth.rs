//! Smooth weighted round robin (nginx's algorithm) for splitting traffic between release pools.

/// Smooth weighted round robin over release pools: exact over any window of `sum(weights)`
/// consecutive picks, and interleaved (90/10 gives 9 stable then 1 canary spread out, not 90
/// then 10).
///
/// Each entry carries a running credit. A pick adds every eligible entry's weight to its credit,
/// takes the entry with the most credit and charges it the eligible total. Ineligible entries
/// keep their credit frozen, as nginx does: the others' sequence is untouched when the same
/// entries are skipped every time, a pick with a single eligible entry is a no-op (so a retry
/// that excludes one of two pools does not shift the split), and nobody is starved or favoured
/// in the long run when eligibility flaps. After the eligible set changes, windows are off by a
/// pick or so until the split converges back to exact (about two periods in simulation).
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    weights: Vec<i64>,
    credit: Vec<i64>,
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.iter().map(|&w| i64::from(w)).collect(),
            credit: vec![0; weights.len()],
        }
    }

    /// Number of entries, eligible or not.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks among entries with weight > 0 for which `eligible(i)` is true; None when none is.
    /// `eligible` is called at most once per entry.
    pub fn pick(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (&weight, credit)) in self.weights.iter().zip(self.credit.iter_mut()).enumerate() {
            if weight == 0 || !eligible(i) {
                continue;
            }
            // Credits stay around the total weight (at most 10^6 × 1000 here, even with random
            // flapping in simulation), far from i64's range; saturating only guards the absurd.
            *credit = credit.saturating_add(weight);
            total = total.saturating_add(weight);
            // Strictly greater: ties go to the earlier entry, as in nginx.
            if best.is_none_or(|(_, top)| *credit > top) {
                best = Some((i, *credit));
            }
        }
        let (chosen, _) = best?;
        self.credit[chosen] = self.credit[chosen].saturating_sub(total);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(weights: &[u32], n: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut sw = SmoothWeighted::new(weights);
        (0..n).map(|_| sw.pick(&eligible).unwrap()).collect()
    }

    /// Every window of `sum(weights of eligible)` consecutive picks holds each entry exactly
    /// `weight` times.
    fn assert_windows_exact(seq: &[usize], weights: &[u32], eligible: impl Fn(usize) -> bool) {
        let expected: Vec<usize> = (0..weights.len())
            .map(|i| if eligible(i) { weights[i] as usize } else { 0 })
            .collect();
        let period: usize = expected.iter().sum();
        for (start, window) in seq.windows(period).enumerate() {
            let mut counts = vec![0; weights.len()];
            for &p in window {
                counts[p] += 1;
            }
            assert_eq!(counts, expected, "window starting at {start}");
        }
    }

    fn longest_run_of(seq: &[usize], entry: usize) -> usize {
        seq.split(|&p| p != entry)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn ninety_ten_is_exact_over_every_window() {
        let seq = picks(&[90, 10], 1000, |_| true);
        assert_windows_exact(&seq, &[90, 10], |_| true);
    }

    #[test]
    fn ninety_ten_is_maximally_interleaved() {
        let seq = picks(&[90, 10], 1000, |_| true);
        assert_eq!(longest_run_of(&seq, 1), 1);
        // Stable's runs between two canary picks are 9, never the 90 of naive round robin.
        assert!(longest_run_of(&seq, 0) <= 9, "{seq:?}");
    }

    #[test]
    fn other_splits_are_exact() {
        for weights in [&[1, 1, 1][..], &[5, 3, 2], &[1, 2, 3, 4], &[7]] {
            let seq = picks(weights, 500, |_| true);
            assert_windows_exact(&seq, weights, |_| true);
        }
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(picks(&[1, 1, 1], 6, |_| true), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let seq = picks(&[0, 100], 300, |_| true);
        assert!(seq.iter().all(|&p| p == 1));
    }

    #[test]
    fn nothing_to_pick() {
        assert_eq!(SmoothWeighted::new(&[0, 0]).pick(|_| true), None);
        assert_eq!(SmoothWeighted::new(&[]).pick(|_| true), None);
        assert_eq!(SmoothWeighted::new(&[3, 4]).pick(|_| false), None);
        assert_eq!(SmoothWeighted::new(&[0, 4]).pick(|i| i == 0), None);
    }

    #[test]
    fn skipped_entry_leaves_the_others_exact() {
        let eligible = |i| i != 1;
        let seq = picks(&[5, 3, 2], 700, eligible);
        assert!(!seq.contains(&1));
        assert_windows_exact(&seq, &[5, 3, 2], eligible);
    }

    #[test]
    fn single_eligible_pick_does_not_shift_the_split() {
        // A retry that excludes the canary must not change what later requests get.
        let undisturbed = picks(&[90, 10], 300, |_| true);
        let mut sw = SmoothWeighted::new(&[90, 10]);
        let mut normal = Vec::new();
        for n in 0..300 {
            normal.push(sw.pick(|_| true).unwrap());
            if n % 7 == 0 {
                assert_eq!(sw.pick(|i| i == 0), Some(0));
            }
        }
        assert_eq!(normal, undisturbed);
    }

    #[test]
    fn converges_back_to_exact_after_flapping() {
        let weights = [5, 3, 2, 7];
        let mut sw = SmoothWeighted::new(&weights);
        for n in 0..200_usize {
            let down = n % 4;
            let _ = sw.pick(|i| i != down && (n / 3) % 2 == 0 || i == (n / 5) % 4);
        }
        let period: usize = 17;
        let seq: Vec<usize> = (0..10 * period)
            .map(|_| sw.pick(|_| true).unwrap())
            .collect();
        assert_windows_exact(&seq[3 * period..], &weights, |_| true);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let weights = vec![1_000_000; 1000];
        let mut seq = picks(&weights, 1000, |_| true);
        seq.sort_unstable();
        assert_eq!(seq, (0..1000).collect::<Vec<_>>());

        let mut sw = SmoothWeighted::new(&[u32::MAX, u32::MAX, 1]);
        for n in 0..10_000_usize {
            assert!(sw.pick(|i| n % 3 != i).is_some());
        }
    }
}
