//! Choosing an instance inside a pool.

use rand::Rng;

/// Power of two choices, least outstanding: two distinct random candidates, the one with fewer
/// in-flight requests (ties: either). `candidates` are indices; `load(i)` gives in-flight.
/// One candidate => it; none => None.
///
/// Two random samples avoid both the herding of "global least loaded" (every balancer piles onto
/// the same idle instance) and the blindness of pure random.
pub fn p2c(
    candidates: &[usize],
    load: impl Fn(usize) -> usize,
    rng: &mut impl Rng,
) -> Option<usize> {
    match candidates {
        [] => None,
        [only] => Some(*only),
        _ => {
            let (first, second) = distinct_pair(candidates.len(), rng);
            let (a, b) = (candidates[first], candidates[second]);
            // `first` is already random, so a tie going to it is a random tie-break.
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Two different positions in `0..len`, uniform over ordered pairs; `len` must be at least 2.
fn distinct_pair(len: usize, rng: &mut impl Rng) -> (usize, usize) {
    let first = rng.random_range(0..len);
    // Drawing from one fewer and skipping over `first` avoids a retry loop.
    let second = rng.random_range(0..len - 1);
    (first, if second >= first { second + 1 } else { second })
}

/// Round robin: `candidates[counter % len]`; None if empty.
pub fn round_robin(candidates: &[usize], counter: u64) -> Option<usize> {
    let len = u64::try_from(candidates.len()).ok()?;
    let position = counter.checked_rem(len)?;
    candidates.get(usize::try_from(position).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    #[test]
    fn p2c_trivial_cases() {
        assert_eq!(p2c(&[], |_| 0, &mut rng()), None);
        assert_eq!(p2c(&[7], |_| 100, &mut rng()), Some(7));
    }

    #[test]
    fn p2c_prefers_the_lower_load() {
        let mut rng = rng();
        for _ in 0..1000 {
            assert_eq!(
                p2c(&[3, 8], |i| if i == 3 { 5 } else { 2 }, &mut rng),
                Some(8)
            );
            assert_eq!(
                p2c(&[3, 8], |i| if i == 3 { 0 } else { 1 }, &mut rng),
                Some(3)
            );
        }
    }

    #[test]
    fn p2c_never_picks_the_most_loaded() {
        // With three candidates the busiest loses whichever pair is drawn.
        let loads = [4, 9, 1];
        let mut rng = rng();
        for _ in 0..1000 {
            assert_ne!(p2c(&[0, 1, 2], |i| loads[i], &mut rng), Some(1));
        }
    }

    #[test]
    fn p2c_compares_two_distinct_candidates() {
        let mut rng = rng();
        let candidates: Vec<usize> = (10..15).collect();
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let asked = RefCell::new(Vec::new());
            let chosen = p2c(
                &candidates,
                |i| {
                    asked.borrow_mut().push(i);
                    0
                },
                &mut rng,
            )
            .unwrap();
            let asked = asked.into_inner();
            assert_eq!(asked.len(), 2);
            assert_ne!(asked[0], asked[1]);
            assert!(asked.contains(&chosen));
            for i in asked {
                seen[i - 10] = true;
            }
        }
        assert_eq!(seen, [true; 5], "every candidate gets sampled");
    }

    #[test]
    fn p2c_ties_go_either_way() {
        let mut rng = rng();
        let mut wins = [0; 2];
        for _ in 0..1000 {
            wins[p2c(&[0, 1], |_| 3, &mut rng).unwrap()] += 1;
        }
        assert!(wins.iter().all(|&w| w > 400), "{wins:?}");
    }

    #[test]
    fn round_robin_cycles() {
        assert_eq!(round_robin(&[], 5), None);
        let picks: Vec<_> = (0..6)
            .map(|n| round_robin(&[4, 5, 6], n).unwrap())
            .collect();
        assert_eq!(picks, [4, 5, 6, 4, 5, 6]);
        assert_eq!(round_robin(&[4, 5, 6], u64::MAX), Some(4));
    }
}
