//! Prompt-lookup drafting, pure: the tokens a model is likely to write next, guessed from
//! the text it has already seen. An executor rewriting a function copies most of it from
//! the prompt; when the last few tokens written also occur earlier (in the prompt or the
//! answer so far), what followed them there is a cheap guess at what follows now. The
//! backend verifies a draft in one batch and keeps the prefix the model agrees with, so a
//! wrong guess costs a little time and never changes the text.

/// How drafts are made for a tier's generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftMode {
    Off,
    /// From the prompt and the answer so far.
    Lookup {
        /// The most tokens one draft proposes.
        max_tokens: usize,
        /// The fewest trailing tokens that must match earlier text to draft at all.
        min_match: usize,
    },
}

/// The defaults of `tiers.<tier>.draft_max` and `draft_min_match`.
pub const DEFAULT_DRAFT_TOKENS: usize = 8;
pub const DEFAULT_DRAFT_MATCH: usize = 2;

/// The longest n-gram looked for: longer matches are rarer and add little certainty.
pub const MAX_MATCH: usize = 6;
/// How far back a match is looked for: the search costs this many comparisons per length
/// per token at most, whatever the context.
pub const MAX_LOOKBACK: usize = 8192;

/// What followed the most recent earlier occurrence of the longest suffix of `history`
/// (at least `min_match` and at most [`MAX_MATCH`] tokens long) that occurs earlier, at most
/// `max_tokens` of it; empty when nothing matches.
pub fn lookup_draft<T: PartialEq>(history: &[T], min_match: usize, max_tokens: usize) -> &[T] {
    let min_match = min_match.max(1);
    if max_tokens == 0 || history.len() <= min_match {
        return &[];
    }
    let longest = MAX_MATCH.max(min_match).min(history.len() - 1);
    for n in (min_match..=longest).rev() {
        let suffix = &history[history.len() - n..];
        // The most recent earlier occurrence: nearby text is the likeliest to repeat. An
        // occurrence must be followed by at least one token to propose.
        let earliest = history.len().saturating_sub(MAX_LOOKBACK);
        let found = (earliest..history.len() - n)
            .rev()
            .find(|&start| &history[start..start + n] == suffix);
        if let Some(start) = found {
            let from = start + n;
            let to = (from + max_tokens).min(history.len());
            return &history[from..to];
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(history: &str, min_match: usize, max_tokens: usize, expected: &str) {
        let tokens: Vec<char> = history.chars().collect();
        let draft: String = lookup_draft(&tokens, min_match, max_tokens)
            .iter()
            .collect();
        assert_eq!(draft, expected, "{history:?}");
    }

    #[test]
    fn drafts_what_followed_the_longest_recent_match() {
        // "ab" occurred at the start, followed by "cdef".
        check("abcdef ab", 2, 8, "cdef ab");
        check("abcdef ab", 2, 3, "cde");
        // The most recent occurrence wins: "ab" then "Z" is newer than "ab" then "c".
        check("abc abZ ab", 2, 2, "Z ");
        // A longer match is preferred to a more recent shorter one.
        check("xabQ abR xab", 2, 1, "Q");
        // Too short a match: nothing.
        check("abcdef xb", 2, 8, "");
        check("abcdef xb", 1, 8, "cdef xb");
        // Nothing to look up, or no room.
        check("", 2, 8, "");
        check("ab", 2, 8, "");
        check("abcab", 2, 0, "");
        // A match right before the end proposes the one token that follows it.
        check("aaa", 2, 4, "a");
    }
}
