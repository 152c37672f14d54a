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

/// Settings the VS Code extension reads itself; the server never sees them.
const VSCODE_CLIENT_SETTINGS: [&str; 2] = ["server.path", "inlineCompletions.enabled"];

/// logic.ts's `KEYS`: each setting and the `tierls.toml` key it is sent as.
fn vscode_setting_keys() -> Vec<(String, Vec<String>)> {
    let logic = editor_file("vscode/src/logic.ts");
    let table = logic
        .split("const KEYS")
        .nth(1)
        .unwrap()
        .split("];")
        .next()
        .unwrap();
    table
        .lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("[\"")?;
            let (setting, rest) = line.split_once('"')?;
            let path = rest.split_once('[')?.1.split_once(']')?.0;
            let path = path
                .split(',')
                .map(|key| key.trim().trim_matches('"').to_owned())
                .collect();
            Some((setting.to_owned(), path))
        })
        .collect()
}

fn nested(path: &[String], value: serde_json::Value) -> serde_json::Value {
    path.iter()
        .rev()
        .fold(value, |inner, key| serde_json::json!({ key: inner }))
}

/// Every VS Code setting the server reads is sent under a key the server takes, with the
/// range, the choices and the default the settings page shows.
#[test]
fn vscode_settings_are_keys_the_server_takes_with_the_same_ranges_and_defaults() {
    use tierls::config::{Config, ConfigLayer, parse_settings};

    let package: serde_json::Value =
        serde_json::from_str(&editor_file("vscode/package.json")).unwrap();
    let properties = package["contributes"]["configuration"]["properties"]
        .as_object()
        .unwrap();
    let keys = vscode_setting_keys();
    let parse =
        |path: &[String], value: serde_json::Value| parse_settings(nested(path, value), "settings");
    let mut problems = Vec::new();
    for name in properties.keys() {
        let setting = name.strip_prefix("tierls.").unwrap_or(name);
        let sent = keys.iter().any(|(key, _)| key == setting);
        if VSCODE_CLIENT_SETTINGS.contains(&setting) == sent {
            problems.push(format!(
                "{name}: {}",
                if sent {
                    "the extension's own setting is sent to the server"
                } else {
                    "never sent to the server (add it to KEYS in logic.ts)"
                }
            ));
        }
    }
    for (setting, path) in &keys {
        let key = path.join(".");
        let Some(property) = properties.get(&format!("tierls.{setting}")) else {
            problems.push(format!(
                "KEYS sends `{setting}`, which package.json does not declare"
            ));
            continue;
        };
        let kinds = property["type"].as_array().cloned().unwrap_or_default();
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        if kinds.iter().any(|kind| kind == "integer") {
            let (min, max) = (property["minimum"].as_i64(), property["maximum"].as_i64());
            let (Some(min), Some(max)) = (min, max) else {
                problems.push(format!(
                    "tierls.{setting}: an integer without minimum and maximum"
                ));
                continue;
            };
            accepted.extend([min, max].map(serde_json::Value::from));
            refused.push(serde_json::Value::from(max + 1));
            if min > 0 {
                refused.push(serde_json::Value::from(min - 1));
            }
        } else if let Some(choices) = property["enum"].as_array() {
            accepted.extend(choices.iter().filter(|choice| !choice.is_null()).cloned());
            refused.push(serde_json::Value::from("not-a-choice"));
        } else {
            accepted.push(serde_json::Value::from("models/model.gguf"));
        }
        for value in accepted {
            match parse(path, value.clone()) {
                Ok(layer) if layer != ConfigLayer::default() => {}
                Ok(_) => problems.push(format!("{key} = {value}: taken, and changes nothing")),
                Err(err) => problems.push(format!("{key} = {value} is in VS Code's range: {err}")),
            }
        }
        for value in refused {
            match parse(path, value.clone()) {
                Err(err) if err.to_string().contains(path.last().unwrap()) => {}
                Err(err) => problems.push(format!(
                    "{key} = {value}: the error does not name the key: {err}"
                )),
                Ok(_) => problems.push(format!(
                    "{key} = {value} is outside VS Code's range, and the server takes it"
                )),
            }
        }
        // "(default 30)" in the description is the server's default.
        let description = property["description"].as_str().unwrap_or_default();
        if let Some(default) = description
            .split("(default ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
        {
            let value = default
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| serde_json::Value::from(default));
            match parse(path, value) {
                Ok(layer) if Config::from_layers([&layer]) == Config::default() => {}
                Ok(_) => problems.push(format!(
                    "tierls.{setting} says its default is {default}; the server's is not"
                )),
                Err(err) => problems.push(format!("tierls.{setting}'s default {default}: {err}")),
            }
        }
    }
    assert!(keys.len() >= 9, "KEYS in logic.ts was not read: {keys:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
