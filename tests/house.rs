//! The house itself: each crate's top-level modules use only the layers below them (the
//! order its crate docs give under "## Layers"), the modules of a folder never import
//! each other in a circle, and the README's map ("## Where things live") names every
//! folder of the repository and every top-level module of the crates, and nothing that
//! is not there.
//!
//! It reads the sources as text: `use` trees and paths that start with `crate::`,
//! `super::` or `self::`, outside comments and `#[cfg(test)]` modules (tests may reach
//! anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The repository's root.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A module path inside a crate: `["doors", "webrtc", "hub"]`; the crate root is empty.
type ModPath = Vec<String>;

/// One crate's modules, each with its code (comments and test modules left out).
struct Crate {
    name: &'static str,
    modules: BTreeMap<ModPath, Module>,
    /// `pub use` re-exports: (module, name) to the module the item comes from, so that a
    /// use through a folder's re-export counts as a use of the module behind it.
    reexports: BTreeMap<(ModPath, String), ModPath>,
}

struct Module {
    /// Its file, relative to the repository.
    file: String,
    code: String,
}

/// A use of module `to` by module `from` (found in `file`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
}

impl Crate {
    fn load(name: &'static str, src: &str) -> Crate {
        let root = Path::new(ROOT).join(src);
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        let test_only = test_only_files(&files);
        let mut modules = BTreeMap::new();
        for file in files {
            if test_only.contains(&file) || file.file_name().is_some_and(|n| n == "main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
            let relative = file.strip_prefix(ROOT).expect("under the root");
            modules.insert(
                module_path(&file, &root),
                Module {
                    file: relative.display().to_string(),
                    code: without_tests(&without_comments(&text)),
                },
            );
        }
        assert!(modules.len() > 5, "{src}: found {} modules", modules.len());
        let mut krate = Crate {
            name,
            modules,
            reexports: BTreeMap::new(),
        };
        krate.reexports = krate.find_reexports();
        krate
    }

    /// Every use of one module by a sibling (two modules of one folder, or of the crate
    /// root), grouped by their folder. A module's use of its own children or of the
    /// items of a folder above it is not an edge: that is what folders are for.
    fn sibling_edges(&self) -> BTreeMap<ModPath, BTreeSet<Edge>> {
        let mut edges: BTreeMap<ModPath, BTreeSet<Edge>> = BTreeMap::new();
        for (from, module) in &self.modules {
            for target in referenced_paths(&module.code, from) {
                let to = self.module_of(&target);
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .insert(Edge {
                        from: from[common].clone(),
                        to: to[common].clone(),
                        file: module.file.clone(),
                    });
            }
        }
        edges
    }

    /// The module an absolute path names, or that holds the item it names (the module a
    /// re-exported item comes from).
    fn module_of(&self, path: &[String]) -> ModPath {
        let module = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.modules.contains_key(p))
            .unwrap_or_default();
        match path.get(module.len()) {
            Some(item) => match self.reexports.get(&(module.clone(), item.clone())) {
                Some(from) if from != &module => from.clone(),
                _ => module,
            },
            None => module,
        }
    }

    /// Each module's `pub use` of its own children's items (`pub use hub::{Hub, HubEvent}`,
    /// `pub use self::board::Board`).
    fn find_reexports(&self) -> BTreeMap<(ModPath, String), ModPath> {
        let mut found = BTreeMap::new();
        for (here, module) in &self.modules {
            for statement in module.code.split(';') {
                let Some(tree) = statement.trim().strip_prefix("pub use ") else {
                    continue;
                };
                let tree = tree.strip_prefix("self::").unwrap_or(tree);
                let (paths, _) = use_tree(tree, 0);
                for path in paths {
                    let Some((item, within)) = path.split_last() else {
                        continue;
                    };
                    let mut from = here.clone();
                    from.extend(within.iter().cloned());
                    if self.modules.contains_key(&from) {
                        found.insert((here.clone(), item.clone()), from);
                    }
                }
            }
        }
        found
    }

