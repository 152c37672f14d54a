//! Invisible characters that make code read differently from how it runs ("Trojan Source",
//! CVE-2021-42574): bidirectional embeddings, overrides and isolates. A model, or a node
//! that pretends to be one, must not slip them into the user's code unseen.

/// U+202A–U+202E (embeddings and overrides) and U+2066–U+2069 (isolates).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The first bidirectional control character in `text`, if any.
pub fn first_bidi_control(text: &str) -> Option<char> {
    text.chars().find(|&c| is_bidi_control(c))
}

/// `text` without bidirectional control characters (completions and hovers: what is
/// shown as ghost text or prose loses nothing the user could see).
pub fn without_bidi_controls(text: &str) -> String {
    text.chars().filter(|&c| !is_bidi_control(c)).collect()
}
