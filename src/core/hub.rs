//! Models named on Hugging Face: what a reference means, which of a repository's files it
//! needs, and where they live in the model cache. No I/O here: `models::hub` fetches.
//!
//! A reference is `hf://owner/repo/path/file.gguf` (one file, or every part of a split
//! GGUF when it names one part) or `hf://owner/repo:QUANT` (the GGUF of that quantization,
//! as `llama-server -hf` picks it); `tierls pull` also takes both without the `hf://`.

use std::fmt;

/// A model on the hub.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HubModel {
    /// `owner/name`.
    pub repo: String,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A path inside the repository.
    File(String),
    /// A quantization such as `Q4_K_M`, matched against the repository's GGUF names.
    Quant(String),
}

impl fmt::Display for HubModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::File(file) => write!(f, "hf://{}/{file}", self.repo),
            Target::Quant(quant) => write!(f, "hf://{}:{quant}", self.repo),
        }
    }
}

impl HubModel {
    /// Parses `hf://owner/repo/file.gguf`, `hf://owner/repo:QUANT`, or either without the
    /// scheme. Every part is checked here, so that a reference can never name a path
    /// outside its repository's folder in the cache.
    pub fn parse(text: &str) -> Result<HubModel, String> {
        let rest = text.strip_prefix("hf://").unwrap_or(text);
        let expected = "expected hf://owner/repo/file.gguf or hf://owner/repo:QUANT";
        let (owner, after_owner) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: {expected}"))?;
        let (name, target) = match after_owner.split_once('/') {
            Some((name, file)) => (name, Target::File(file.to_owned())),
            None => match after_owner.split_once(':') {
                Some((name, quant)) => (name, Target::Quant(quant.to_owned())),
                None => return Err(format!("`{text}`: {expected}")),
            },
        };
        for (what, part) in [("owner", owner), ("repository", name)] {
            if !is_repo_part(part) {
                return Err(format!(
                    "`{text}`: the {what} `{part}` is not a Hugging Face name (letters, digits, `-`, `_`, `.`)"
                ));
            }
        }
        match &target {
            Target::File(file) => {
                if !is_safe_path(file) {
                    return Err(format!(
                        "`{text}`: `{file}` is not a file path in the repository"
                    ));
                }
                if !file.to_ascii_lowercase().ends_with(".gguf") {
                    return Err(format!("`{text}`: `{file}` is not a GGUF file (.gguf)"));
                }
            }
            Target::Quant(quant) => {
                if quant.is_empty() || !quant.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!(
                        "`{text}`: `{quant}` is not a quantization name such as Q4_K_M"
                    ));
                }
            }
        }
        Ok(HubModel {
            repo: format!("{owner}/{name}"),
            target,
        })
    }

    /// The cache folder of the repository, relative to the model cache: `hf/owner/name`.
    pub fn repo_folder(&self) -> String {
        format!("hf/{}", self.repo)
    }
}

/// A relative path inside a repository's folder: no `..`, `.` or empty segments, no
/// backslashes, drive letters or NULs. Names from the hub's listing are held to it too.
fn is_safe_path(path: &str) -> bool {
    path.len() <= 1024
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && !segment.contains(['\\', '\0', ':'])
        })
}

fn is_repo_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 96
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A file of a repository as the hub lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
    /// The content's sha256 (hex), where the hub gives one (files stored in LFS).
    pub sha256: Option<String>,
}

/// The parts of a split GGUF: `name-00001-of-00003.gguf` is part 1 of 3 of `name`.
fn split_part(path: &str) -> Option<(&str, u32, u32)> {
    let stem = path.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = head.rsplit_once('-')?;
    let digits = |text: &str| text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count).then_some((prefix, index, count))
}

/// What a reference needs from a repository: its files in load order (a split GGUF's parts
/// from the first, which is what llama.cpp opens).
pub fn pick_files(model: &HubModel, files: &[RepoFile]) -> Result<Vec<RepoFile>, String> {
    // A hostile or broken hub's names that would leave the repository's folder are not
    // files of it.
    let files: Vec<&RepoFile> = files
        .iter()
        .filter(|file| is_safe_path(&file.path))
        .collect();
    let ggufs: Vec<&RepoFile> = files
        .iter()
        .copied()
        .filter(|file| file.path.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    let listing = || {
        if ggufs.is_empty() {
            "it has no GGUF files".to_owned()
        } else {
            let mut names: Vec<&str> = ggufs.iter().map(|file| file.path.as_str()).collect();
            names.sort_unstable();
            format!("it has: {}", names.join(", "))
        }
    };
    let chosen: &RepoFile = match &model.target {
        Target::File(path) => ggufs
            .iter()
            .find(|file| file.path == *path)
            .copied()
            .ok_or_else(|| {
                format!(
                    "{}: no file `{path}` in {}; {}",
                    model,
                    model.repo,
                    listing()
                )
            })?,
        Target::Quant(quant) => {
            let mut matching: Vec<&RepoFile> = ggufs
                .iter()
                .filter(|file| names_quant(&file.path, quant) && !is_projector(&file.path))
                .copied()
                .collect();
            // The shortest path first (a file at the top before one in a folder), then a
            // whole file before a split one, then by name: the same pick every time.
            matching.sort_by_key(|file| {
                (
                    file.path.matches('/').count(),
                    split_part(&file.path).is_some(),
                    file.path.clone(),
                )
            });
            matching.into_iter().next().ok_or_else(|| {
                format!(
                    "{}: {} has no GGUF for {quant}; {}",
                    model,
                    model.repo,
                    listing()
                )
            })?
        }
    };
    let Some((prefix, _, count)) = split_part(&chosen.path) else {
        return Ok(vec![chosen.clone()]);
    };
    let mut parts = Vec::with_capacity(count as usize);
    for index in 1..=count {
        let path = format!("{prefix}-{index:05}-of-{count:05}.gguf");
        match files.iter().find(|file| file.path == path) {
            Some(file) => parts.push((*file).clone()),
            None => {
                return Err(format!(
                    "{model}: `{}` is split in {count} parts but `{path}` is missing from {}",
                    chosen.path, model.repo
                ));
            }
        }
    }
    Ok(parts)
}

/// True when `quant` stands in the file's name as a whole word (`Q4_K` does not match
/// `Q4_K_M`), in any case.
fn names_quant(path: &str, quant: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let quant = quant.to_ascii_lowercase();
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    name.match_indices(&quant).any(|(at, _)| {
        !is_word(name[..at].chars().next_back())
            && !is_word(name[at + quant.len()..].chars().next())
    })
}

/// Vision projectors sit beside the language model in many GGUF repositories.
fn is_projector(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase()
        .starts_with("mmproj")
}

/// The files a reference needs, found among files already in the cache (offline), by the
/// same rules as [`pick_files`]; sizes and hashes are not known there and not needed.
pub fn pick_cached(model: &HubModel, cached: &[String]) -> Option<Vec<String>> {
    let files: Vec<RepoFile> = cached
        .iter()
        .map(|path| RepoFile {
            path: path.clone(),
            size: 0,
            sha256: None,
        })
        .collect();
    pick_files(model, &files)
        .ok()
        .map(|files| files.into_iter().map(|file| file.path).collect())
}
