//! The context a completion gets from the rest of the workspace, chosen for the cursor:
//! members of the receiver being typed (a type the index knows, or a module the file
//! imports), definitions whose names start with the word being typed, the names the file
//! imports, the names used in the enclosing function, the package's other files (Go), and
//! lately edited lines. Ranked in that order, deduplicated by what they add, and cut to a
//! number of lines; the caller cuts them to their share of the budget.

use std::collections::{HashMap, HashSet};

use super::cursor::{AtCursor, at_cursor, receiver_types};
use super::imports::{Import, imports};
use super::{CompletionInput, RecentEdit};
use crate::core::generation::ContextChunk;
use crate::core::index::extract::{Detail, SymbolKind};
use crate::core::index::language::Language;
use crate::core::index::table::{Entry, Found, Index};

/// At most this many definitions go into the context.
const CONTEXT_DEFINITIONS: usize = 10;
/// At most this many definitions of one name: a name defined in many files (`get`, `Init`)
/// must not take every slot.
const DEFINITIONS_PER_NAME: usize = 2;
/// A name defined in more files than this is too generic to add unless something ties it
/// to the cursor (a receiver, an import).
const GENERIC_NAME_FILES: usize = 6;
/// At most this many lately edited lines of other files go into the context.
const RECENT_EDITS: usize = 4;
/// How much text before the cursor is read for names in use (when the enclosing function
/// is longer, its start is not read).
const NAMES_WINDOW: usize = 2000;
/// At most this many imported names are looked up.
const IMPORTED_NAMES: usize = 64;
/// At most this many of a module's or a type's members are listed.
const MEMBERS: usize = 6;
/// How much of the cursor's line is read for the expression at the cursor.
const LINE_TAIL: usize = 1024;
/// At most this many definitions of a prefix being typed.
const PREFIX_MATCHES: usize = 4;

/// One line of context: where it comes from and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextLine {
    pub path: String,
    pub text: String,
}

/// The context lines for `input`'s cursor, best first.
pub fn choose_context(input: &CompletionInput<'_>, offset: usize) -> Vec<ContextLine> {
    let Some(language) = input.language else {
        return Vec::new();
    };
    let text = input.text;
    // The expression at the cursor is in the line's last stretch: a minified line of a
    // megabyte is not copied on every keystroke.
    let line_start = text
        .line_to_byte(text.byte_to_line(offset))
        .max(super::char_floor(text, offset.saturating_sub(LINE_TAIL)));
    let line_prefix = text.byte_slice(line_start..offset).to_string();
    let cursor = at_cursor(&line_prefix);
    let enclosing = input.index.enclosing(input.path, offset);
    let window_start = enclosing
        .map_or(0, |found| found.symbol.range().start)
        .max(offset.saturating_sub(NAMES_WINDOW));
    let window = text
        .byte_slice(super::char_floor(text, window_start)..offset)
        .to_string();
    let head_end = super::char_floor(text, offset.min(super::imports::IMPORT_SCAN_BYTES));
    let head = text.byte_slice(..head_end).to_string();
    let imported = imports(language, &head);

    let mut chooser = Chooser {
        index: input.index,
        path: input.path,
        language,
        lines: Vec::new(),
        seen: HashSet::new(),
        signatures: HashSet::new(),
        window: &window,
    };
    // 1. The receiver's members.
    if cursor.is_member {
        chooser.receiver_members(&cursor, &imported, &window, enclosing, offset);
    } else if !cursor.word.is_empty() {
        // 2. Definitions of the name being typed.
        chooser.prefix_matches(cursor.word, &imported);
    }
    // 3. What the file imports by name, the names used nearest the cursor first.
    chooser.imported_names(&imported, &window);
    // 4. Names used in the enclosing function (and just before the cursor).
    chooser.names_in_use(&window, &imported);
    // 5. The package's other files, where a package spans a folder.
    if language == Language::Go {
        chooser.same_package(&cursor);
    }
    let mut lines = chooser.lines;
    lines.truncate(CONTEXT_DEFINITIONS);
    lines.extend(recent_edits(input.recent_edits, input.path));
    lines
}

fn recent_edits(edits: &[RecentEdit], path: &str) -> Vec<ContextLine> {
    edits
        .iter()
        .filter(|edit| edit.path != path)
        .take(RECENT_EDITS)
        .map(|edit| ContextLine {
            path: edit.path.clone(),
            text: format!("edited: {}", edit.line.trim()),
        })
        .collect()
}

