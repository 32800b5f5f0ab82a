//! "Did you mean" for misspelt keys and names.

use super::validate::PROCESS_KEYS;

/// The hint for an unknown key `key` in the table at `table` (empty for the top level), whose
/// keys are `known`.
pub(super) fn unknown_key_hint(table: &str, key: &str, known: &[&str]) -> String {
    if let Some(candidate) = closest(key, known) {
        return format!("did you mean `{candidate}`?");
    }
    if key.eq_ignore_ascii_case("port") {
        return "berth chooses each instance's port and passes it in the PORT environment \
                variable"
            .to_owned();
    }
    if table.is_empty() && PROCESS_KEYS.contains(&key) {
        return "process settings belong in a [processes.<name>] table, such as [processes.web]"
            .to_owned();
    }
    format!("known keys here: {}", known.join(", "))
}

/// The candidate closest to `input`, if it is close enough to be a likely typo: one edit for
/// short words, two for words of six letters or more. Case is ignored.
pub(super) fn closest<'c>(input: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let input = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|&candidate| (distance(&input, candidate), candidate))
        .filter(|&(d, candidate)| d <= 2 && d * 3 <= candidate.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of neighbours.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("command", "command"), 0);
        assert_eq!(distance("comand", "command"), 1);
        assert_eq!(distance("commnad", "command"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn typos_find_their_key() {
        let keys = ["command", "instances", "workdir", "env", "http", "health"];
        assert_eq!(closest("comand", &keys), Some("command"));
        assert_eq!(closest("Command", &keys), Some("command"));
        assert_eq!(closest("instance", &keys), Some("instances"));
        assert_eq!(closest("htp", &keys), Some("http"));
        assert_eq!(closest("helth", &keys), Some("health"));
        assert_eq!(closest("workdri", &keys), Some("workdir"));
    }

    #[test]
    fn unrelated_words_find_nothing() {
        let keys = ["command", "env", "http"];
        assert_eq!(closest("colour", &keys), None);
        // Two edits on a three-letter key is a different word.
        assert_eq!(closest("ent", &["env"]), Some("env"));
        assert_eq!(closest("eat", &["env"]), None);
        assert_eq!(closest("x", &[]), None);
    }
}
