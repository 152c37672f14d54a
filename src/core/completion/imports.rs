//! What a file imports, read from its text: which modules it binds to which local names,
//! and which names it brings in from them. A line-based reading, enough to choose context:
//! it never follows an import into another file, so a cycle of imports costs nothing.

use crate::core::index::language::Language;

/// At most this many import lines are read: a file with thousands of imports must not make
/// every keystroke slower.
const MAX_IMPORTS: usize = 2000;
/// Imports are looked for in this much of the file's start: they are read again on every
/// keystroke (about 0.5 ms for 32 KiB of imports, 700 lines).
pub const IMPORT_SCAN_BYTES: usize = 32 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Import {
    /// The module as a path: `inventory/models`, `./board`, `fmt`, `crate/units`. A leading
    /// `./` or `../` is relative to the importing file's folder.
    pub module: String,
    /// The local name that stands for the module itself, when it is bound to one
    /// (`import x.y as z`, `import * as z`, Go's package name, `use a::b;`).
    pub binds: Option<String>,
    /// Names brought in from the module, as the file uses them: `(local, defined)`.
    pub names: Vec<(String, String)>,
}

/// The imports of `text` (its first `IMPORT_SCAN_BYTES`), in the order they appear.
pub fn imports(language: Language, text: &str) -> Vec<Import> {
    let mut end = text.len().min(IMPORT_SCAN_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let mut found = Vec::new();
    match language {
        Language::Python => python(text, &mut found),
        Language::JavaScript | Language::TypeScript | Language::Tsx => javascript(text, &mut found),
        Language::Go => go(text, &mut found),
        Language::Rust => rust(text, &mut found),
        _ => {}
    }
    found.truncate(MAX_IMPORTS);
    found
}

fn is_identifier(word: &str) -> bool {
    !word.is_empty()
        && word.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// `a as b` → `(b, a)`; `a` → `(a, a)`.
fn aliased(item: &str, keyword: &str) -> Option<(String, String)> {
    let item = item.trim();
    let (defined, local) = match item.split_once(keyword) {
        Some((defined, local)) => (defined.trim(), local.trim()),
        None => (item, item),
    };
    (is_identifier(defined) && is_identifier(local)).then(|| (local.to_owned(), defined.to_owned()))
}

/// A Python module path: `a.b` → `a/b`; `.m` → `./m`; `..m` → `../m`; `.` → `.`.
fn python_module(dotted: &str) -> String {
    let dots = dotted.len() - dotted.trim_start_matches('.').len();
    let rest = dotted[dots..].replace('.', "/");
    let up = match dots {
        0 => String::new(),
        1 => "./".to_owned(),
        n => "../".repeat(n - 1),
    };
    if rest.is_empty() {
        up.trim_end_matches('/').to_owned()
    } else {
        up + &rest
    }
}

fn python(text: &str, found: &mut Vec<Import>) {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if found.len() >= MAX_IMPORTS {
            return;
        }
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("import ") {
            for item in rest.split(',') {
                let item = item.trim();
                let (module, local) = match item.split_once(" as ") {
                    Some((module, local)) => (module.trim(), Some(local.trim())),
                    None => (item, None),
                };
                // `import a.b` binds `a`; the chain `a.b.` is read as the module `a/b`.
                let binds = local.unwrap_or_else(|| module.split('.').next().unwrap_or(module));
                if is_identifier(binds) {
                    found.push(Import {
                        module: python_module(if local.is_some() { module } else { binds }),
                        binds: Some(binds.to_owned()),
                        names: Vec::new(),
                    });
                }
            }
        } else if let Some(rest) = line.strip_prefix("from ") {
            let Some((module, names)) = rest.split_once(" import ") else {
                continue;
            };
            let mut names = names.trim().to_owned();
            // `from m import (a,\n b)`: read on to the closing parenthesis.
            if names.starts_with('(') && !names.contains(')') {
                for more in lines.by_ref().take(200) {
                    names.push_str(more);
                    if more.contains(')') {
                        break;
                    }
                }
            }
            let names = names.trim_matches(|c| c == '(' || c == ')' || c == ' ');
            found.push(Import {
                module: python_module(module.trim()),
                binds: None,
                names: names
                    .split(',')
                    .filter_map(|item| aliased(item.trim_matches(|c| c == '(' || c == ')'), " as "))
                    .collect(),
            });
        }
    }
}

/// The string literal in `text` (the first one, single, double or back quotes).
fn quoted(text: &str) -> Option<&str> {
    let start = text.find(['"', '\'', '`'])?;
    let quote = text[start..].chars().next()?;
    let rest = &text[start + 1..];
    rest.find(quote).map(|end| &rest[..end])
}

fn javascript(text: &str, found: &mut Vec<Import>) {
    let mut statement = String::new();
    for line in text.lines() {
        if found.len() >= MAX_IMPORTS {
            return;
        }
        let trimmed = line.trim();
        if statement.is_empty() && !trimmed.starts_with("import ") && !trimmed.contains("require(")
        {
            continue;
        }
        statement.push_str(trimmed);
        statement.push(' ');
        // An import spans lines until its module's string.
        if !(statement.contains(" from ")
            || statement.contains("require(")
            || quoted(&statement).is_some())
        {
            if statement.len() > 4096 {
                statement.clear();
            }
            continue;
        }
        let current = std::mem::take(&mut statement);
        let Some(module) = quoted(current.split(" from ").last().unwrap_or(&current)) else {
            continue;
        };
        let module = module.to_owned();
        if let Some(required) = current.find("require(") {
            // `const x = require("m")` or `const { a, b } = require("m")`.
            let head = current[..required]
                .trim()
                .trim_end_matches('=')
                .trim()
                .trim_start_matches("const ")
                .trim_start_matches("let ")
                .trim_start_matches("var ")
                .trim();
            found.push(destructured(head, module, ":"));
            continue;
        }
        let Some(clause) = current
            .strip_prefix("import ")
            .and_then(|rest| rest.split(" from ").next())
        else {
            continue;
        };
        let clause = clause.trim().trim_start_matches("type ").trim();
        if clause.starts_with(['"', '\'']) {
            // `import "./side-effects"`.
            continue;
        }
        let mut import = Import {
            module,
            ..Import::default()
        };
        for part in split_clause(clause) {
            let part = part.trim();
            if let Some(alias) = part.strip_prefix("* as ") {
                import.binds = Some(alias.trim().to_owned()).filter(|alias| is_identifier(alias));
            } else if part.starts_with('{') {
                let names = part.trim_matches(|c| c == '{' || c == '}');
                import.names.extend(
                    names
                        .split(',')
                        .map(|item| item.trim().trim_start_matches("type ").trim())
                        .filter_map(|item| aliased(item, " as ")),
                );
            } else if is_identifier(part) {
                // A default import stands for the module's default export.
                import.binds = Some(part.to_owned());
            }
        }
        found.push(import);
    }
}

/// `a, { b, c }` → `["a", "{ b, c }"]`.
fn split_clause(clause: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in clause.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&clause[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&clause[start..]);
    parts
}

fn destructured(head: &str, module: String, alias_separator: &str) -> Import {
    let mut import = Import {
        module,
        ..Import::default()
    };
    if head.starts_with('{') {
        import.names = head
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter_map(|item| {
                let item = item.trim();
                match item.split_once(alias_separator) {
                    Some((defined, local)) => {
                        aliased(&format!("{} as {}", defined.trim(), local.trim()), " as ")
                    }
                    None => aliased(item, " as "),
                }
            })
            .collect();
    } else if is_identifier(head) {
        import.binds = Some(head.to_owned());
    }
    import
}

fn go(text: &str, found: &mut Vec<Import>) {
    let mut in_block = false;
    for line in text.lines() {
        if found.len() >= MAX_IMPORTS {
            return;
        }
        let line = line.trim();
        let spec = if in_block {
            if line.starts_with(')') {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("import") {
            let rest = rest.trim();
            if rest.starts_with('(') {
                in_block = true;
                rest.trim_start_matches('(').trim()
            } else {
                rest
            }
        } else {
            continue;
        };
        let Some(path) = quoted(spec) else { continue };
        let alias = spec[..spec.find(['"', '`']).unwrap_or(0)].trim();
        let package = path.rsplit('/').next().unwrap_or(path);
        let binds = if alias.is_empty() { package } else { alias };
        if binds == "_" || binds == "." {
            continue;
        }
        found.push(Import {
            module: path.to_owned(),
            binds: Some(binds.to_owned()).filter(|name| is_identifier(name)),
            names: Vec::new(),
        });
    }
}

fn rust(text: &str, found: &mut Vec<Import>) {
    let mut statement = String::new();
    for line in text.lines() {
        if found.len() >= MAX_IMPORTS {
            return;
        }
        let trimmed = line
            .trim()
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ");
        if let Some(name) = trimmed
            .strip_prefix("mod ")
            .and_then(|rest| rest.strip_suffix(';'))
        {
            let name = name.trim();
            if is_identifier(name) {
                found.push(Import {
                    module: format!("./{name}"),
                    binds: Some(name.to_owned()),
                    names: Vec::new(),
                });
            }
            continue;
        }
        if statement.is_empty() && !trimmed.starts_with("use ") {
            continue;
        }
        statement.push_str(trimmed);
        if !statement.ends_with(';') {
            if statement.len() > 4096 {
                statement.clear();
            }
            continue;
        }
        let current = std::mem::take(&mut statement);
        let path = current
            .trim_start_matches("use ")
            .trim_end_matches(';')
            .trim();
        rust_tree("", path, found);
    }
}

/// One `use` tree: `a::b::{C, d::e as f}`.
fn rust_tree(base: &str, tree: &str, found: &mut Vec<Import>) {
    let join = |head: &str| {
        let head = head.trim().trim_end_matches("::");
        match (base.is_empty(), head.is_empty()) {
            (true, _) => head.to_owned(),
            (false, true) => base.to_owned(),
            (false, false) => format!("{base}::{head}"),
        }
    };
    if let Some(open) = tree.find('{') {
        let prefix = join(&tree[..open]);
        let inner = tree[open + 1..].trim_end().trim_end_matches('}');
        let mut names = Vec::new();
        for item in split_clause(inner) {
            let item = item.trim();
            if item.contains("::") {
                rust_tree(&prefix, item, found);
            } else if item == "self" {
                rust_tree("", &prefix, found);
            } else if let Some(pair) = aliased(item, " as ") {
                names.push(pair);
            }
        }
        if !names.is_empty() {
            found.push(Import {
                module: rust_module(&prefix),
                binds: None,
                names,
            });
        }
        return;
    }
    let full = join(tree);
    let (path, last) = full.rsplit_once("::").unwrap_or(("", full.as_str()));
    let Some((local, defined)) = aliased(last, " as ") else {
        return;
    };
    // `use a::b;` may name a module or an item: both are recorded.
    found.push(Import {
        module: rust_module(&format!("{path}::{defined}")),
        binds: Some(local.clone()),
        names: Vec::new(),
    });
    found.push(Import {
        module: rust_module(path),
        binds: None,
        names: vec![(local, defined)],
    });
}

/// `crate::a::b` → `crate/a/b`; `self::a` → `./a`; `super::a` → `../a`.
fn rust_module(path: &str) -> String {
    let mut module = String::new();
    for (i, segment) in path.split("::").filter(|s| !s.is_empty()).enumerate() {
        match segment {
            "self" if i == 0 => module.push('.'),
            "super" => module.push_str(if module.is_empty() { ".." } else { "/.." }),
            _ => {
                if !module.is_empty() {
                    module.push('/');
                }
                module.push_str(segment);
            }
        }
    }
    module
}
