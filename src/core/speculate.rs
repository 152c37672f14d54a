//! The greedy decoding loop with speculative decoding, pure: it knows tokens, a decoder that
//! can decode a batch, choose greedily at a position of it and forget the cache's tail, a
//! drafter, and a writer that says when the answer ends. The embedded backend runs it on
//! llama.cpp; the tests run it on exact fake decoders, where the answer with any drafter
//! must be the answer without one, token for token.
//!
//! Each step writes the token chosen last, then asks for a draft of what follows and
//! decodes the token and the draft in one batch. The choices at the draft's positions are
//! taken while they agree with it; the first that differs is written next, and the cache is
//! cut back to the last agreed token. Without a draft a step is one decode of one token.

use super::generation::StopReason;

/// A model's KV cache and logits, as the loop drives them.
pub trait Decoder {
    type Token: Copy + PartialEq;
    type Error;

    /// Tokens in the cache.
    fn cached(&self) -> usize;

    /// Decodes `tokens` at the end of the cache, with logits for every one of them when
    /// `all_logits`, else for the last.
    fn decode(&mut self, tokens: &[Self::Token], all_logits: bool) -> Result<(), Self::Error>;

    /// The greedy choice at position `index` of the last decode (-1: its last position).
    /// A decoder with a grammar chooses what it allows and accepts the choice.
    fn choose(&mut self, index: i32) -> Self::Token;

    /// Forgets every cached token from position `keep` on.
    fn truncate(&mut self, keep: usize) -> Result<(), Self::Error>;
}

/// The bounds of one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_tokens: u32,
    /// The context's length: the cache never holds more.
    pub n_ctx: usize,
}

/// What the loop did, for the answer's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tokens written (an end-of-generation token is not one).
    pub generated: u32,
    pub drafted: u32,
    pub accepted: u32,
}

/// The callers' parts of the loop.
pub trait Steps<T> {
    /// Why the answer must end now (cancelled, out of time), checked before every decode.
    fn interrupted(&mut self) -> Option<StopReason>;

    /// Up to `limit` tokens guessed to follow `history` (the prompt and the answer so far);
    /// empty for none.
    fn draft(&mut self, history: &[T], limit: usize) -> Vec<T>;

    /// Writes one chosen token; the reason the answer ends with it, if it does. An
    /// `EndOfGeneration` token is not counted as written.
    fn write(&mut self, token: T) -> Option<StopReason>;
}

/// Runs the loop after the prompt (`history`) has been decoded, its last logits at the last
/// decode's last position; returns why the answer ended and what was counted.
pub fn decode_greedily<D: Decoder>(
    decoder: &mut D,
    mut history: Vec<D::Token>,
    limits: Limits,
    steps: &mut impl Steps<D::Token>,
) -> Result<(StopReason, Counts), D::Error> {
    let mut counts = Counts::default();
    // Where the next token's logits are in the last decode.
    let mut logits_index = -1;
    // A token verification already chose, to be written next.
    let mut chosen: Option<D::Token> = None;
    let stop = 'answer: loop {
        if let Some(stop) = steps.interrupted() {
            break stop;
        }
        if counts.generated >= limits.max_tokens || decoder.cached() >= limits.n_ctx {
            break StopReason::MaxTokens;
        }
        let token = match chosen.take() {
            Some(token) => token,
            None => decoder.choose(logits_index),
        };
        if let Some(stop) = write_counted(steps, &mut counts, token) {
            break stop;
        }
        history.push(token);
        // Room for a draft: the tokens still allowed, and the context after `token`.
        let room = (limits.max_tokens - counts.generated) as usize;
        let context_room = limits.n_ctx.saturating_sub(decoder.cached() + 1);
        let draft = steps.draft(&history, room.min(context_room));
        let draft = &draft[..draft.len().min(room.min(context_room))];
        if let Some(stop) = steps.interrupted() {
            break stop;
        }
        if draft.is_empty() {
            decoder.decode(&[token], false)?;
            logits_index = -1;
            continue;
        }
        let start = decoder.cached();
        let mut batch = Vec::with_capacity(draft.len() + 1);
        batch.push(token);
        batch.extend_from_slice(draft);
        decoder.decode(&batch, true)?;
        counts.drafted += draft.len() as u32;
        let mut agreed = 0;
        for (index, &drafted) in draft.iter().enumerate() {
            let choice = decoder.choose(index as i32);
            if choice != drafted {
                chosen = Some(choice);
                break;
            }
            agreed += 1;
            counts.accepted += 1;
            if let Some(stop) = steps.interrupted() {
                break 'answer stop;
            }
            if counts.generated >= limits.max_tokens {
                break 'answer StopReason::MaxTokens;
            }
            if let Some(stop) = write_counted(steps, &mut counts, drafted) {
                break 'answer stop;
            }
            history.push(drafted);
        }
        if agreed == draft.len() {
            // All agreed: the last position's logits choose the next token.
            logits_index = draft.len() as i32;
            continue;
        }
        // Forget the rejected tail; `chosen` is written next.
        decoder.truncate(start + 1 + agreed)?;
    };
    Ok((stop, counts))
}

