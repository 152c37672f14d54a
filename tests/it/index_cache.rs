//! The persisted index: a warm start reuses what did not change and rereads what did, and a
//! cache that is damaged, foreign or unwritable costs a cold scan, never a wrong index.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tierls::core::index::cache_format::{FORMAT_VERSION, decode};
use tierls::core::index::table::Index;
use tierls::scan::cache::{IndexSink, load, scan_with_cache};
use tierls::scan::{ScanOptions, ScanStats};

/// A workspace and a cache file of its own.
struct Tree {
    root: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Tree {
    /// `count` files `src/m{i}.rs`, each with `text(i)`.
    fn numbered(count: usize, text: impl Fn(usize) -> String) -> Tree {
        let files: Vec<(String, String)> = (0..count)
            .map(|i| (format!("src/m{i}.rs"), text(i)))
            .collect();
        let listed: Vec<(&str, &str)> = files
            .iter()
            .map(|(path, text)| (path.as_str(), text.as_str()))
            .collect();
        Tree::new(&listed)
    }

    fn new(files: &[(&str, &str)]) -> Tree {
        let tree = Tree {
            root: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        for (path, text) in files {
            tree.write(path, text);
        }
        tree
    }

    fn root(&self) -> PathBuf {
        self.root.path().canonicalize().unwrap()
    }

    fn cache_file(&self) -> PathBuf {
        self.cache.path().join("workspace.index")
    }

    /// Writes a file dated an hour ago: old enough for its stamp to be trusted.
    fn write(&self, path: &str, text: &str) {
        let path = self.root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }

    /// Writes the cache again, whole and with a right hash, each file's symbols as
    /// `symbols` gives them (from its path and its encoded symbols) and `names` as its count.
    fn rewrite_cache(&self, symbols: impl Fn(&str, &[u8]) -> Vec<u8>, names: impl Fn(u64) -> u64) {
        use tierls::core::index::cache_format::Encoder;
        let root = self.root().to_string_lossy().into_owned();
        let bytes = std::fs::read(self.cache_file()).unwrap();
        let cached = decode(&bytes, &root).unwrap();
        let (mut encoder, mut rewritten) = Encoder::start(&root);
        for file in &cached.files {
            let encoded = symbols(&file.head.path, &bytes[file.symbols.clone()]);
            rewritten.extend(encoder.record(&file.head, &encoded));
        }
        rewritten.extend(encoder.finish(names(cached.names)));
        std::fs::write(self.cache_file(), &rewritten).unwrap();
    }

    /// Scans through the cache: the index and the scan's figures.
    fn scan(&self) -> (Index, ScanStats) {
        scan_through(&self.root(), &self.cache_file())
    }
}

fn scan_through(root: &Path, cache_file: &Path) -> (Index, ScanStats) {
    scan_seeing(root, cache_file, |_| {})
}

/// [`scan_through`], with `seeing` told of each file before it reaches the index.
fn scan_seeing(
    root: &Path,
    cache_file: &Path,
    mut seeing: impl FnMut(&tierls::scan::ScannedFile),
) -> (Index, ScanStats) {
    /// An index that shows each file to `seeing` before taking it.
    struct Seen<F> {
        index: Index,
        seeing: F,
    }
    impl<F: FnMut(&tierls::scan::ScannedFile)> IndexSink for Seen<F> {
        fn expect_names(&mut self, names: usize) {
            self.index.expect_names(names);
        }
        fn add(&mut self, file: tierls::scan::ScannedFile) {
            (self.seeing)(&file);
            self.index.add(file);
        }
        fn name_count(&self) -> usize {
            IndexSink::name_count(&self.index)
        }
    }
    let options = ScanOptions {
        threads: 2,
        ..ScanOptions::default()
    };
    let mut seen = Seen {
        index: Index::default(),
        seeing: &mut seeing,
    };
    let stats = scan_with_cache(root, cache_file, &options, &mut seen, &mut |_, _| {});
    (seen.index, stats)
}

/// What the index holds, one file a line: its path and its definitions' paths.
fn shown(index: &Index) -> String {
    let mut lines: Vec<String> = index
        .files()
        .map(|(_, entry)| {
            let names: Vec<String> = entry.symbols().map(|s| s.symbol_path().into()).collect();
            format!("{}: {}", entry.path, names.join(", "))
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

const FILES: &[(&str, &str)] = &[
    (
        "src/shapes.rs",
        "pub struct Circle { pub radius: f64 }\n\nimpl Circle {\n    pub fn area(&self) -> f64 { 3.14 * self.radius * self.radius }\n}\n",
    ),
    (
        "src/units.rs",
        "pub const INCH: f64 = 25.4;\n\npub fn to_mm(x: f64) -> f64 { x * INCH }\n",
    ),
    (
        "app/main.py",
        "from app.store import Store\n\n\ndef main():\n    Store().save()\n",
    ),
    (
        "app/store.py",
        "class Store:\n    def save(self):\n        pass\n",
    ),
];

#[test]
fn a_warm_start_reuses_what_did_not_change_and_rereads_what_did() {
    let tree = Tree::new(FILES);
    let (cold, stats) = tree.scan();
    assert_eq!((stats.indexed, stats.from_cache), (4, 0));
    let (warm, stats) = tree.scan();
    assert_eq!((stats.indexed, stats.from_cache), (4, 4));
    assert_eq!(shown(&warm), shown(&cold));

    // Edited (same size, new content), deleted, renamed, replaced by a folder and by a link.
    tree.write("src/shapes.rs", &FILES[0].1.replace("area", "size"));
    std::fs::remove_file(tree.root().join("src/units.rs")).unwrap();
    std::fs::rename(
        tree.root().join("app/store.py"),
        tree.root().join("app/storage.py"),
    )
    .unwrap();
    std::fs::remove_file(tree.root().join("app/main.py")).unwrap();
    tree.write("app/main.py/inner.py", "def inner():\n    pass\n");
    tree.write("lib/target.py", "def target():\n    pass\n");
    std::os::unix::fs::symlink(
        tree.root().join("lib/target.py"),
        tree.root().join("lib/link.py"),
    )
    .unwrap();
    let (changed, stats) = tree.scan();
    insta::assert_snapshot!(shown(&changed), @r"
    app/main.py/inner.py: inner
    app/storage.py: Store, Store.save
    lib/target.py: target
    src/shapes.rs: Circle, Circle, Circle::size
    ");
    assert_eq!(stats.from_cache, 0, "no path the cache knows is unchanged");
    let (again, stats) = tree.scan();
    assert_eq!(shown(&again), shown(&changed));
    assert_eq!(stats.from_cache, 4);
}

/// A warm start that found nothing changed leaves the cache file as it was (it writes
/// nothing); one that found a change writes a cache whose unchanged records are copied from
/// the last one, and a file's removal alone is a change.
#[test]
fn a_warm_start_writes_the_cache_only_when_something_changed() {
    use std::os::unix::fs::MetadataExt;
    let text = |i: usize| format!("pub fn numbered_{i}() {{}}\n");
    let tree = Tree::numbered(50, text);
    tree.scan();
    let written = |tree: &Tree| {
        let metadata = std::fs::metadata(tree.cache_file()).unwrap();
        (metadata.ino(), metadata.modified().unwrap())
    };
    let first = written(&tree);
    let (_, stats) = tree.scan();
    assert_eq!(stats.from_cache, 50);
    assert_eq!(written(&tree), first, "nothing changed, nothing written");

    tree.write("src/m7.rs", &text(7).replace("numbered_", "renamed__"));
    let (_, stats) = tree.scan();
    assert_eq!(stats.from_cache, 49);
    assert_ne!(written(&tree), first, "a change writes the cache anew");
    let (warm, stats) = tree.scan();
    assert_eq!(stats.from_cache, 50, "the copied records are whole");
    let (cold, _) = scan_through(&tree.root(), &tree.cache.path().join("fresh.index"));
    assert_eq!(shown(&warm), shown(&cold));
    assert!(shown(&warm).contains("src/m7.rs: renamed__7"));

    std::fs::remove_file(tree.root().join("src/m3.rs")).unwrap();
    let (_, stats) = tree.scan();
    assert_eq!((stats.indexed, stats.from_cache), (49, 49));
    let cached = load(&tree.root(), &tree.cache_file()).unwrap();
    assert_eq!(cached.len(), 49);
    assert!(cached.get("src/m3.rs").is_none());
}

#[test]
fn a_file_written_just_before_a_scan_is_checked_by_its_content_next_time() {
    let tree = Tree::new(FILES);
    tree.scan();
    // A file written just before the scan is stamped without its date: the next start
    // checks its content, whatever the date says.
    let fresh = tree.root().join("src/fresh.rs");
    std::fs::write(&fresh, "pub fn fresh() {}\n").unwrap();
    tree.scan();
    let files = load(&tree.root(), &tree.cache_file()).unwrap();
    assert_eq!(files.get("src/fresh.rs").unwrap().head.stamp.modified_ns, 0);
    assert_ne!(
        files.get("src/shapes.rs").unwrap().head.stamp.modified_ns,
        0
    );
    let modified = std::fs::metadata(&fresh).unwrap().modified().unwrap();
    std::fs::write(&fresh, "pub fn fresc() {}\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&fresh)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let (index, _) = tree.scan();
    assert!(
        shown(&index).contains("src/fresh.rs: fresc"),
        "{}",
        shown(&index)
    );
}

/// Each damaged or foreign cache: the scan is cold, the index right, and the cache is
/// written anew.
#[test]
fn damaged_or_foreign_caches_are_ignored_and_replaced() {
    let tree = Tree::new(FILES);
    let (cold, _) = tree.scan();
    let good = std::fs::read(tree.cache_file()).unwrap();
    let other_version = {
        let mut bytes = good.clone();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION - 1).to_le_bytes());
        bytes
    };
    let flipped = {
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes
    };
    let random: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("random bytes", random),
        ("an older format version", other_version),
        ("a flipped byte", flipped),
        ("empty", Vec::new()),
    ];
    let mut reasons = String::new();
    for (case, bytes) in cases {
        std::fs::write(tree.cache_file(), &bytes).unwrap();
        let why = load(&tree.root(), &tree.cache_file()).unwrap_err();
        reasons += &format!(
            "{case}: {}\n",
            why.replace(&tree.cache_file().display().to_string(), "CACHE")
        );
        let (index, stats) = tree.scan();
        assert_eq!(stats.from_cache, 0, "{case}");
        assert_eq!(shown(&index), shown(&cold), "{case}");
        // Written anew: the next start is warm.
        assert_eq!(tree.scan().1.from_cache, 4, "{case}");
    }
    // Another root's cache (a workspace copied elsewhere, or a hash collision).
    let other = Tree::new(FILES);
    std::fs::copy(tree.cache_file(), other.cache_file()).unwrap();
    let why = load(&other.root(), &other.cache_file()).unwrap_err();
    reasons += &format!(
        "another root: {}\n",
        if why.contains("written for another root") {
            "written for another root"
        } else {
            &why
        }
    );
    assert_eq!(other.scan().1.from_cache, 0);
    // A cache that is a folder: unreadable.
    std::fs::remove_file(tree.cache_file()).unwrap();
    std::fs::create_dir(tree.cache_file()).unwrap();
    let why = load(&tree.root(), &tree.cache_file()).unwrap_err();
    assert!(why.contains("not a regular file"), "{why}");
    insta::assert_snapshot!(reasons);
}

#[test]
fn an_unwritable_cache_folder_leaves_the_index_working() {
    let tree = Tree::new(FILES);
    // The cache's folder is a file: nothing can be written under it.
    let blocked = tree.cache.path().join("blocked");
    std::fs::write(&blocked, "a file").unwrap();
    let cache_file = blocked.join("workspace.index");
    let (index, stats) = scan_through(&tree.root(), &cache_file);
    assert_eq!(stats.indexed, 4);
    assert_eq!(index.files().count(), 4);
    let (_, stats) = scan_through(&tree.root(), &cache_file);
    assert_eq!(stats.from_cache, 0);
}

/// Two servers on one workspace write the same cache at once: each write is whole (a
/// temporary file renamed), so the cache left behind is one of them, never a mix.
#[test]
fn two_scans_writing_one_cache_at_once_leave_a_whole_cache() {
    let tree = Tree::numbered(300, |i| format!("pub fn f{i}() {{}}\n"));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| tree.scan());
        }
    });
    let cached = load(&tree.root(), &tree.cache_file()).unwrap();
    assert_eq!(cached.len(), 300);
    assert_eq!(tree.scan().1.from_cache, 300);
}

