//! The editor integrations and the server agree: every language an editor starts tierls
//! for is one the server knows by that editor's language id, and every language the server
//! indexes is one each editor starts it for.

use std::path::Path;

use tierls::core::index::language::Language;

fn editor_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("editors")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn vscode_ids() -> Vec<String> {
    let package: serde_json::Value =
        serde_json::from_str(&editor_file("vscode/package.json")).unwrap();
    package["activationEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| {
            event
                .as_str()?
                .strip_prefix("onLanguage:")
                .map(str::to_owned)
        })
        .collect()
}

fn neovim_ids() -> Vec<String> {
    let lua = editor_file("neovim/lua/tierls/init.lua");
    let list = lua
        .split("filetypes = {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    list.split(',')
        .map(|id| id.trim().trim_matches('"').to_owned())
        .filter(|id| !id.is_empty())
        .collect()
}

/// Helix sends a language's `language-id` when it sets one, else its name.
fn helix_ids() -> Vec<String> {
    let languages: toml::Value = toml::from_str(&editor_file("helix/languages.toml")).unwrap();
    languages["language"]
        .as_array()
        .unwrap()
        .iter()
        .map(|language| {
            let id = language.get("language-id").or_else(|| language.get("name"));
            id.and_then(toml::Value::as_str).unwrap().to_owned()
        })
        .collect()
}

#[test]
fn each_editor_starts_tierls_for_exactly_the_languages_it_knows() {
    let mut problems = Vec::new();
    for (editor, ids) in [
        ("VS Code", vscode_ids()),
        ("Neovim", neovim_ids()),
        ("Helix", helix_ids()),
    ] {
        for id in &ids {
            if Language::from_lsp_id(id).is_none() {
                problems.push(format!(
                    "{editor}: `{id}` is not a language id the server knows"
                ));
            }
        }
        for language in Language::ALL {
            if !ids
                .iter()
                .any(|id| Language::from_lsp_id(id) == Some(language))
            {
                problems.push(format!("{editor}: never starts tierls for {language:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
