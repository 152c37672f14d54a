//! Every language's tags query compiles against its grammar and finds what it should.

use tierls::core::index::extract::{extract, extract_with_query_cursor, parse};
use tierls::core::index::language::Language;
use tierls::core::index::table::Index;
use tierls::core::index::tag_patterns::TagPatterns;

#[test]
fn every_query_compiles_against_its_grammar() {
    for language in Language::ALL {
        let query = language.query().unwrap_or_else(|err| panic!("{err}"));
        let patterns = language.tag_patterns();
        assert!(
            patterns.is_some(),
            "{}: the one-walk matcher does not take this query: {:?}",
            language.name(),
            TagPatterns::compile(&language.grammar(), &language.query_source()).err()
        );
        let names = query.capture_names();
        assert!(
            names.contains(&"name"),
            "{}: no @name capture",
            language.name()
        );
        for name in names {
            let known = *name == "name"
                || *name == "container"
                || name.starts_with("definition.")
                || name.starts_with("reference.");
            assert!(known, "{}: unknown capture @{name}", language.name());
        }
    }
}

/// One line per definition (kind, qualified path, line, signature), then the references.
/// Every name and path also reads back the same from the index, which keeps names by id
/// and rebuilds paths from the parents' names.
fn check(language: Language, source: &str) -> String {
    let tree = parse(language, source, None).unwrap();
    let found = extract(language, &tree, source);
    assert_eq!(
        found,
        extract_with_query_cursor(language, &tree, source),
        "the one-walk matcher finds what tree-sitter's query cursor finds"
    );
    let mut index = Index::default();
    index.upsert("file", language, found.clone(), source.len());
    let indexed: Vec<(String, String)> = (index.file("file").unwrap().symbols())
        .map(|symbol| (symbol.name().to_owned(), symbol.symbol_path().into_owned()))
        .collect();
    let extracted: Vec<(String, String)> = (found.symbols.iter())
        .map(|symbol| (symbol.name().to_owned(), symbol.path().to_owned()))
        .collect();
    assert_eq!(
        indexed, extracted,
        "names and paths as the index reads them"
    );
    let line_of = |offset: usize| source[..offset].matches('\n').count() + 1;
    let mut lines: Vec<String> = found
        .symbols
        .iter()
        .enumerate()
        .map(|(index, symbol)| {
            let body = symbol.body().as_ref().map_or(String::new(), |body| {
                format!(" body {}-{}", line_of(body.start), line_of(body.end))
            });
            format!(
                "{:<9} {:<24} line {}{body}  `{}`",
                symbol.kind.name(),
                symbol.path(),
                line_of(symbol.range().start),
                found.detail(index).signature
            )
        })
        .collect();
    let mut references: Vec<&str> = found.uses().map(|(name, _)| name).collect();
    references.sort_unstable();
    references.dedup();
    lines.push(format!("references: {}", references.join(" ")));
    if found.has_errors {
        lines.push("(syntax errors)".into());
    }
    lines.join("\n")
}

#[test]
fn rust() {
    let source = r#"
mod geometry {
    pub trait Shape { fn area(&self) -> f64; }
    pub struct Circle { radius: f64 }
    impl Shape for Circle {
        fn area(&self) -> f64 { std::f64::consts::PI * square(self.radius) }
    }
    impl<T> Wrapper<T> { pub fn new(value: T) -> Self { Wrapper { value } } }
}
const LIMIT: usize = 3;
fn square(x: f64) -> f64 { x * x }
macro_rules! twice { ($e:expr) => { $e; $e }; }
enum Kind { A, B }
type Alias = Vec<Kind>;
"#;
    insta::assert_snapshot!("rust", check(Language::Rust, source));
}

#[test]
fn python() {
    let source = r#"
import os

LIMIT = 3

class Shape:
    def area(self):
        raise NotImplementedError

class Circle(Shape):
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return square(self.radius) * 3.14

def square(x):
    return x * x
"#;
    insta::assert_snapshot!("python", check(Language::Python, source));
}

#[test]
fn javascript() {
    let source = r#"
class Shape { area() { return 0; } }
class Circle extends Shape {
  constructor(r) { super(); this.r = r; }
  area() { return square(this.r) * Math.PI; }
}
function square(x) { return x * x; }
const cube = (x) => x * square(x);
const circle = new Circle(2);
"#;
    insta::assert_snapshot!("javascript", check(Language::JavaScript, source));
}

#[test]
fn typescript() {
    let source = r#"
interface Shape { area(): number; }
type Radius = number;
enum Kind { Round, Square }
namespace Geometry { export function unit(): number { return 1; } }
class Circle implements Shape {
  constructor(private r: Radius) {}
  area(): number { return square(this.r) * Math.PI; }
}
function square(x: number): number { return x * x; }
"#;
    insta::assert_snapshot!("typescript", check(Language::TypeScript, source));
}

