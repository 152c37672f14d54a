//! Paths a model writes, checked as text: only workspace-relative paths that stay inside the
//! root get through. (Symbolic links are the shell's job: it checks the disk.)

/// Normalises a model-written path to the index's form (`src/geometry.rs`), refusing what
/// could name something outside the workspace root.
pub fn workspace_relative(path: &str) -> Result<String, String> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        return Err("the path is empty".into());
    }
    if trimmed.contains('\0') {
        return Err(format!("`{}` contains a NUL byte", trimmed.escape_debug()));
    }
    if trimmed.contains("://") {
        return Err(format!(
            "`{trimmed}` is a URI: paths are relative to the workspace root"
        ));
    }
    let unified = trimmed.replace('\\', "/");
    let bytes = unified.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if unified.starts_with('/') || unified.starts_with('~') || drive {
        return Err(format!(
            "`{trimmed}` is absolute: paths are relative to the workspace root"
        ));
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "`{trimmed}` uses `..`: paths stay inside the workspace root"
                ));
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!("`{trimmed}` names the workspace root, not a file"));
    }
    Ok(parts.join("/"))
}