    /// The layers the crate root's docs list under `## Layers`, lowest first; each line
    /// of its `text` block is `name[, name...]  what they are`, the top layer first.
    fn layers(&self) -> Vec<Vec<String>> {
        // The code kept has no comments: the docs are read from the file.
        let file = Path::new(ROOT).join(&self.modules[&Vec::new()].file);
        let text = std::fs::read_to_string(file).expect("the crate root reads");
        let mut lines = text
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(str::trim)
            .skip_while(|l| *l != "## Layers");
        assert!(
            lines.next().is_some(),
            "{}: no \"## Layers\" in the crate docs",
            self.name
        );
        let mut block = lines.skip_while(|l| *l != "```text").skip(1);
        let mut layers = Vec::new();
        for line in block.by_ref() {
            if line == "```" {
                break;
            }
            let names = line.split("  ").next().unwrap_or_default();
            layers.push(names.split(',').map(|n| n.trim().to_string()).collect());
        }
        assert!(!layers.is_empty(), "{}: an empty layer list", self.name);
        layers.reverse();
        layers
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` is the root.
fn module_path(file: &Path, src: &Path) -> ModPath {
    let relative = file.strip_prefix(src).expect("under src");
    let mut path: ModPath = relative
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

/// Files that are whole test modules (`#[cfg(test)] mod fuzz;`).
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().expect("a folder").to_path_buf(),
            _ => file.with_extension(""),
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]"
                && let Some(name) = pair[1]
                    .trim_start_matches("pub ")
                    .strip_prefix("mod ")
                    .and_then(|m| m.strip_suffix(';'))
            {
                test_only.insert(dir.join(format!("{name}.rs")));
                test_only.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    test_only
}

/// The code without `//` comments (doc comments included), outside string literals.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let mut end = line.len();
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if in_string => escaped = true,
                b'"' => in_string = !in_string,
                b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&line[..end]);
        out.push('\n');
    }
    out
}

/// The code without its `#[cfg(test)]` modules: rustfmt puts a top-level module's closing
/// brace alone at the start of a line.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut lines = code.lines().peekable();
    while let Some(line) = lines.next() {
        let test_module = line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.starts_with("mod ") && next.trim_end().ends_with('{'));
        if test_module {
            for skipped in lines.by_ref() {
                if skipped == "}" {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every absolute path that `code` (module `here`) names through `crate::`, `super::` or
/// `self::`, `use` trees expanded.
fn referenced_paths(code: &str, here: &[String]) -> Vec<ModPath> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        let rest = &code[i..];
        let base: Option<(ModPath, usize)> = if !at_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((here.to_vec(), "self::".len()))
        } else if rest.starts_with("super::") {
            let mut up = 0;
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                up += 1;
                len += "super::".len();
            }
            Some((here[..here.len().saturating_sub(up)].to_vec(), len))
        } else {
            None
        };
        let Some((base, skip)) = base else {
            i += 1;
            continue;
        };
        let (paths, end) = use_tree(code, i + skip);
        for path in paths {
            let mut full = base.clone();
            full.extend(path);
            found.push(full);
        }
        i = end.max(i + 1);
    }
    found
}

/// Parses a path or `use` tree at `at` (`a::b`, `a::{b, c::D}`, `a::*`); returns each
/// path (without `self`) and where the tree ends.
fn use_tree(code: &str, at: usize) -> (Vec<ModPath>, usize) {
    let bytes = code.as_bytes();
    let mut i = at;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if bytes.get(i) == Some(&b'{') {
        let mut paths = Vec::new();
        i += 1;
        loop {
            let (mut inner, end) = use_tree(code, i);
            paths.append(&mut inner);
            i = end;
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'}' {
                return (paths, i + 1);
            }
            if end == i && !bytes[i].is_ascii_alphanumeric() && bytes[i] != b'_' && bytes[i] != b'{'
            {
                // Something a tree cannot hold (`*`, `as x`): step over it.
                i += 1;
            }
        }
    }
    let start = i;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    if start == i {
        return (vec![Vec::new()], i);
    }
    let ident = code[start..i].to_string();
    if code[i..].starts_with("::") {
        let (rest, end) = use_tree(code, i + 2);
        let paths = rest
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect();
        return (paths, end);
    }
    // `a::{self, b}` names `a` itself; `x as y` ends at `x`.
    let path = if ident == "self" {
        Vec::new()
    } else {
        vec![ident]
    };
    (vec![path], i)
}