/// A FIFO, a link to `/dev/zero`, a link loop and a 200 MB file in the tree: skipped with
/// their reasons, cold and warm, never read.
#[test]
fn hostile_files_are_skipped_cold_and_warm() {
    let tree = Tree::new(FILES);
    let root = tree.root();
    let fifo = std::ffi::CString::new(root.join("src/pipe.rs").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", root.join("src/zero.rs")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("src/loop")).unwrap();
    let huge = std::fs::File::create(root.join("src/huge.rs")).unwrap();
    huge.set_len(200 * 1024 * 1024).unwrap();
    for _ in 0..2 {
        let (index, stats) = tree.scan();
        assert_eq!(index.files().count(), 4, "{}", shown(&index));
        assert_eq!(stats.skipped(tierls::scan::Skip::TooLarge), 1);
    }
    assert!(
        decode(
            &std::fs::read(tree.cache_file()).unwrap(),
            &root.to_string_lossy()
        )
        .is_ok()
    );
}

/// A whole cache (right hash, version and root) whose record for one file holds symbols
/// that do not decode: that file is parsed again, the others come from the cache.
#[test]
fn a_record_whose_symbols_do_not_decode_costs_that_file_a_parse() {
    let tree = Tree::new(FILES);
    let (cold, _) = tree.scan();
    tree.rewrite_cache(
        |path, symbols| match path {
            "src/units.rs" => vec![0xff; 9],
            _ => symbols.to_vec(),
        },
        |names| names,
    );
    let (index, stats) = tree.scan();
    assert_eq!((stats.indexed, stats.from_cache), (4, 3));
    assert_eq!(shown(&index), shown(&cold));
    assert_eq!(tree.scan().1.from_cache, 4, "the cache is whole again");
}

/// A cache (whole, its hash right) whose name count says more names than it could spell:
/// the room made for them is bounded by the cache's size, and the index is as a cold scan's.
#[test]
fn a_cache_whose_name_count_lies_asks_for_no_more_room_than_its_size() {
    let tree = Tree::new(FILES);
    let (cold, _) = tree.scan();
    let root = tree.root();
    let bytes = std::fs::read(tree.cache_file()).unwrap();
    let cached = decode(&bytes, &root.to_string_lossy()).unwrap();
    assert_eq!(cached.names as usize, cold.name_count());
    tree.rewrite_cache(|_, symbols| symbols.to_vec(), |_| u64::MAX);
    let loaded = load(&root, &tree.cache_file()).unwrap();
    let length = std::fs::metadata(tree.cache_file()).unwrap().len() as usize;
    assert_eq!(loaded.names(), length / 2);
    let (index, stats) = tree.scan();
    assert_eq!(stats.from_cache, 4);
    assert_eq!(shown(&index), shown(&cold));
}

#[test]
fn files_that_change_during_a_warm_start_are_read_again_by_the_next() {
    let text = |i: usize| format!("pub fn before_{i}() {{}}\n");
    let tree = Tree::numbered(24, text);
    tree.scan();
    // The warm start: when its first file reaches the index, every file is rewritten (the
    // same size, a new name), some before the scan looked at them, some after.
    let mut edited = false;
    scan_seeing(&tree.root(), &tree.cache_file(), |_| {
        if !edited {
            edited = true;
            for i in 0..24 {
                tree.write(
                    &format!("src/m{i}.rs"),
                    &text(i).replace("before_", "after__"),
                );
            }
        }
    });
    assert!(edited);
    // Whatever that start saw, the next one has every new name.
    let (next, _) = tree.scan();
    let (cold, _) = scan_through(&tree.root(), &tree.cache.path().join("fresh.index"));
    assert_eq!(shown(&next), shown(&cold));
    assert!(!shown(&next).contains("before_"), "{}", shown(&next));
}
