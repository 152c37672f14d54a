//! The completion context chosen for the cursor: which definitions reach the prompt for
//! holes cut in the quality fixture, and the hostile cases, without a model.

use std::path::Path;

use tierls::core::completion::{CompletionInput, plan_completion};
use tierls::core::holes::{Hole, cut_holes, prompt_has_definition};
use tierls::core::index::language::Language;
use tierls::core::index::table::Index;

use crate::support::index_source;

/// The fixture repository's files, indexed, with their texts.
fn fixture() -> (Index, Vec<(String, Language, String)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quality");
    let mut index = Index::default();
    let mut files = Vec::new();
    let mut paths = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    for path in &paths {
        let Some(language) = Language::from_path(&path.to_string_lossy()) else {
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let key = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        index_source(&mut index, &key, language, &text);
        files.push((key, language, text));
    }
    (index, files)
}

fn recalled(index: &Index, hole: &Hole, full: &str) -> bool {
    let text = hole.text(full);
    let plan = plan_completion(&CompletionInput {
        path: &hole.path,
        language: Some(hole.language),
        text: &text,
        offset: hole.offset,
        index,
        has_fim: false,
        budget_bytes: 6000,
        recent_edits: &[],
    });
    prompt_has_definition(index, &plan, &hole.path, &hole.needed)
}

#[test]
fn the_needed_definition_reaches_the_prompt_for_most_holes() {
    let (index, files) = fixture();
    let mut report = String::new();
    let (mut holes, mut found) = (0, 0);
    for (path, language, text) in &files {
        for hole in cut_holes(&index, path, *language, text) {
            holes += 1;
            if recalled(&index, &hole, text) {
                found += 1;
            } else {
                report.push_str(&format!(
                    "missed {} at {}{}: {}\n",
                    hole.needed,
                    hole.path,
                    if hole.mid_word { " (mid-word)" } else { "" },
                    hole.expected
                ));
            }
        }
    }
    assert!(holes >= 60, "{holes} holes");
    assert!(found * 100 >= holes * 80, "{found} of {holes}\n{report}");
}

/// The context lines the prompt gets for the cursor `$0` in `cursor_file`, with `files`
/// indexed beside it.
fn check_context(files: &[(&str, &str)], cursor_file: (&str, &str)) -> String {
    let mut index = Index::default();
    for (path, source) in files {
        let language = Language::from_path(path).unwrap();
        index_source(&mut index, path, language, source);
    }
    let (path, source) = cursor_file;
    let offset = source.find("$0").expect("a $0 cursor");
    let text = source.replace("$0", "");
    let language = Language::from_path(path).unwrap();
    index_source(&mut index, path, language, &text);
    let rope = ropey::Rope::from_str(&text);
    let plan = plan_completion(&CompletionInput {
        path,
        language: Some(language),
        text: &rope,
        offset,
        index: &index,
        has_fim: false,
        budget_bytes: 6000,
        recent_edits: &[],
    });
    let tierls::core::generation::Prompt::Text(prompt) = plan.prompt else {
        panic!("a text prompt without FIM tokens");
    };
    let context: Vec<&str> = prompt
        .lines()
        .take_while(|line| line.starts_with("// ") || line.starts_with("# "))
        .collect();
    format!(
        "{path} at {:?}:\n{}\n",
        &source[..offset].lines().last().unwrap_or_default(),
        context.join("\n")
    )
}

const CART: &str = "package shop\n\ntype Cart struct {\n\tCustomer string\n\tLines    []Line\n}\n\nfunc NewCart(customer string) *Cart {\n\treturn &Cart{Customer: customer}\n}\n\nfunc (c *Cart) AddLine(id string, quantity int) error {\n\treturn nil\n}\n\nfunc (c *Cart) TotalCents() int64 {\n\treturn 0\n}\n\nconst MaxLines = 50\n";

const STORE: &str = "class JsonStore:\n    def __init__(self, directory):\n        self.directory = directory\n\n    def save(self, warehouse):\n        pass\n\n    def load(self, name):\n        return None\n\n\nclass Cache:\n    def get(self, key):\n        return None\n";

const PRICING: &str = "TAX_RATE = 0.2\n\n\ndef apply_discount(price, percent):\n    return price\n\n\ndef format_price(amount):\n    return str(amount)\n";

/// Each source of context, one cursor each: the receiver's type from how it was made, a
/// Go receiver's type and its methods beside it, a module imported whole, a module in
/// TypeScript, the name being typed, the names imported, the package's other files.
#[test]
fn each_context_source_for_its_cursor() {
    let mut shown = String::new();
    shown += &check_context(
        &[("app/store.py", STORE)],
        (
            "app/main.py",
            "from app.store import JsonStore\n\n\ndef main():\n    store = JsonStore(\"/tmp\")\n    store.sa$0\n",
        ),
    );
    shown += &check_context(
        &[("shop/cart.go", CART)],
        (
            "shop/checkout.go",
            "package shop\n\nfunc Checkout(c *Cart) int64 {\n\treturn c.$0\n}\n",
        ),
    );
    shown += &check_context(
        &[("shop/cart.go", CART)],
        (
            "shop/sale.go",
            "package shop\n\nfunc Sale() {\n\tcart := NewCart(\"ann\")\n\tcart.Add$0\n}\n",
        ),
    );
    shown += &check_context(
        &[("inventory/pricing.py", PRICING)],
        (
            "inventory/report.py",
            "from inventory import pricing\n\n\ndef total(price):\n    return pricing.$0\n",
        ),
    );
    shown += &check_context(
        &[(
            "src/format.ts",
            "export function formatTask(task: Task): string {\n  return task.title;\n}\n\nexport const WIDTH = 80;\n",
        )],
        (
            "src/main.ts",
            "import * as format from \"./format\";\n\nfunction show(task) {\n  console.log(format.fo$0);\n}\n",
        ),
    );
    shown += &check_context(
        &[(
            "src/units.rs",
            "pub const MILLIMETRES_PER_INCH: f64 = 25.4;\n\npub fn to_millimetres(value: f64) -> f64 {\n    value * MILLIMETRES_PER_INCH\n}\n",
        )],
        ("src/main.rs", "fn main() {\n    let width = to_mil$0\n}\n"),
    );
    shown += &check_context(
        &[("inventory/pricing.py", PRICING)],
        (
            "inventory/report.py",
            "from inventory.pricing import apply_discount, TAX_RATE\n\n\ndef total(price):\n    gross = price * (1 + TAX_RATE)\n    return $0\n",
        ),
    );
    shown += &check_context(
        &[("shop/cart.go", CART)],
        (
            "shop/limits.go",
            "package shop\n\nfunc Full(lines int) bool {\n\treturn lines >= $0\n}\n",
        ),
    );
    insta::assert_snapshot!(shown);
}

/// Receivers the index cannot know, a name defined in many files, a module outside the
/// workspace, two modules importing each other: nothing unrelated comes in, nothing breaks.
#[test]
fn unknown_receivers_and_modules_bring_nothing_unrelated() {
    let mut files: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("lib/m{i}.py"),
                format!("class Thing{i}:\n    def get(self, key):\n        return key\n"),
            )
        })
        .collect();
    files.push((
        "app/a.py".into(),
        "from app import b\n\n\ndef left():\n    return b.right()\n".into(),
    ));
    files.push((
        "app/b.py".into(),
        "from app import a\n\n\ndef right():\n    return a.left()\n".into(),
    ));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, s)| (p.as_str(), s.as_str()))
        .collect();
    let shown = check_context(
        &files,
        (
            "app/main.py",
            "import numpy as np\nfrom app import a\n\n\ndef run(data):\n    x = np.$0\n",
        ),
    );
    assert!(!shown.contains("get"), "{shown}");
    let shown = check_context(
        &files,
        ("app/main.py", "def run(data):\n    return data.get$0\n"),
    );
    assert!(!shown.contains("def get"), "{shown}");
    let shown = check_context(
        &files,
        (
            "app/c.py",
            "from app import a\n\n\ndef run():\n    return a.$0\n",
        ),
    );
    assert!(shown.contains("def left()"), "{shown}");
    assert!(
        !shown.contains("def right()"),
        "imports are never followed: {shown}"
    );
}

