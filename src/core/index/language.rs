//! The language table: adding a language is one row here (its grammar crate, file extensions
//! and LSP id) plus `queries/<name>/tags.scm`.

use std::sync::OnceLock;

use tree_sitter::{Query, QueryError};

use super::tag_patterns::TagPatterns;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    C,
    Cpp,
    Java,
}

struct Spec {
    name: &'static str,
    extensions: &'static [&'static str],
    /// LSP `languageId`s that mean this language.
    lsp_ids: &'static [&'static str],
    grammar: tree_sitter_language::LanguageFn,
    query: &'static str,
    /// Joins the parts of a qualified path: `Type::method` or `Class.method`.
    separator: &'static str,
    /// What starts a line comment.
    line_comment: &'static str,
}

const fn spec(language: Language) -> &'static Spec {
    &SPECS[language as usize]
}

static SPECS: [Spec; 9] = [
    Spec {
        name: "rust",
        extensions: &["rs"],
        lsp_ids: &["rust"],
        grammar: tree_sitter_rust::LANGUAGE,
        query: include_str!("../../../queries/rust/tags.scm"),
        separator: "::",
        line_comment: "//",
    },
    Spec {
        name: "python",
        extensions: &["py", "pyi"],
        lsp_ids: &["python"],
        grammar: tree_sitter_python::LANGUAGE,
        query: include_str!("../../../queries/python/tags.scm"),
        separator: ".",
        line_comment: "#",
    },
    Spec {
        name: "javascript",
        extensions: &["js", "mjs", "cjs", "jsx"],
        lsp_ids: &["javascript", "javascriptreact"],
        grammar: tree_sitter_javascript::LANGUAGE,
        query: include_str!("../../../queries/javascript/tags.scm"),
        separator: ".",
        line_comment: "//",
    },
    Spec {
        name: "typescript",
        extensions: &["ts", "mts", "cts"],
        lsp_ids: &["typescript"],
        grammar: tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
        query: include_str!("../../../queries/typescript/tags.scm"),
        separator: ".",
        line_comment: "//",
    },
    Spec {
        name: "tsx",
        extensions: &["tsx"],
        lsp_ids: &["typescriptreact"],
        grammar: tree_sitter_typescript::LANGUAGE_TSX,
        query: include_str!("../../../queries/tsx/tags.scm"),
        separator: ".",
        line_comment: "//",
    },
    Spec {
        name: "go",
        extensions: &["go"],
        lsp_ids: &["go"],
        grammar: tree_sitter_go::LANGUAGE,
        query: include_str!("../../../queries/go/tags.scm"),
        separator: ".",
        line_comment: "//",
    },
    Spec {
        name: "c",
        extensions: &["c", "h"],
        lsp_ids: &["c"],
        grammar: tree_sitter_c::LANGUAGE,
        query: include_str!("../../../queries/c/tags.scm"),
        separator: "::",
        line_comment: "//",
    },
    Spec {
        name: "cpp",
        extensions: &[
            "cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "h++", "ipp", "tpp",
        ],
        lsp_ids: &["cpp", "cuda-cpp"],
        grammar: tree_sitter_cpp::LANGUAGE,
        query: include_str!("../../../queries/cpp/tags.scm"),
        separator: "::",
        line_comment: "//",
    },
    Spec {
        name: "java",
        extensions: &["java"],
        lsp_ids: &["java"],
        grammar: tree_sitter_java::LANGUAGE,
        query: include_str!("../../../queries/java/tags.scm"),
        separator: ".",
        line_comment: "//",
    },
];

impl Language {
    pub const ALL: [Language; 9] = [
        Language::Rust,
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
        Language::Go,
        Language::C,
        Language::Cpp,
        Language::Java,
    ];

    pub fn name(self) -> &'static str {
        spec(self).name
    }

    pub fn from_name(name: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|language| language.name() == name)
    }

    /// By file extension (case-insensitive).
    pub fn from_path(path: &str) -> Option<Language> {
        let file_name = path.rsplit(['/', '\\']).next()?;
        let (_, extension) = file_name.rsplit_once('.')?;
        let extension = extension.to_ascii_lowercase();
        Language::ALL
            .into_iter()
            .find(|language| spec(*language).extensions.contains(&extension.as_str()))
    }

    pub fn from_lsp_id(id: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|language| spec(*language).lsp_ids.contains(&id))
    }

    pub fn grammar(self) -> tree_sitter::Language {
        tree_sitter::Language::new(spec(self).grammar)
    }

    pub fn separator(self) -> &'static str {
        spec(self).separator
    }

    /// What starts a line comment (`//`, `#`).
    pub fn line_comment(self) -> &'static str {
        spec(self).line_comment
    }

    /// The query text, with the queries it `; inherits:` appended after its own patterns
    /// (so that its own patterns win where both match).
    pub fn query_source(self) -> String {
        let own = spec(self).query;
        let mut source = own.to_owned();
        for line in own.lines().take_while(|line| line.starts_with(';')) {
            if let Some(parents) = line.strip_prefix("; inherits:") {
                for parent in parents
                    .split(',')
                    .filter_map(|name| Language::from_name(name.trim()))
                {
                    source.push('\n');
                    source.push_str(&parent.query_source());
                }
            }
        }
        source
    }

    /// The compiled tags query, built once per process; the error names the query file,
    /// the row and the column.
    pub fn query(self) -> Result<&'static Query, String> {
        static QUERIES: [OnceLock<Result<Query, String>>; 9] = [const { OnceLock::new() }; 9];
        QUERIES[self as usize]
            .get_or_init(|| {
                Query::new(&self.grammar(), &self.query_source()).map_err(|err: QueryError| {
                    format!("queries/{}/tags.scm (with what it inherits): row {}, column {}: {:?} error: {}", self.name(), err.row + 1, err.column + 1, err.kind, err.message)
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The tags query compiled for one walk of the tree (see `tag_patterns`), built once per
    /// process; `None` when the query uses more than that matcher does (or does not compile),
    /// and extraction runs tree-sitter's query cursor instead.
    pub fn tag_patterns(self) -> Option<&'static TagPatterns> {
        static PATTERNS: [OnceLock<Option<TagPatterns>>; 9] = [const { OnceLock::new() }; 9];
        PATTERNS[self as usize]
            .get_or_init(|| {
                let query = self.query().ok()?;
                let patterns = TagPatterns::compile(&self.grammar(), &self.query_source()).ok()?;
                (patterns.pattern_count() == query.pattern_count()).then_some(patterns)
            })
            .as_ref()
    }
}