/// A circle among `edges`, as the modules along it, if there is one.
fn circle(edges: &BTreeSet<Edge>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(&e.from).or_default().insert(&e.to);
    }
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            circle.push(node.to_string());
            return Some(circle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for to in next.get(node).into_iter().flatten() {
            if let Some(c) = visit(to, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        if let Some(c) = visit(start, &next, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn crates() -> [Crate; 2] {
    [
        Crate::load("focusd", "daemon/src"),
        Crate::load("focusd-board", "board/src"),
    ]
}

#[test]
fn each_crate_uses_only_the_layers_below_and_no_folder_has_a_circle() {
    let mut faults = Vec::new();
    for krate in crates() {
        let layers = krate.layers();
        let layer_of: BTreeMap<&str, usize> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, names)| names.iter().map(move |n| (n.as_str(), i)))
            .collect();
        let top_level: BTreeSet<&str> = krate
            .modules
            .keys()
            .filter(|p| p.len() == 1)
            .map(|p| p[0].as_str())
            .collect();
        for name in &top_level {
            if !layer_of.contains_key(name) {
                faults.push(format!(
                    "{}: module `{name}` is in no layer of its docs",
                    krate.name
                ));
            }
        }
        for name in layer_of.keys() {
            if !top_level.contains(name) {
                faults.push(format!(
                    "{}: the layer list names `{name}`, which is no module",
                    krate.name
                ));
            }
        }
        for (folder, edges) in krate.sibling_edges() {
            if folder.is_empty() {
                for e in &edges {
                    let (from, to) = (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str()));
                    if let (Some(from), Some(to)) = (from, to)
                        && to >= from
                    {
                        faults.push(format!(
                            "{}: `{}` uses `{}`, which is not below it ({})",
                            krate.name, e.from, e.to, e.file
                        ));
                    }
                }
            } else if let Some(c) = circle(&edges) {
                let files: BTreeSet<&str> = edges
                    .iter()
                    .filter(|e| c.windows(2).any(|w| w[0] == e.from && w[1] == e.to))
                    .map(|e| e.file.as_str())
                    .collect();
                faults.push(format!(
                    "{}: a circle in `{}`: {} (in {files:?})",
                    krate.name,
                    folder.join("::"),
                    c.join(" -> ")
                ));
            }
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

#[test]
fn the_reader_finds_uses_in_use_trees_and_paths_and_not_in_comments_or_tests() {
    let code = without_tests(&without_comments(
        "use crate::a::{b::C, d, e::{self, F}};\n\
         use super::g;\n\
         let x = crate::h::i(\"// not a comment\"); // crate::j\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::k;\n}\n",
    ));
    let here = vec!["m".to_string(), "n".to_string()];
    let found: BTreeSet<String> = referenced_paths(&code, &here)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    let want: BTreeSet<String> = ["a::b::C", "a::d", "a::e", "a::e::F", "m::g", "h::i"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
    let edges: BTreeSet<Edge> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| Edge {
            from: from.into(),
            to: to.into(),
            file: String::new(),
        })
        .collect();
    assert_eq!(circle(&edges).map(|c| c.len()), Some(4), "a -> b -> c -> a");
    let line: BTreeSet<Edge> = edges.into_iter().filter(|e| e.from != "c").collect();
    assert_eq!(circle(&line), None);
}

/// The paths the README's map names: each backticked name with a `/` in the section
/// "## Where things live".
fn mapped_paths() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let section: String = readme
        .lines()
        .skip_while(|l| *l != "## Where things live")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !section.is_empty(),
        "README.md has no \"## Where things live\""
    );
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| name.contains('/') && !name.starts_with('/') && !name.contains([' ', ':']))
        .map(String::from)
        .collect()
}

#[test]
fn the_readme_maps_every_folder_and_top_level_module_and_only_what_is_there() {
    let listed = std::process::Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(ROOT)
        .output()
        .expect("git runs (the map is checked against the files git knows)");
    assert!(listed.status.success(), "git ls-files: {listed:?}");
    let files: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    let mut wanted = BTreeSet::new();
    for file in &files {
        let mut dir = Path::new(file).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            wanted.insert(format!("{}/", d.display()));
            dir = d.parent();
        }
        let top_module = ["daemon/src/", "board/src/"].iter().any(|src| {
            file.strip_prefix(src)
                .is_some_and(|rest| !rest.contains('/'))
        });
        if top_module {
            wanted.insert(file.clone());
        }
    }
    let mapped = mapped_paths();
    let missing: Vec<&String> = wanted.difference(&mapped).collect();
    let gone: Vec<&String> = mapped
        .iter()
        .filter(|p| !Path::new(ROOT).join(p.trim_end_matches('/')).exists())
        .collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "README.md's map (\"## Where things live\"): not listed: {missing:?}; listed but not there: {gone:?}"
    );
}
