//! The tags query's patterns matched in one walk of the syntax tree.
//!
//! tree-sitter's query cursor was a quarter of a cold scan's time (kernel `drivers/net`,
//! `perf`): for every node it computes the node's and its parent's points and sibling
//! status, which a tags query never needs. The queries in `queries/` use a small part of
//! the query language (nested nodes, fields, alternations, `(_)`, string literals,
//! captures), and matching that part directly costs a cursor step and a table lookup per
//! node. [`TagPatterns::compile`] accepts only that part, with the semantics of tree-sitter's
//! matcher for it; a query that uses more (quantifiers, anchors, predicates, negated
//! fields, supertypes) is refused, and extraction then runs tree-sitter's query cursor.

use std::num::NonZeroU16 as FieldId;

use tree_sitter::{Language as Grammar, Node};

use super::extract::SymbolKind;

/// What a capture means to extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `@name`: the defined or used identifier.
    Name,
    /// `@container`: the enclosing type when nesting does not show it.
    Container,
    /// `@definition.<kind>`.
    Definition(SymbolKind),
    /// `@reference.<kind>`.
    Reference,
    /// Any other capture, which extraction ignores (as a `@definition.` of an unknown kind).
    Other,
}

impl Role {
    pub fn from_capture_name(name: &str) -> Role {
        if name == "name" {
            Role::Name
        } else if name == "container" {
            Role::Container
        } else if let Some(kind) = name.strip_prefix("definition.") {
            SymbolKind::from_capture(kind).map_or(Role::Other, Role::Definition)
        } else if name.starts_with("reference.") {
            Role::Reference
        } else {
            Role::Other
        }
    }
}

/// One captured node of a match.
#[derive(Clone, Copy, Debug)]
pub struct Capture<'tree> {
    pub role: Role,
    pub node: Node<'tree>,
}

/// A query's patterns, ready to match in one walk (see the module's comment).
#[derive(Debug)]
pub struct TagPatterns {
    /// By pattern index, as the query numbers them.
    patterns: Vec<Element>,
    /// Pattern indices by the kind of their root node, in pattern order.
    by_root_kind: Vec<Vec<u32>>,
}

/// A node in a pattern, with the field it must be found under, if any.
#[derive(Debug)]
struct Element {
    field: Option<FieldId>,
    /// One, or an alternation's alternatives.
    choices: Vec<Choice>,
}

#[derive(Debug)]
struct Choice {
    kind: Kind,
    /// Its own captures and those of the element it stands for.
    roles: Vec<Role>,
    /// Patterns for its children, matched in order (not necessarily adjacent).
    children: Vec<Element>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Exact(u16),
    /// `(_)`: any named node but an error.
    AnyNamed,
}

impl Kind {
    fn matches(self, node: Node<'_>) -> bool {
        match self {
            Kind::Exact(kind) => node.kind_id() == kind,
            Kind::AnyNamed => node.is_named() && !node.is_error(),
        }
    }
}

impl TagPatterns {
    /// Compiles `source` (a query that tree-sitter accepts) for `grammar`, or says what it
    /// uses that this matcher does not do.
    pub fn compile(grammar: &Grammar, source: &str) -> Result<TagPatterns, String> {
        let mut reader = Reader {
            grammar,
            text: source,
            at: 0,
        };
        let mut patterns = Vec::new();
        while reader.skip_blank() {
            let element = reader.element()?;
            if element.field.is_some() {
                return Err("a field at the top level".into());
            }
            if element.choices.len() != 1 {
                return Err("an alternation at the top level".into());
            }
            if matches!(element.choices[0].kind, Kind::AnyNamed) {
                return Err("a wildcard at the top level".into());
            }
            patterns.push(element);
        }
        let mut by_root_kind: Vec<Vec<u32>> = vec![Vec::new(); grammar.node_kind_count()];
        for (index, pattern) in patterns.iter().enumerate() {
            if let Kind::Exact(kind) = pattern.choices[0].kind {
                by_root_kind
                    .get_mut(kind as usize)
                    .ok_or("a node kind the grammar does not have")?
                    .push(index as u32);
            }
        }
        Ok(TagPatterns {
            patterns,
            by_root_kind,
        })
    }

    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Calls `found` with each match under `root` (itself included): the pattern's index and
    /// its captures. Matches come by root node in pre-order, then by pattern, then in the
    /// order of their children.
    pub fn for_each_match<'tree>(
        &self,
        root: Node<'tree>,
        found: &mut dyn FnMut(usize, &[Capture<'tree>]),
    ) {
        let mut cursor = root.walk();
        let mut captures = Vec::new();
        loop {
            let node = cursor.node();
            if let Some(patterns) = self.by_root_kind.get(node.kind_id() as usize) {
                for &index in patterns {
                    let index = index as usize;
                    captures.clear();
                    self.match_element(&self.patterns[index], node, &mut captures, &mut |c| {
                        found(index, c)
                    });
                }
            }
            if cursor.goto_first_child() {
                continue;
            }
            loop {
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return;
                }
            }
        }
    }