#[test]
fn tsx() {
    let source = r#"
interface Props { label: string }
function Button(props: Props) { return <button>{props.label}</button>; }
export const App = () => <Button label="ok" />;
"#;
    insta::assert_snapshot!("tsx", check(Language::Tsx, source));
}

#[test]
fn go() {
    let source = r#"
package shapes

const Limit = 3

type Shape interface { Area() float64 }
type Circle struct { Radius float64 }
type Meters float64

func (c *Circle) Area() float64 { return square(c.Radius) * 3.14 }
func square(x float64) float64 { return x * x }
"#;
    insta::assert_snapshot!("go", check(Language::Go, source));
}

#[test]
fn c() {
    let source = r#"
#define LIMIT 3
#define SQUARE(x) ((x) * (x))
struct circle { double radius; };
typedef struct circle circle_t;
enum kind { ROUND, SQUARE_KIND };
double area(const circle_t *c);
double area(const circle_t *c) { return SQUARE(c->radius) * 3.14; }
static char *name(void) { return "circle"; }
"#;
    insta::assert_snapshot!("c", check(Language::C, source));
}

#[test]
fn cpp() {
    let source = r#"
namespace geometry {
class Circle {
 public:
  double area() const { return square(radius) * 3.14; }
  double perimeter() const;
 private:
  double radius;
};
double square(double x) { return x * x; }
}
double geometry::Circle::perimeter() const { return 2 * 3.14 * radius; }
"#;
    insta::assert_snapshot!("cpp", check(Language::Cpp, source));
}

#[test]
fn java() {
    let source = r#"
package shapes;

interface Shape { double area(); }
enum Kind { ROUND, SQUARE }
record Point(double x, double y) {}
public class Circle implements Shape {
    private final double radius;
    public Circle(double radius) { this.radius = radius; }
    public double area() { return Util.square(radius) * Math.PI; }
}
"#;
    insta::assert_snapshot!("java", check(Language::Java, source));
}

/// Module-level constants and variables are definitions (completions need configuration
/// tables and defaults); function-valued ones stay functions, and locals are not indexed.
#[test]
fn module_level_constants_and_variables() {
    let typescript = r#"
export const DEFAULT_OPTIONS = { retries: 3, timeout: 500 };
const LIMIT = 10, NAME = "tierls";
let counter = 0;
var legacy = true;
export let current: string | null = null;
export const handler = (event: Event) => event.type;
function run() {
  const local = 1;
  let inner = local + LIMIT;
}
"#;
    let go = r#"
package config

var Timeout = 30
var (
	Retries = 3
	Hosts   []string
)
const Version = "1.0"

func Load() {
	var local = 1
	_ = local
}
"#;
    let javascript = "const table = { a: 1 };
export var loose = 2;
const fn = function () {};
if (x) { const nested = 3; }
";
    let shown = [
        check(Language::TypeScript, typescript),
        check(Language::Go, go),
        check(Language::JavaScript, javascript),
    ]
    .join("\n---\n");
    insta::assert_snapshot!("module_level_constants_and_variables", shown);
}

#[test]
fn syntax_errors_everywhere_keep_what_is_found() {
    let source = "fn good() -> u32 { 1 }\nfn broken( { let = ; }\nstruct Fine { x: u32 }\nimpl {{{ \nfn also_good() {}\n";
    insta::assert_snapshot!("broken_rust", check(Language::Rust, source));
}

#[test]
fn languages_from_paths_and_lsp_ids() {
    let paths = [
        "a.rs", "b.PY", "c.tsx", "d.ts", "e.jsx", "f.go", "g.h", "h.hpp", "i.java", "j.txt",
        "Makefile", "k.",
    ];
    let found: Vec<String> = paths
        .iter()
        .map(|path| {
            format!(
                "{path}={}",
                Language::from_path(path).map_or("-", Language::name)
            )
        })
        .collect();
    assert_eq!(
        found.join(" "),
        "a.rs=rust b.PY=python c.tsx=tsx d.ts=typescript e.jsx=javascript f.go=go g.h=c h.hpp=cpp i.java=java j.txt=- Makefile=- k.=-"
    );
    assert_eq!(
        Language::from_lsp_id("typescriptreact"),
        Some(Language::Tsx)
    );
    assert_eq!(Language::from_lsp_id("plaintext"), None);
}