/// A 2,000-file workspace, a file with 5,000 imports, a method defined in 200 files: every
/// cursor's prompt stays within its budget and the context within its share.
#[test]
fn hostile_workspaces_keep_the_prompt_within_its_budget() {
    let (index, text, cursors) = tierls::core::holes::large_index_case(2000);
    let rope = ropey::Rope::from_str(&text);
    for offset in cursors {
        for budget in [400, 6000] {
            let plan = plan_completion(&CompletionInput {
                path: "src/app/main.py",
                language: Some(Language::Python),
                text: &rope,
                offset,
                index: &index,
                has_fim: true,
                budget_bytes: budget,
                recent_edits: &[],
            });
            let tierls::core::generation::Prompt::Fim {
                prefix,
                suffix,
                context,
            } = plan.prompt
            else {
                panic!("a FIM prompt");
            };
            let total = prefix.len() + suffix.len() + context.comments.len();
            assert!(total <= budget, "{total} > {budget} at {offset}");
            assert!(context.comments.len() <= budget / 4, "{}", context.comments);
            assert!(
                !context.comments.contains(": def get"),
                "{}",
                context.comments
            );
        }
    }
}

/// How the text at the cursor and a file's imports are read, for each language.
#[test]
fn cursors_receivers_and_imports_as_read() {
    use tierls::core::completion::cursor::{at_cursor, receiver_types};
    use tierls::core::completion::imports::imports;
    let mut shown = String::new();
    for line in [
        "    store.sa",
        "self.items.ge",
        "x = Sheet::",
        "f().va",
        "  return to_mil",
        "a?.b",
        "naïve_to",
        "",
    ] {
        shown += &format!("{line:?} -> {:?}\n", at_cursor(line));
    }
    let code = "cart := shop.NewCart(name)\nvar total Money\nlet sheet = Sheet::new(1.0);\nconst board = new TaskBoard();\nitem: Item = load()\nfunc (c *Cart) Add() {\n";
    for receiver in ["cart", "total", "sheet", "board", "item", "c", "unknown"] {
        shown += &format!("{receiver}: {:?}\n", receiver_types(code, receiver));
    }
    let files = [
        (
            Language::Python,
            "import os.path\nimport numpy as np\nfrom . import sibling\nfrom ..pkg.mod import (\n    a,\n    b as c,\n)\nfrom inventory.models import Item, Warehouse\n",
        ),
        (
            Language::TypeScript,
            "import Board from \"./board\";\nimport * as fmt from './format';\nimport {\n  Task,\n  type Priority as P,\n} from \"../types\";\nimport \"./side-effect\";\nconst { readFile: read } = require(\"fs\");\n",
        ),
        (
            Language::Go,
            "package main\n\nimport \"fmt\"\nimport (\n\tstore \"example.com/app/internal/store\"\n\t_ \"embed\"\n\t\"example.com/app/shop\"\n)\n",
        ),
        (
            Language::Rust,
            "mod sheet;\nuse crate::units::{self, Unit, to_millimetres as mm};\nuse super::shapes::Circle;\nuse std::{collections::HashMap, io};\n",
        ),
    ];
    for (language, text) in files {
        shown += &format!("{}:\n", language.name());
        for import in imports(language, text) {
            shown += &format!("  {import:?}\n");
        }
    }
    insta::assert_snapshot!(shown);
}