/// The chunk a context line gives servers that place files themselves.
pub fn chunk(line: &ContextLine) -> ContextChunk {
    ContextChunk {
        path: line.path.clone(),
        text: format!("{}\n", line.text.trim_start_matches("edited: ")),
    }
}

struct Chooser<'a> {
    index: &'a Index,
    path: &'a str,
    language: Language,
    lines: Vec<ContextLine>,
    /// Definitions already listed, by file and start.
    seen: HashSet<(String, usize)>,
    /// Texts already listed: the same signature twice adds nothing.
    signatures: HashSet<String>,
    /// The code before the cursor: a definition it already shows adds nothing.
    window: &'a str,
}

impl Chooser<'_> {
    fn full(&self) -> bool {
        self.lines.len() >= CONTEXT_DEFINITIONS
    }

    /// Adds `file`'s symbol number `index`, unless it is here already; `true` when added.
    fn add(&mut self, file: Entry<'_>, index: usize) -> bool {
        self.add_unpacked(file, index, None)
    }

    /// [`add`](Self::add), with the symbol's detail when the caller unpacked it already.
    fn add_unpacked(&mut self, file: Entry<'_>, index: usize, known: Option<Detail>) -> bool {
        let path = file.path();
        if self.full() || path == self.path {
            return false;
        }
        let Some(symbol) = file.symbol(index) else {
            return false;
        };
        if !self
            .seen
            .insert((path.to_owned(), symbol.symbol.range().start))
        {
            return false;
        }
        let detail = known.unwrap_or_else(|| file.detail(index));
        let text = snippet(&detail);
        if self.window.contains(&detail.signature) || !self.signatures.insert(text.clone()) {
            return false;
        }
        self.lines.push(ContextLine {
            path: path.to_owned(),
            text,
        });
        true
    }

    fn add_found(&mut self, found: &Found<'_>) -> bool {
        self.add(found.entry, found.index)
    }

    /// Adds up to `DEFINITIONS_PER_NAME` definitions of `name`, those in `preferred` files
    /// first; names defined in many files only from preferred files.
    fn add_name(&mut self, name: &str, preferred: &[String]) {
        let found = self.index.definitions(name);
        let in_preferred = |found: &Found<'_>| preferred.iter().any(|path| path == found.path);
        let generic = found.len() > GENERIC_NAME_FILES;
        let mut ordered: Vec<&Found<'_>> = found.iter().filter(|f| in_preferred(f)).collect();
        if !generic {
            ordered.extend(found.iter().filter(|f| !in_preferred(f)));
        }
        let mut added = 0;
        for found in ordered {
            if added >= DEFINITIONS_PER_NAME || self.full() {
                break;
            }
            added += usize::from(self.add_found(found));
        }
    }

    fn receiver_members(
        &mut self,
        cursor: &AtCursor<'_>,
        imported: &[Import],
        window: &str,
        enclosing: Option<Found<'_>>,
        offset: usize,
    ) {
        let Some(&first) = cursor.receiver.first() else {
            return;
        };
        let chain = cursor.receiver.join(".");
        // A module the file imports: `pricing.`, `np.`, `format.` (bound by the import, or
        // a module imported by name from its package: `from inventory import pricing`).
        if cursor.receiver.len() == 1 {
            let modules = imported.iter().filter_map(|import| {
                if import.binds.as_deref() == Some(first) {
                    return Some(import.module.clone());
                }
                let (_, defined) = import.names.iter().find(|(local, _)| local == first)?;
                Some(format!("{}/{defined}", import.module))
            });
            for module in modules.collect::<Vec<_>>() {
                let files = module_files(self.index, self.path, self.language, &module);
                if !files.is_empty() {
                    self.module_members(&files, cursor.word);
                    return;
                }
            }
        }
        // A type: `self.` in a method, a variable whose type the code shows, a type's own
        // static members (`Sheet::`).
        let mut types: Vec<String> = Vec::new();
        if matches!(first, "self" | "this") && cursor.receiver.len() == 1 {
            types.extend(self.enclosing_type(enclosing, offset));
        } else {
            let receiver = if matches!(first, "self" | "this") {
                chain.as_str()
            } else {
                cursor.receiver.last().copied().unwrap_or(first)
            };
            types.extend(receiver_types(window, &chain));
            if types.is_empty() && receiver != chain {
                types.extend(receiver_types(window, receiver));
            }
            if let Some(&last) = cursor.receiver.last()
                && last.starts_with(char::is_uppercase)
            {
                types.push(last.to_owned());
            }
        }
        for name in types {
            if self.type_members(&name, cursor.word) {
                return;
            }
        }
        // A receiver whose type nothing shows: a member being typed may still be a method
        // only one or two types have; a name many types define (`get`) is left out.
        if cursor.word.chars().count() >= 2 {
            for name in self.index.names_with_prefix(cursor.word, 8) {
                let found = self.index.definitions(name);
                if found.len() <= DEFINITIONS_PER_NAME {
                    for found in &found {
                        if found.symbol.kind == SymbolKind::Method {
                            self.add_found(found);
                        }
                    }
                }
            }
        }
    }

    /// The type of the method the cursor is in: its class, impl or Go receiver.
    fn enclosing_type(&self, enclosing: Option<Found<'_>>, offset: usize) -> Option<String> {
        let file = self.index.file(self.path)?;
        let holder = file
            .symbols()
            .filter(|found| {
                found.symbol.range().contains(&offset) && holds_members(found.symbol.kind)
            })
            .min_by_key(|found| found.symbol.range().len());
        if let Some(holder) = holder {
            return Some(holder.name().to_owned());
        }
        // A Go method: its path is `Type.Method`.
        let path = enclosing?.symbol_path();
        let (owner, _) = path.rsplit_once(self.language.separator())?;
        Some(owner.to_owned())
    }

    /// Lists the members of type `name` (where the index knows it as a type) that start
    /// with `word`, or its outline when nothing is typed; `true` when the type was found.
    fn type_members(&mut self, name: &str, word: &str) -> bool {
        let types: Vec<Found<'_>> = self
            .index
            .definitions(name)
            .into_iter()
            .filter(|found| holds_members(found.symbol.kind))
            .collect();
        if types.is_empty() {
            return false;
        }
        let separator = self.language.separator();
        let mut listed = 0;
        for found in types.iter().take(DEFINITIONS_PER_NAME * 2) {
            let Some(file) = self.index.entry(found.file) else {
                continue;
            };
            // The type itself, with its outline of fields and methods.
            self.add_found(found);
            let mut members: Vec<(Entry<'_>, usize)> = Index::children(&file, found.index)
                .map(|index| (file, index))
                .collect();
            // Go methods live beside the type, not in it: `Type.Method` paths in its folder.
            let owner_prefix = format!("{name}{separator}");
            if members.is_empty() {
                let folder = found.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                for entry in self.index.files_in_dir(folder, 64) {
                    members.extend(
                        (entry.symbols())
                            .filter(|member| member.symbol_path().starts_with(&owner_prefix))
                            .map(|member| (entry, member.index)),
                    );
                }
            }
            let outline = found.detail().outline;
            for (member_file, member) in members {
                if listed >= MEMBERS || self.full() {
                    break;
                }
                let named = member_file.symbol(member).map_or("", |found| found.name());
                if !named.starts_with(word) {
                    continue;
                }
                // A member the type's outline shows already adds nothing.
                let detail = member_file.detail(member);
                if !outline.contains(detail.signature.trim_end_matches(['{', ':', ' '])) {
                    listed += usize::from(self.add_unpacked(member_file, member, Some(detail)));
                }
            }
        }
        true
    }

    /// The top-level definitions of a module's files that start with `word` (all of them,
    /// up to `MEMBERS`, when nothing is typed yet).
    fn module_members(&mut self, files: &[Entry<'_>], word: &str) {
        let mut listed = 0;
        for &file in files {
            for found in file.symbols() {
                if found.symbol.parent().is_some() {
                    continue;
                }
                if listed >= MEMBERS || self.full() {
                    return;
                }
                if found.name().starts_with(word)
                    && !found.symbol_path().contains(self.language.separator())
                {
                    listed += usize::from(self.add(file, found.index));
                }
            }
        }
    }

    /// Definitions whose names start with the word being typed: the exact case first, then
    /// with its first letter's case changed; those the file imports first.
    fn prefix_matches(&mut self, word: &str, imported: &[Import]) {
        if word.chars().count() < 2 {
            return;
        }
        let flipped: String = {
            let mut chars = word.chars();
            let first = chars.next().unwrap_or_default();
            let first: String = if first.is_uppercase() {
                first.to_lowercase().collect()
            } else {
                first.to_uppercase().collect()
            };
            first + chars.as_str()
        };
        let mut names = self.index.names_with_prefix(word, 32);
        names.extend(self.index.names_with_prefix(&flipped, 16));
        let imported_names: HashSet<&str> = imported
            .iter()
            .flat_map(|import| import.names.iter().map(|(_, defined)| defined.as_str()))
            .collect();
        // Imported first, then the shortest (the nearest completion of the word).
        names.sort_by_key(|name| (!imported_names.contains(name), name.len()));
        let mut added = 0;
        for name in names {
            if added >= PREFIX_MATCHES || self.full() {
                break;
            }
            let before = self.lines.len();
            self.add_name(name, &[]);
            added += self.lines.len() - before;
        }
    }

    fn imported_names(&mut self, imported: &[Import], window: &str) {
        let mut names: Vec<(&str, &Import)> = imported
            .iter()
            .flat_map(|import| {
                import
                    .names
                    .iter()
                    .map(move |(_, defined)| (defined.as_str(), import))
            })
            .collect();
        // Names used nearest the cursor first, then those imported last. The window's words
        // are read once: a file with thousands of imports must not scan it per name.
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (at, word) in words(window) {
            last_use.insert(word, at);
        }
        names.reverse();
        names.sort_by_key(|(name, _)| std::cmp::Reverse(last_use.get(name).copied()));
        for (name, import) in names.into_iter().take(IMPORTED_NAMES) {
            if self.full() {
                return;
            }
            let files: Vec<String> =
                module_files(self.index, self.path, self.language, &import.module)
                    .iter()
                    .map(|file| file.path.clone())
                    .collect();
            // An imported name from outside the workspace is nobody's definition here.
            if files.is_empty() && !import.module.starts_with('.') {
                let found = self.index.definitions(name);
                if found.len() > GENERIC_NAME_FILES {
                    continue;
                }
            }
            self.add_name(name, &files);
        }
    }

    /// Names used before the cursor, nearest first. A member (`x.name`) whose receiver is
    /// unknown only brings in functions, never some type's method of the same name.
    fn names_in_use(&mut self, window: &str, imported: &[Import]) {
        let mut names: Vec<(&str, bool)> = Vec::new();
        let mut rest = window;
        while let Some(end) = rest.rfind(|c: char| c.is_alphanumeric() || c == '_') {
            let end = end + rest[end..].chars().next().map_or(1, char::len_utf8);
            let start = rest[..end]
                .char_indices()
                .rev()
                .take_while(|&(_, c)| c.is_alphanumeric() || c == '_')
                .last()
                .map_or(end, |(at, _)| at);
            let word = &rest[start..end];
            let is_member = rest[..start].ends_with('.');
            rest = &rest[..start];
            let is_identifier =
                word.len() >= 3 && word.starts_with(|c: char| c.is_alphabetic() || c == '_');
            if is_identifier && !names.iter().any(|(name, _)| *name == word) {
                names.push((word, is_member));
            }
            if names.len() >= 200 {
                break;
            }
        }
        let module_names: HashSet<&str> = imported
            .iter()
            .filter_map(|import| import.binds.as_deref())
            .collect();
        for (name, is_member) in names {
            if self.full() {
                return;
            }
            if module_names.contains(name) {
                continue;
            }
            let found = self.index.definitions(name);
            if found.len() > GENERIC_NAME_FILES {
                continue;
            }
            let mut added = 0;
            for found in found {
                if added >= DEFINITIONS_PER_NAME {
                    break;
                }
                let is_member_of_a_type =
                    found.symbol.kind == SymbolKind::Method || found.symbol.parent().is_some();
                if is_member && is_member_of_a_type {
                    // `x.get` with `x` unknown: some type's `get` is a guess, not context.
                    continue;
                }
                added += usize::from(self.add_found(&found));
            }
        }
    }

    /// The other files of the cursor's package (its folder): top-level definitions, those
    /// starting with the word being typed first.
    fn same_package(&mut self, cursor: &AtCursor<'_>) {
        if cursor.is_member {
            return;
        }
        let folder = self.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let files = self.index.files_in_dir(folder, 64);
        let mut symbols: Vec<Found<'_>> = files
            .iter()
            .filter(|file| file.path != self.path)
            .flat_map(|file| file.symbols())
            .filter(|found| found.symbol.parent().is_none() && !found.symbol_path().contains('.'))
            .collect();
        symbols.sort_by_key(|found| !found.name().starts_with(cursor.word));
        for found in symbols {
            if self.full() {
                return;
            }
            self.add_found(&found);
        }
    }
}

fn holds_members(kind: SymbolKind) -> bool {
    matches!(
        kind,
        SymbolKind::Class
            | SymbolKind::Struct
            | SymbolKind::Interface
            | SymbolKind::Trait
            | SymbolKind::Impl
            | SymbolKind::Enum
    )
}

/// A definition as the model sees it: its signature, and its outline when it has one.
pub fn snippet(detail: &Detail) -> String {
    let Detail { signature, outline } = detail;
    if outline.is_empty() {
        signature.clone()
    } else if signature.ends_with('{') {
        format!("{signature} {outline} }}")
    } else if signature.ends_with([':', '=', '(', '[']) {
        format!("{signature} {outline}")
    } else {
        format!("{signature} {{ {outline} }}")
    }
}

/// The indexed files of `module` imported from `from`: a file (`a/b.py`, `./x.ts`), a
/// package's `__init__.py` or `index.ts`, or a Go package's folder. Tried as written, then
/// under each folder above `from` (where `src/` or a project folder roots the imports).
/// Empty for a module outside the workspace.
pub fn module_files<'i>(
    index: &'i Index,
    from: &str,
    language: Language,
    module: &str,
) -> Vec<Entry<'i>> {
    let folder = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    let relative =
        module.starts_with("./") || module.starts_with("../") || module == "." || module == "..";
    let mut stems: Vec<String> = Vec::new();
    if relative {
        if let Some(joined) = join(folder, module) {
            stems.push(joined);
        }
    } else {
        let module = module.trim_start_matches("crate/");
        // Folders above the importing file, nearest first, then the root.
        let mut base = folder;
        loop {
            stems.push(if base.is_empty() {
                module.to_owned()
            } else {
                format!("{base}/{module}")
            });
            match base.rsplit_once('/') {
                Some((up, _)) => base = up,
                None if !base.is_empty() => base = "",
                None => break,
            }
        }
        if language == Language::Go {
            // `example.com/shop/cart`: the package is the folder named by the path's tail.
            let parts: Vec<&str> = module.split('/').collect();
            for skip in 1..parts.len() {
                stems.push(parts[skip..].join("/"));
            }
        }
    }
    let endings: &[&str] = match language {
        Language::Python => &[".py", "/__init__.py"],
        Language::JavaScript | Language::TypeScript | Language::Tsx => &[
            ".ts",
            ".tsx",
            ".js",
            ".jsx",
            ".mjs",
            "/index.ts",
            "/index.tsx",
            "/index.js",
            "",
        ],
        Language::Rust => &[".rs", "/mod.rs"],
        _ => &[],
    };
    for stem in stems.iter().take(16) {
        if language == Language::Go {
            let files = index.files_in_dir(stem, 64);
            if !files.is_empty() {
                return files;
            }
            continue;
        }
        let stem = stem.trim_end_matches(".js");
        for ending in endings {
            if let Some(file) = index.file(&format!("{stem}{ending}")) {
                return vec![file];
            }
        }
    }
    Vec::new()
}

/// `folder` joined with a relative `module` path; `None` when it climbs above the root.
fn join(folder: &str, module: &str) -> Option<String> {
    let mut parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
    for part in module.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The identifiers of `text` with their byte offsets, in order.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = None;
    text.char_indices()
        .chain(std::iter::once((text.len(), ' ')))
        .filter_map(move |(at, c)| {
            let word_char = c.is_alphanumeric() || c == '_';
            match (start, word_char) {
                (None, true) => {
                    start = Some(at);
                    None
                }
                (Some(from), false) => {
                    start = None;
                    Some((from, &text[from..at]))
                }
                _ => None,
            }
        })
}
