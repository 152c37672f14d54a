//! Token healing: a prompt that ends inside a word ends inside a token (`apply_disc` is
//! tokenized `apply`, `_`, `disc`, and `discount` is one token the model never sees begun).
//! The prompt is backed up to the previous token boundary and the answer is made to start
//! with the text taken off: the first tokens must agree with it, byte for byte. Pure: the
//! backend gives the vocabulary's token texts and the prompt's last tokens.

/// At most this many tokens come off the prompt's end (a character split over byte tokens
/// takes up to four).
const MAX_REMOVED_TOKENS: usize = 4;

/// Every token's text, sorted, to find the tokens that agree with a text quickly.
#[derive(Debug, Default)]
pub struct PieceTable {
    sorted: Vec<(Box<[u8]>, i32)>,
}

impl PieceTable {
    /// From `(token, text)` pairs; tokens without text (control tokens) are left out, as no
    /// answer may start with them.
    pub fn new(pieces: impl IntoIterator<Item = (i32, Vec<u8>)>) -> Self {
        let mut sorted: Vec<(Box<[u8]>, i32)> = pieces
            .into_iter()
            .filter(|(_, piece)| !piece.is_empty())
            .map(|(token, piece)| (piece.into_boxed_slice(), token))
            .collect();
        sorted.sort_unstable();
        PieceTable { sorted }
    }

    /// The tokens whose text agrees with `remaining`: it starts with `remaining`, or is a
    /// part of its start (the answer then goes on with the rest).
    pub fn agreeing(&self, remaining: &[u8]) -> Vec<i32> {
        if remaining.is_empty() {
            return Vec::new();
        }
        let start = self
            .sorted
            .partition_point(|(piece, _)| &**piece < remaining);
        let mut tokens: Vec<i32> = self.sorted[start..]
            .iter()
            .take_while(|(piece, _)| piece.starts_with(remaining))
            .map(|&(_, token)| token)
            .collect();
        // Shorter texts that `remaining` starts with: one lookup per length.
        for end in 1..remaining.len() {
            let prefix = &remaining[..end];
            let at = self.sorted.partition_point(|(piece, _)| &**piece < prefix);
            tokens.extend(
                self.sorted[at..]
                    .iter()
                    .take_while(|(piece, _)| &**piece == prefix)
                    .map(|&(_, token)| token),
            );
        }
        tokens
    }

    /// Whether some token's text starts with `text`.
    pub fn has_token_starting_with(&self, text: &[u8]) -> bool {
        let at = self.sorted.partition_point(|(piece, _)| &**piece < text);
        self.sorted
            .get(at)
            .is_some_and(|(piece, _)| piece.starts_with(text))
    }
}

/// How a prompt is healed: the tokens taken off its end and the text they held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healing {
    pub removed_tokens: usize,
    pub text: Vec<u8>,
}

/// The healing for a prompt whose last tokens have these texts (`last_pieces`, nearest the
/// cursor last), or `None`: at the start of a file (no token with text before the cursor),
/// after a line break or a space (already a boundary), and when no token of the vocabulary
/// starts with the text that would come off.
pub fn plan_healing(last_pieces: &[Vec<u8>], table: &PieceTable) -> Option<Healing> {
    let mut text: Vec<u8> = Vec::new();
    let mut removed_tokens = 0;
    for piece in last_pieces.iter().rev().take(MAX_REMOVED_TOKENS) {
        if piece.is_empty() {
            // A control token (BOS, a FIM marker): nothing before the cursor to heal.
            break;
        }
        let mut joined = piece.clone();
        joined.extend_from_slice(&text);
        text = joined;
        removed_tokens += 1;
        // Stop at the start of a character: a byte token in the middle of one pulls in the
        // tokens before it.
        if !is_continuation_byte(text[0]) {
            break;
        }
    }
    let ends_at_boundary = text
        .last()
        .is_none_or(|&byte| byte == b'\n' || byte == b' ' || byte == b'\t');
    if removed_tokens == 0 || ends_at_boundary || is_continuation_byte(text[0]) {
        return None;
    }
    table.has_token_starting_with(&text).then_some(Healing {
        removed_tokens,
        text,
    })
}

fn is_continuation_byte(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// The answer's progress through the healed text: which tokens may come next, and how much
/// of the answer is the healed text (left out of what the user gets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealState {
    remaining: Vec<u8>,
    /// Bytes of the answer still to leave out.
    hidden: usize,
}

impl HealState {
    pub fn new(healing: &Healing) -> Self {
        HealState {
            remaining: healing.text.clone(),
            hidden: healing.text.len(),
        }
    }

    /// The healed text is not all written yet: the next token is constrained (and no draft
    /// is taken, since its choices would be).
    pub fn constraining(&self) -> bool {
        !self.remaining.is_empty()
    }

    /// The tokens allowed next, from `table`.
    pub fn allowed(&self, table: &PieceTable) -> Vec<i32> {
        table.agreeing(&self.remaining)
    }

    /// Notes a chosen token's text.
    pub fn advance(&mut self, piece: &[u8]) {
        let consumed = piece.len().min(self.remaining.len());
        self.remaining.drain(..consumed);
    }

    /// Takes the healed text's bytes off the start of the answer's next bytes.
    pub fn hide(&mut self, bytes: &mut Vec<u8>) {
        let hidden = self.hidden.min(bytes.len());
        bytes.drain(..hidden);
        self.hidden -= hidden;
    }

    /// Whether the answer is still inside the healed text.
    pub fn hiding(&self) -> bool {
        self.hidden > 0
    }
}
