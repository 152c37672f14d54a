//! Holes for measuring completions: places in a repository where the rest of a line uses a
//! name defined in another file, cut the way a user meets them (at the start of the name, or
//! in the middle of it), and how an answer is scored against the line's real text.

use ropey::Rope;

use super::completion::CompletionPlan;
use super::generation::Prompt;
use super::index::language::Language;
use super::index::table::Index;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hole {
    pub path: String,
    pub language: Language,
    /// The cursor, as a byte offset into the file's text.
    pub offset: usize,
    /// What the rest of the line really says.
    pub expected: String,
    /// The name defined in another file that the line needs.
    pub needed: String,
    /// Whether the cursor is inside the name rather than at its start.
    pub mid_word: bool,
}

impl Hole {
    /// The file as the user has it at the hole: the rest of the line not yet written.
    pub fn text(&self, full: &str) -> Rope {
        let line_end = full[self.offset..]
            .find('\n')
            .map_or(full.len(), |at| self.offset + at);
        let mut text = String::with_capacity(full.len());
        text.push_str(&full[..self.offset]);
        text.push_str(&full[line_end..]);
        Rope::from_str(&text)
    }
}

/// Lines that only bring names in: their names are where they come from, not a use.
fn is_import_line(line: &str) -> bool {
    let line = line.trim_start();
    [
        "import ", "from ", "use ", "mod ", "package ", "export {", "#include",
    ]
    .iter()
    .any(|start| line.starts_with(start))
}

fn is_comment_line(line: &str) -> bool {
    let line = line.trim_start();
    ["//", "#", "/*", "*", "\"\"\""]
        .iter()
        .any(|start| line.starts_with(start))
}

/// Every hole of `path`: on each line, the first name that another file defines, cut at its
/// start, and (for names of four or more letters) in its middle.
pub fn cut_holes(index: &Index, path: &str, language: Language, text: &str) -> Vec<Hole> {
    let mut holes = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let start = line_start;
        line_start += line.len();
        if is_import_line(line) || is_comment_line(line) {
            continue;
        }
        let Some((at, name)) = words(line).find(|(at, name)| {
            // A definition's own name is not a use of it.
            let preceded = line[..*at].trim_end();
            let defines = [
                "fn",
                "def",
                "func",
                "function",
                "class",
                "struct",
                "type",
                "interface",
                "const",
                "let",
                "var",
            ]
            .iter()
            .any(|keyword| preceded.ends_with(keyword));
            !defines
                && index
                    .definitions(name)
                    .iter()
                    .any(|found| found.path != path && found.language == language)
        }) else {
            continue;
        };
        let expected = line[at..].trim_end().to_owned();
        holes.push(Hole {
            path: path.to_owned(),
            language,
            offset: start + at,
            expected,
            needed: name.to_owned(),
            mid_word: false,
        });
        if name.len() >= 4 && name.is_ascii() {
            let inside = name.len() / 2;
            holes.push(Hole {
                path: path.to_owned(),
                language,
                offset: start + at + inside,
                expected: line[at + inside..].trim_end().to_owned(),
                needed: name.to_owned(),
                mid_word: true,
            });
        }
    }
    holes
}

/// Identifiers of `line` with their byte offsets; words inside string literals count too
/// (a crude split is enough to find holes).
fn words(line: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut found = Vec::new();
    let mut start = None;
    for (at, c) in line
        .char_indices()
        .chain(std::iter::once((line.len(), ' ')))
    {
        let word_char = c.is_alphanumeric() || c == '_';
        match (start, word_char) {
            (None, true) => start = Some(at),
            (Some(from), false) => {
                let word = &line[from..at];
                if word.starts_with(|c: char| c.is_alphabetic() || c == '_') {
                    found.push((from, word));
                }
                start = None;
            }
            _ => {}
        }
    }
    found.into_iter()
}

/// Whether `plan`'s prompt holds a definition of `name` from a file other than `path`: its
/// signature, as the index has it (alone or in its type's outline).
pub fn prompt_has_definition(index: &Index, plan: &CompletionPlan, path: &str, name: &str) -> bool {
    let prompt = match &plan.prompt {
        Prompt::Text(text) => text.as_str(),
        Prompt::Fim { context, .. } => context.comments.as_str(),
        Prompt::Chat(_) => return false,
    };
    index
        .definitions(name)
        .iter()
        .filter(|found| found.path != path)
        .any(|found| {
            // An outline lists a member without the `:` or `{` that opens its body.
            let signature = found.detail().signature;
            prompt.contains(signature.trim_end_matches(['{', ':', ' ']))
        })
}

/// 1 minus the edit distance over the longer length, by characters: 1.0 is the same text.
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &left) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &right) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(left != right);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    1.0 - previous[b.len()] as f64 / longest as f64
}

/// A synthetic Python workspace of `files` files for the prompt build's hostile cases: a
/// method `get` defined in 200 of them, and a file `src/app/main.py` with 5,000 imports, an
/// import of a module outside the workspace, two modules that import each other, and
/// cursors after an unknown receiver, a known one, a module outside, in a half-typed name.
/// Returns the index, the main file's text and its cursors.
pub fn large_index_case(files: usize) -> (Index, String, Vec<usize>) {
    let mut index = Index::default();
    let add = |index: &mut Index, path: &str, text: &str| {
        if let Some(tree) = super::index::extract::parse(Language::Python, text, None) {
            let symbols = super::index::extract::extract(Language::Python, &tree, text);
            index.upsert(path, Language::Python, symbols, text.len());
        }
    };
    for i in 0..files {
        let getter = if i % (files / 200).max(1) == 0 {
            "    def get(self, key):\n        return self.items[key]\n"
        } else {
            ""
        };
        let text = format!(
            "from pkg.mod{next} import helper_{next}\n\n\nclass Service{i}:\n    retries = 3\n{getter}    def process_{i}(self, item):\n        return helper_{next}(item)\n\n\ndef helper_{i}(value):\n    return value\n\n\nCONFIG_{i} = {{\"retries\": {i}}}\n",
            next = (i + 1) % files
        );
        add(&mut index, &format!("pkg/mod{i}.py"), &text);
    }
    add(
        &mut index,
        "src/app/cycle_a.py",
        "from app import cycle_b\n\n\ndef left():\n    return cycle_b.right()\n",
    );
    add(
        &mut index,
        "src/app/cycle_b.py",
        "from app import cycle_a\n\n\ndef right():\n    return cycle_a.left()\n",
    );
    let mut text = String::from("import numpy as np\nfrom app import cycle_a\n");
    for i in 0..5000 {
        let module = i % files.max(1);
        text.push_str(&format!(
            "from pkg.mod{module} import helper_{module}, Service{module}\n"
        ));
    }
    text.push_str("\n\nclass Main:\n    def __init__(self):\n        self.service = Service7()\n\n    def run(self, thing):\n");
    let mut cursors = Vec::new();
    for line in [
        "        value = np.",
        "        other = thing.",
        "        result = self.service.",
        "        data = self.service.get(",
        "        cycle = cycle_a.",
        "        x = helper_12",
        "        y = proc",
        "        ",
    ] {
        text.push_str(line);
        cursors.push(text.len());
        text.push('\n');
    }
    add(&mut index, "src/app/main.py", &text);
    (index, text, cursors)
}