    /// Every way `element` matches `node`, each passed on to `then` with its captures.
    fn match_element<'tree>(
        &self,
        element: &Element,
        node: Node<'tree>,
        captures: &mut Vec<Capture<'tree>>,
        then: &mut dyn FnMut(&mut Vec<Capture<'tree>>),
    ) {
        for choice in &element.choices {
            if !choice.kind.matches(node) {
                continue;
            }
            let mark = captures.len();
            captures.extend(choice.roles.iter().map(|&role| Capture { role, node }));
            if choice.children.is_empty() {
                then(captures);
            } else {
                let mut cursor = node.walk();
                let mut children = Vec::new();
                if cursor.goto_first_child() {
                    loop {
                        children.push((cursor.node(), cursor.field_id()));
                        if !cursor.goto_next_sibling() {
                            break;
                        }
                    }
                }
                self.match_children(&choice.children, &children, captures, then);
            }
            captures.truncate(mark);
        }
    }

    /// Every way `steps` match `children` in order.
    fn match_children<'tree>(
        &self,
        steps: &[Element],
        children: &[(Node<'tree>, Option<FieldId>)],
        captures: &mut Vec<Capture<'tree>>,
        then: &mut dyn FnMut(&mut Vec<Capture<'tree>>),
    ) {
        let Some((step, rest)) = steps.split_first() else {
            then(captures);
            return;
        };
        for (at, &(child, field)) in children.iter().enumerate() {
            if step.field.is_some() && step.field != field {
                continue;
            }
            let later = &children[at + 1..];
            self.match_element(step, child, captures, &mut |captures| {
                self.match_children(rest, later, captures, then)
            });
        }
    }
}

/// Reads the query language's small part (see the module's comment).
struct Reader<'a> {
    grammar: &'a Grammar,
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    /// Skips white space and `;` comments; `false` at the end.
    fn skip_blank(&mut self) -> bool {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            let (blank, comment) = (rest.len() - trimmed.len(), trimmed.starts_with(';'));
            let skipped = if comment {
                trimmed.find('\n').unwrap_or(trimmed.len())
            } else {
                0
            };
            let more = !trimmed.is_empty();
            self.at += blank + skipped;
            if !comment {
                return more;
            }
        }
    }

    fn eat(&mut self, token: char) -> bool {
        self.skip_blank();
        let found = self.rest().starts_with(token);
        if found {
            self.at += token.len_utf8();
        }
        found
    }

    /// A node kind, field or capture name.
    fn word(&mut self) -> &str {
        self.skip_blank();
        let rest = &self.text[self.at..];
        let length = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
            .unwrap_or(rest.len());
        self.at += length;
        &rest[..length]
    }

    fn error(&self, what: &str) -> String {
        let line = self.text[..self.at].lines().count().max(1);
        format!("{what} (line {line} of the query)")
    }

    fn element(&mut self) -> Result<Element, String> {
        self.skip_blank();
        let start = self.at;
        let word = self.word().to_owned();
        let field = if !word.is_empty() && self.eat(':') {
            Some(
                self.grammar
                    .field_id_for_name(&word)
                    .ok_or_else(|| self.error(&format!("no field `{word}`")))?,
            )
        } else {
            self.at = start;
            None
        };
        let mut choices = if self.eat('(') {
            vec![self.node()?]
        } else if self.eat('[') {
            let mut choices = Vec::new();
            while !self.eat(']') {
                let alternative = self.element()?;
                if alternative.field.is_some() {
                    return Err(self.error("a field on an alternative"));
                }
                choices.extend(alternative.choices);
            }
            if choices.is_empty() {
                return Err(self.error("an empty alternation"));
            }
            choices
        } else if self.eat('"') {
            let rest = self.rest();
            let end = rest
                .find('"')
                .ok_or_else(|| self.error("an unclosed string"))?;
            let literal = &rest[..end];
            if literal.contains('\\') {
                return Err(self.error("an escape in a string"));
            }
            let kind = self.grammar.id_for_node_kind(literal, false);
            if kind == 0 {
                return Err(self.error(&format!("no token \"{literal}\"")));
            }
            self.at += end + 1;
            vec![Choice {
                kind: Kind::Exact(kind),
                roles: Vec::new(),
                children: Vec::new(),
            }]
        } else {
            return Err(self.error("a step this matcher does not take"));
        };
        while self.eat('@') {
            let role = Role::from_capture_name(self.word());
            for choice in &mut choices {
                choice.roles.push(role);
            }
        }
        self.skip_blank();
        if self.rest().starts_with(['*', '+', '?']) {
            return Err(self.error("a quantifier"));
        }
        Ok(Element { field, choices })
    }

    /// A node's kind and children, after its `(`.
    fn node(&mut self) -> Result<Choice, String> {
        let name = self.word().to_owned();
        let kind = match name.as_str() {
            "_" => Kind::AnyNamed,
            "" | "ERROR" | "MISSING" => {
                return Err(self.error("a special node or a predicate"));
            }
            name => {
                let kind = self.grammar.id_for_node_kind(name, true);
                if kind == 0 {
                    return Err(self.error(&format!("no node kind `{name}`")));
                }
                if self.grammar.node_kind_is_supertype(kind) {
                    return Err(self.error(&format!("the supertype `{name}`")));
                }
                Kind::Exact(kind)
            }
        };
        let mut children = Vec::new();
        while !self.eat(')') {
            if !self.skip_blank() {
                return Err(self.error("an unclosed node"));
            }
            children.push(self.element()?);
        }
        Ok(Choice {
            kind,
            roles: Vec::new(),
            children,
        })
    }
}
