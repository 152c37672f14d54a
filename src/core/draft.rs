//! Prompt-lookup drafting, pure: the tokens a model is likely to write next, guessed from
//! the text it has already seen. An executor rewriting a function copies most of it from
//! the prompt; when the last few tokens written also occur earlier (in the prompt or the
//! answer so far), what followed them there is a cheap guess at what follows now. The
//! backend verifies a draft in one batch and keeps the prefix the model agrees with, so a
//! wrong guess costs a little time and never changes the text.
//!
//! A smaller model of the same family drafts better than lookup when the answer is new
//! text; it can only do so when both models split text into the same tokens, which
//! [`check_vocabularies`] decides from the two GGUF headers.

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
    /// From the fast tier's model, run greedily in a context of its own.
    Model {
        /// The most tokens one draft proposes.
        max_tokens: usize,
    },
}

/// What must be equal for one model to draft for another: the same token ids must mean
/// the same text, and the same special tokens must begin and end a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vocabulary {
    pub size: u32,
    /// A hash of every token's text, in id order.
    pub texts_digest: u64,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

/// Whether a model whose vocabulary is `draft` can draft for one whose vocabulary is
/// `target`; the reason it cannot, for a message that names both models.
pub fn check_vocabularies(target: &Vocabulary, draft: &Vocabulary) -> Result<(), String> {
    if target.size != draft.size {
        return Err(format!(
            "their vocabularies differ in size ({} and {} tokens)",
            target.size, draft.size
        ));
    }
    if target.texts_digest != draft.texts_digest {
        return Err(format!(
            "their vocabularies have {} tokens each but not the same token texts",
            target.size
        ));
    }
    if (target.bos, target.eos) != (draft.bos, draft.eos) {
        return Err(
            "their vocabularies mark the start and end of a text with different tokens".into(),
        );
    }
    Ok(())
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
    fn only_a_vocabulary_with_the_same_texts_and_special_tokens_can_draft() {
        let target = Vocabulary {
            size: 262_144,
            texts_digest: 7,
            bos: Some(2),
            eos: Some(1),
        };
        assert_eq!(check_vocabularies(&target, &target), Ok(()));
        let smaller = Vocabulary {
            size: 32_000,
            ..target
        };
        assert_eq!(
            check_vocabularies(&target, &smaller).unwrap_err(),
            "their vocabularies differ in size (262144 and 32000 tokens)"
        );
        let other_texts = Vocabulary {
            texts_digest: 8,
            ..target
        };
        assert!(
            check_vocabularies(&target, &other_texts)
                .unwrap_err()
                .contains("not the same token texts")
        );
        let other_end = Vocabulary {
            eos: Some(106),
            ..target
        };
        assert!(
            check_vocabularies(&target, &other_end)
                .unwrap_err()
                .contains("start and end")
        );
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
