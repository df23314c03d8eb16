//! "did you mean ...?" hints for misspelt policy fields.

/// From a serde message such as ``unknown field `envv`, expected one of `name`, `env` ``
/// (the expected names may come without backticks), suggests the closest expected
/// field, if one is close enough to be a typo.
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split_once("unknown field `")?.1;
    let (unknown, rest) = rest.split_once('`')?;
    let list = rest
        .split_once("expected one of ")
        .or_else(|| rest.split_once("expected "))?
        .1;
    let expected: Vec<&str> = list
        .split(", ")
        .map(|name| name.trim().trim_matches('`'))
        .collect();
    closest(unknown, &expected).map(|best| format!("did you mean `{best}`?"))
}

/// Longest word compared (edit distance costs the product of the lengths, and a
/// hint for a very long name would not help anyway).
const MAX_WORD: usize = 64;
/// Most candidates compared.
const MAX_CANDIDATES: usize = 1_024;

/// The candidate closest to `word`, if it is close enough to be a typo of it.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.len() > MAX_WORD {
        return None;
    }
    let (best, distance) = candidates
        .iter()
        .take(MAX_CANDIDATES)
        .filter(|c| c.len() <= MAX_WORD)
        .map(|c| (*c, edit_distance(word, c)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 2 || best.starts_with(word) || word.starts_with(best)).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_the_nearest_field() {
        let msg = "categories[0]: unknown field `envv`, expected one of `name`, `description`, `env`, `paths`";
        assert_eq!(did_you_mean(msg).as_deref(), Some("did you mean `env`?"));
        let msg = "unknown field `path_prefix`, expected one of `paths`, `path_prefixes`";
        assert_eq!(
            did_you_mean(msg).as_deref(),
            Some("did you mean `path_prefixes`?")
        );
        assert_eq!(
            did_you_mean("unknown field `zzzzzzzz`, expected one of `name`, `env`"),
            None
        );
        assert_eq!(did_you_mean("invalid type: string"), None);
    }
}