fn write_counted<T>(
    steps: &mut impl Steps<T>,
    counts: &mut Counts,
    token: T,
) -> Option<StopReason> {
    let stop = steps.write(token);
    if stop != Some(StopReason::EndOfGeneration) {
        counts.generated += 1;
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::draft::lookup_draft;

    const VOCABULARY: u32 = 23;
    /// The exact model's end-of-generation token.
    const END: u32 = 0;

    /// An exact model: the next token is a fixed function of the two before it, so a batch
    /// and one-by-one decoding choose alike (what rounding keeps a real model from).
    fn next(prefix: &[u32]) -> u32 {
        let last = prefix[prefix.len() - 1];
        let before = prefix.len().checked_sub(2).map_or(5, |i| prefix[i]);
        (last * 7 + before * 3 + 1) % VOCABULARY
    }

    #[derive(Default)]
    struct Exact {
        cached: Vec<u32>,
        batch_start: usize,
        batch_len: usize,
        decodes: u32,
    }

    impl Decoder for Exact {
        type Token = u32;
        type Error = String;

        fn cached(&self) -> usize {
            self.cached.len()
        }

        fn decode(&mut self, tokens: &[u32], _all_logits: bool) -> Result<(), String> {
            self.batch_start = self.cached.len();
            self.batch_len = tokens.len();
            self.cached.extend_from_slice(tokens);
            self.decodes += 1;
            Ok(())
        }

        fn choose(&mut self, index: i32) -> u32 {
            let at = match index {
                -1 => self.batch_start + self.batch_len - 1,
                index => self.batch_start + index as usize,
            };
            next(&self.cached[..=at])
        }

        fn truncate(&mut self, keep: usize) -> Result<(), String> {
            self.cached.truncate(keep);
            Ok(())
        }
    }

    type Drafter = fn(&[u32], usize) -> Vec<u32>;

    struct Recorder {
        written: Vec<u32>,
        draft: Drafter,
        /// A token that ends the answer as a stop sequence would.
        stop_at: Option<u32>,
        /// Interrupted (cancelled) once this many tokens are written.
        interrupt_after: Option<usize>,
        /// Decodes done when the interruption was first seen.
        decodes_when_interrupted: Option<u32>,
        decodes: std::rc::Rc<std::cell::Cell<u32>>,
    }

    impl Steps<u32> for Recorder {
        fn interrupted(&mut self) -> Option<StopReason> {
            let stop = self
                .interrupt_after
                .is_some_and(|after| self.written.len() >= after)
                .then_some(StopReason::Cancelled);
            if stop.is_some() && self.decodes_when_interrupted.is_none() {
                self.decodes_when_interrupted = Some(self.decodes.get());
            }
            stop
        }

        fn draft(&mut self, history: &[u32], limit: usize) -> Vec<u32> {
            (self.draft)(history, limit)
        }

        fn write(&mut self, token: u32) -> Option<StopReason> {
            if token == END {
                return Some(StopReason::EndOfGeneration);
            }
            self.written.push(token);
            (Some(token) == self.stop_at).then_some(StopReason::StopSequence)
        }
    }

    /// The exact continuation, past the end of generation too.
    fn oracle(history: &[u32], limit: usize) -> Vec<u32> {
        let mut extended = history.to_vec();
        for _ in 0..limit {
            extended.push(next(&extended));
        }
        extended[history.len()..].to_vec()
    }

    /// The exact continuation up to the end of generation, as a draft model drafts.
    fn until_the_end(history: &[u32], limit: usize) -> Vec<u32> {
        oracle(history, limit)
            .into_iter()
            .take_while(|&token| token != END)
            .collect()
    }

    const DRAFTERS: [(&str, Drafter); 7] = [
        ("lookup", |history, limit| {
            lookup_draft(history, 2, limit.min(8)).to_vec()
        }),
        ("oracle", oracle),
        ("until the end", until_the_end),
        ("every third wrong", |history, limit| {
            let mut draft = oracle(history, limit.min(6));
            for token in draft.iter_mut().skip(2).step_by(3) {
                *token = (*token + 1) % VOCABULARY;
            }
            draft
        }),
        ("always wrong", |history, limit| {
            oracle(history, limit.min(4))
                .into_iter()
                .map(|token| (token + 1) % VOCABULARY)
                .collect()
        }),
        ("past the end", |_, limit| vec![END; limit.min(3)]),
        // A drafter that ignores its limit is cut to it.
        ("too long", |history, limit| oracle(history, limit + 5)),
    ];

    struct Run {
        written: Vec<u32>,
        stop: StopReason,
        counts: Counts,
        decoder: Exact,
        recorder: Recorder,
    }

    fn run(
        prompt: &[u32],
        limits: Limits,
        draft: Drafter,
        stop_at: Option<u32>,
        interrupt_after: Option<usize>,
    ) -> Run {
        let mut decoder = Exact::default();
        decoder.decode(prompt, false).unwrap();
        let decodes = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut recorder = Recorder {
            written: Vec::new(),
            draft,
            stop_at,
            interrupt_after,
            decodes_when_interrupted: None,
            decodes: decodes.clone(),
        };
        // The recorder sees the decoder's count through a shared cell, updated per step.
        struct Counting<'a>(&'a mut Exact, std::rc::Rc<std::cell::Cell<u32>>);
        impl Decoder for Counting<'_> {
            type Token = u32;
            type Error = String;
            fn cached(&self) -> usize {
                self.0.cached()
            }
            fn decode(&mut self, tokens: &[u32], all: bool) -> Result<(), String> {
                self.0.decode(tokens, all)?;
                self.1.set(self.0.decodes);
                Ok(())
            }
            fn choose(&mut self, index: i32) -> u32 {
                self.0.choose(index)
            }
            fn truncate(&mut self, keep: usize) -> Result<(), String> {
                self.0.truncate(keep)
            }
        }
        decodes.set(decoder.decodes);
        let (stop, counts) = decode_greedily(
            &mut Counting(&mut decoder, decodes),
            prompt.to_vec(),
            limits,
            &mut recorder,
        )
        .unwrap();
        Run {
            written: recorder.written.clone(),
            stop,
            counts,
            decoder,
            recorder,
        }
    }

    /// A few hundred prompts, limits and stops: every drafter gives the answer of none, token
    /// for token, with the same stop reason; the cache holds a prefix of the prompt and the
    /// answer and never more than the context; the limits hold.
    #[test]
    fn every_drafter_gives_the_answer_of_none() {
        let mut seed = 12345u32;
        let mut random = |below: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) % below
        };
        let mut accepted_somewhere = 0;
        for _ in 0..300 {
            let prompt: Vec<u32> = (0..1 + random(6))
                .map(|_| 1 + random(VOCABULARY - 1))
                .collect();
            let n_ctx = prompt.len() + 1 + [0, 3, 200][random(3) as usize];
            let limits = Limits {
                max_tokens: [0, 1, 3, 40, 120][random(5) as usize],
                n_ctx,
            };
            let stop_at = (random(3) == 0).then(|| 1 + random(VOCABULARY - 1));
            let plain = run(&prompt, limits, |_, _| Vec::new(), stop_at, None);
            assert_eq!(plain.counts.drafted, 0);
            for (name, drafter) in DRAFTERS {
                let drafted = run(&prompt, limits, drafter, stop_at, None);
                let case = format!("{name}: prompt {prompt:?}, {limits:?}, stop at {stop_at:?}");
                assert_eq!(
                    (&drafted.written, drafted.stop),
                    (&plain.written, plain.stop),
                    "{case}"
                );
                assert_eq!(drafted.counts.generated, plain.counts.generated, "{case}");
                assert!(drafted.counts.generated <= limits.max_tokens, "{case}");
                assert!(drafted.counts.accepted <= drafted.counts.drafted, "{case}");
                let answer: Vec<u32> = prompt.iter().chain(&drafted.written).copied().collect();
                let cached = &drafted.decoder.cached;
                assert!(cached.len() <= n_ctx, "{case}: {} cached", cached.len());
                assert!(
                    answer.starts_with(cached) || cached.starts_with(&answer),
                    "{case}: cache {cached:?} is not the answer {answer:?}"
                );
                accepted_somewhere += drafted.counts.accepted;
            }
        }
        assert!(accepted_somewhere > 1000, "{accepted_somewhere}");
    }

    /// Drafts that are right save decodes: the point of it all.
    #[test]
    fn right_drafts_save_decodes() {
        let limits = Limits {
            max_tokens: 200,
            n_ctx: 1000,
        };
        let plain = run(&[3, 4], limits, |_, _| Vec::new(), None, None);
        let oracle = run(
            &[3, 4],
            limits,
            |history, limit| until_the_end(history, limit.min(8)),
            None,
            None,
        );
        assert_eq!(oracle.written, plain.written);
        assert_eq!(oracle.counts.accepted, oracle.counts.drafted);
        assert!(plain.counts.generated > 20, "{:?}", plain.counts);
        // One decode per 9 tokens instead of one per token (the prompt decode included).
        assert_eq!(plain.decoder.decodes, 1 + plain.counts.generated);
        assert!(
            oracle.decoder.decodes <= 1 + plain.counts.generated.div_ceil(9),
            "{} decodes",
            oracle.decoder.decodes
        );
    }

    /// Cancelling is checked before every decode, a draft batch's included: nothing is
    /// decoded once it is seen, whichever drafter runs and wherever the answer is.
    #[test]
    fn nothing_is_decoded_after_an_interruption_is_seen() {
        let limits = Limits {
            max_tokens: 200,
            n_ctx: 1000,
        };
        for (name, drafter) in DRAFTERS {
            for after in [0, 1, 5, 13, 40] {
                let run = run(&[3, 4], limits, drafter, None, Some(after));
                let case = format!("{name}, interrupted after {after}");
                assert_eq!(run.stop, StopReason::Cancelled, "{case}");
                assert_eq!(run.written.len(), after, "{case}");
                assert_eq!(
                    Some(run.decoder.decodes),
                    run.recorder.decodes_when_interrupted,
                    "{case}"
                );
            }
        }
    }
}
