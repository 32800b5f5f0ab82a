//! Deterministic weighted status selection.

use http::StatusCode;

/// Smooth weighted round robin (the nginx algorithm): over any window of
/// `sum(weights)` picks each status appears exactly `weight` times, spread out
/// rather than bunched, so tests can assert exact counts without randomness.
#[derive(Debug, Clone)]
pub(crate) struct StatusMix {
    entries: Vec<Entry>,
    total: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    status: StatusCode,
    weight: i64,
    current: i64,
}

impl StatusMix {
    /// # Panics
    /// On a status outside 100-999 or a zero weight: both are mistakes in the
    /// test that configured them, better reported at once.
    pub(crate) fn new(mix: &[(u16, u32)]) -> Self {
        let entries: Vec<Entry> = mix
            .iter()
            .map(|&(code, weight)| {
                let status = StatusCode::from_u16(code)
                    .unwrap_or_else(|_| panic!("status_mix: {code} is not an HTTP status"));
                assert!(weight > 0, "status_mix: weight for {code} must be > 0");
                Entry {
                    status,
                    weight: i64::from(weight),
                    current: 0,
                }
            })
            .collect();
        let total = entries.iter().map(|e| e.weight).sum();
        StatusMix { entries, total }
    }

    /// The next status, or 200 for an empty mix.
    pub(crate) fn next(&mut self) -> StatusCode {
        for entry in &mut self.entries {
            entry.current += entry.weight;
        }
        // First maximum wins ties, so the order follows the order given.
        let best = self
            .entries
            .iter()
            .enumerate()
            .fold(None::<(usize, i64)>, |best, (i, e)| match best {
                Some((_, current)) if current >= e.current => best,
                _ => Some((i, e.current)),
            });
        match best {
            Some((i, _)) => {
                self.entries[i].current -= self.total;
                self.entries[i].status
            }
            None => StatusCode::OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(mix: &[(u16, u32)], n: usize) -> Vec<u16> {
        let mut m = StatusMix::new(mix);
        (0..n).map(|_| m.next().as_u16()).collect()
    }

    #[test]
    fn exact_counts_per_round() {
        let got = picks(&[(200, 90), (500, 10)], 100);
        assert_eq!(got.iter().filter(|&&s| s == 500).count(), 10);
        assert_eq!(got.iter().filter(|&&s| s == 200).count(), 90);
        // Spread out: never two 500s in a row.
        assert!(got.windows(2).all(|w| w != [500, 500]));
    }

    #[test]
    fn smooth_order() {
        assert_eq!(
            picks(&[(200, 2), (503, 1)], 6),
            [200, 503, 200, 200, 503, 200]
        );
        assert_eq!(picks(&[(201, 1), (202, 1)], 4), [201, 202, 201, 202]);
    }

    #[test]
    fn empty_mix_is_ok() {
        assert_eq!(picks(&[], 3), [200, 200, 200]);
    }

    #[test]
    #[should_panic(expected = "not an HTTP status")]
    fn bad_status_panics() {
        StatusMix::new(&[(42, 1)]);
    }
}
