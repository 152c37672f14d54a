//! The expression at the cursor, read from the text before it: the word being typed and the
//! receiver it is a member of (`self.items.ge|` → receiver `self.items`, word `ge`), and a
//! guess at a receiver's type from how the code before it was written.

/// What the cursor is in the middle of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AtCursor<'t> {
    /// The identifier part before the cursor (empty at the start of a name).
    pub word: &'t str,
    /// The receiver when the word follows `.`, `::`, `->` or `?.`: its parts, outermost
    /// first (`self.items` → `["self", "items"]`). Empty when the receiver is no plain chain
    /// of names (`f().`), or the word is no member at all.
    pub receiver: Vec<&'t str>,
    /// The word follows `.`, `::`, `->` or `?.`.
    pub is_member: bool,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The separator that ends `text`, if any: its length.
fn member_separator(text: &str) -> Option<usize> {
    ["?.", "::", "->", "."]
        .into_iter()
        .find(|separator| text.ends_with(separator))
        .map(str::len)
}

/// The expression at the end of `line_prefix` (the cursor's line up to the cursor).
pub fn at_cursor(line_prefix: &str) -> AtCursor<'_> {
    let word_start = line_prefix
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_word_char(c))
        .last()
        .map_or(line_prefix.len(), |(at, _)| at);
    let word = &line_prefix[word_start..];
    let mut rest = &line_prefix[..word_start];
    let Some(separator) = member_separator(rest) else {
        return AtCursor {
            word,
            ..AtCursor::default()
        };
    };
    let mut receiver = Vec::new();
    let mut separator = separator;
    loop {
        rest = &rest[..rest.len() - separator];
        let start = rest
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_word_char(c))
            .last()
            .map(|(at, _)| at);
        let Some(start) = start else {
            // `f().` or `x[0].`: not a chain of names.
            receiver.clear();
            break;
        };
        receiver.push(&rest[start..]);
        rest = &rest[..start];
        match member_separator(rest) {
            Some(next) if receiver.len() < 8 => separator = next,
            _ => break,
        }
    }
    receiver.reverse();
    AtCursor {
        word,
        receiver,
        is_member: true,
    }
}

/// The type names `receiver` (a chain like `self.store` or `cart`) may have, best guess
/// first, read from `before` (the code above the cursor, nearest last): `x = Foo(`,
/// `x := &Foo{`, `x := NewFoo(`, `x = new Foo(`, `let x = Foo::new(`, `x: Foo`,
/// `x *Foo` (a Go parameter), `x Foo` (a Go `var`). The caller keeps the names its index
/// knows as types.
pub fn receiver_types(before: &str, receiver: &str) -> Vec<String> {
    let mut types = Vec::new();
    let mut search_end = before.len();
    // The nearest assignments first; a bounded number of them.
    for _ in 0..16 {
        let Some(at) = before[..search_end].rfind(receiver) else {
            break;
        };
        search_end = at;
        let preceded = before[..at].chars().next_back();
        if preceded.is_some_and(|c| is_word_char(c) || c == '.') {
            continue;
        }
        let after = &before[at + receiver.len()..];
        if after.starts_with(is_word_char) {
            continue;
        }
        let after = after.trim_start_matches([' ', '\t']);
        let value = if let Some(value) = after.strip_prefix(":=") {
            value
        } else if let Some(value) = after.strip_prefix('=').filter(|v| !v.starts_with('=')) {
            value
        } else if let Some(value) = after.strip_prefix(':').filter(|v| !v.starts_with(':')) {
            value
        } else if after.starts_with(|c: char| c == '*' || c.is_alphabetic()) {
            // Go: `c *Cart` in parameters, `var c Cart`.
            after
        } else {
            continue;
        };
        if let Some(name) = type_in(value) {
            if !types.contains(&name) {
                types.push(name);
            }
            if types.len() >= 3 {
                break;
            }
        }
    }
    types
}

/// The type a value expression makes: the last capitalized name of its leading path
/// (`pkg.NewCart(` gives `Cart`, Go's constructor naming; `Sheet::new(` gives `Sheet`).
fn type_in(value: &str) -> Option<String> {
    let value = value.trim_start();
    let value = value
        .strip_prefix("new ")
        .or_else(|| value.strip_prefix("mut "))
        .unwrap_or(value)
        .trim_start_matches(['&', '*', ' ']);
    let value = value.strip_prefix("mut ").unwrap_or(value);
    let path_end = value
        .find(|c: char| !(is_word_char(c) || c == '.' || c == ':'))
        .unwrap_or(value.len());
    let path = &value[..path_end];
    let name = path
        .split(['.', ':'])
        .rfind(|part| part.starts_with(char::is_uppercase))?;
    let name = match name.strip_prefix("New") {
        Some(rest) if rest.starts_with(char::is_uppercase) => rest,
        _ => name,
    };
    Some(name.to_owned())
}