/// The one-walk matcher against tree-sitter's query cursor on every file of the test
/// fixtures and on code that makes a pattern match more than one way (several receivers,
/// declarators, parameters), nests deeply, or is broken: the same symbols and references.
#[test]
fn the_one_walk_matcher_finds_what_the_query_cursor_finds() {
    let mut sources: Vec<(Language, String, String)> = Vec::new();
    for entry in walkdir::WalkDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")) {
        let entry = entry.unwrap();
        let path = entry.path().to_string_lossy().into_owned();
        if let Some(language) = Language::from_path(&path)
            && let Ok(text) = std::fs::read_to_string(entry.path())
        {
            sources.push((language, path, text));
        }
    }
    let deep = format!("fn f() {{ {}1{} }}", "(".repeat(3000), ")".repeat(3000));
    let tricky = [
        (
            Language::Go,
            "package p\nfunc (a A, b *B[T]) M() {}\nfunc (*) N() {}\nvar x, y = 1, f(2)",
        ),
        (
            Language::C,
            "int f(void), *g(int), h;\nstruct S { int (*cb)(void); } s;\n#define M(x) x\nvoid k(void) { f(); s.cb(); }",
        ),
        (
            Language::Cpp,
            "namespace a { struct B { void c(); }; }\nvoid a::B::c() { d(); }\nvoid x::y::z() {}\nint main() { a::B b; b.c(); a::e(); }",
        ),
        (
            Language::TypeScript,
            "export const a = () => 1, b = 2;\nlet c = function() {}, d;\nclass E<T> extends F { g(): H { return new I(); } }",
        ),
        (
            Language::Tsx,
            "const A = () => <B><C.D /></B>;\nfunction E() { return <F x={g()} />; }",
        ),
        (
            Language::JavaScript,
            "var a = () => 1, b = function() {};\nexport let c = 1;\nnew D(); e.f(); g();",
        ),
        (
            Language::Python,
            "class A(B, C.D, E):\n    def f(self): g(); self.h()\nX = 1\nX, Y = 2, 3",
        ),
        (
            Language::Java,
            "class A<T> extends B { A() { new C<T>(); d(); } record R(int x) {} @interface N {} }",
        ),
        (
            Language::Rust,
            "impl<T> a::B<T> for C { fn d() { e(); f.g(); h::i(); j!(); } }\nmacro_rules! k { () => {} }",
        ),
        (Language::Rust, deep.as_str()),
        (
            Language::C,
            "struct { int x; ) f( { g(; }} typedef int;\n#define\nvoid h() { i(); ",
        ),
        (Language::Go, "func (r ) ( { type T struct { x( } var = f("),
    ];
    for (language, text) in tricky {
        sources.push((language, format!("({})", language.name()), text.to_owned()));
    }
    assert!(sources.len() > 20, "the fixtures hold source files");
    let mut languages = std::collections::BTreeSet::new();
    for (language, path, text) in &sources {
        // Else `extract` would run the query cursor too, and agree with itself.
        assert!(language.tag_patterns().is_some(), "{}", language.name());
        let tree = parse(*language, text, None).unwrap();
        let found = extract(*language, &tree, text);
        assert_eq!(
            found,
            extract_with_query_cursor(*language, &tree, text),
            "{path}: the one-walk matcher and the query cursor differ"
        );
        languages.insert(language.name());
    }
    assert_eq!(languages.len(), Language::ALL.len(), "every language seen");
}

/// What the one-walk matcher does not do is refused with the reason, and extraction then
/// runs tree-sitter's query cursor; what it does is read.
#[test]
fn the_one_walk_matcher_refuses_what_it_does_not_do() {
    let grammar = Language::Rust.grammar();
    let refused = |query: &str| match TagPatterns::compile(&grammar, query) {
        Ok(_) => panic!("taken: {query}"),
        Err(why) => format!("{query} => {why}"),
    };
    let shown = [
        "(function_item name: (identifier) @name)*",
        "(function_item . (identifier) @name)",
        "((identifier) @name (#eq? @name \"main\"))",
        "(function_item !name)",
        "(_expression) @name",
        "[(function_item) (struct_item)] @definition.function",
        "(_) @name",
        "(function_item nonsense: (identifier) @name)",
        "(no_such_node) @name",
        "(function_item name: (identifier) @name",
        "(function_item \"fn\\x\" @name)",
        "(ERROR) @name",
    ]
    .map(refused)
    .join("\n");
    insta::assert_snapshot!("one_walk_matcher_refuses", shown);
    let taken = TagPatterns::compile(
        &grammar,
        "; a comment\n(function_item name: (identifier) @name) @definition.function\n(impl_item type: [(type_identifier) @name (generic_type type: (_) @name)] \"for\"?) @x",
    );
    assert_eq!(
        taken.err().as_deref(),
        Some("a quantifier (line 3 of the query)")
    );
    let taken = TagPatterns::compile(
        &grammar,
        "; a comment\n(function_item name: (identifier) @name) @definition.function\n(impl_item type: [(type_identifier) @name (generic_type type: (_) @name)]) @x",
    )
    .unwrap();
    assert_eq!(taken.pattern_count(), 2);
}
