//! The shape of the production code, checked at every run so that it does not
//! erode after an issue closes: no production file over 600 lines of code
//! (counted up to its `#[cfg(test)]`), no two files that import each other,
//! and no `Result<_, String>`. Reads the source tree; needs no other part.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fossa_tests::repo_root;

/// The crates whose `src/` is production code.
const CRATES: [&str; 4] = ["agent", "bootstrap", "web", "contract"];
/// The most lines of code a production file may have before its tests.
const MAX_LINES: usize = 600;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read the source tree") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A file's production text: up to its first `#[cfg(test)]` line, with
/// line comments taken out.
fn production(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read a source file");
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => l[..i].to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

/// The module path of `file` in a crate whose `src` is `src`
/// (`duties/nat/mod.rs` → `[duties, nat]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The file that holds the longest prefix of module path `parts`.
fn file_of(src: &Path, parts: &[String]) -> Option<PathBuf> {
    (1..=parts.len()).rev().find_map(|n| {
        let p = parts[..n].iter().fold(src.to_path_buf(), |p, s| p.join(s));
        [p.with_extension("rs"), p.join("mod.rs")]
            .into_iter()
            .find(|c| c.is_file())
    })
}

/// The module paths `text` names through `crate::…` or `super::…`,
/// including each item of a `{…}` group, from module `me`.
fn named_paths(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (start, root) in ["crate::", "super::"]
        .iter()
        .flat_map(|r| text.match_indices(r).map(move |(i, _)| (i, *r)))
    {
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let mut base: Vec<String> = if root == "crate::" {
            Vec::new()
        } else {
            me[..me.len().saturating_sub(1)].to_vec()
        };
        let mut rest = &text[start + root.len()..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let first = item.trim().split("::").next().unwrap_or("").trim();
                if !first.is_empty() && first != "self" && first.chars().all(is_ident) {
                    let mut p = base.clone();
                    p.push(first.to_owned());
                    out.push(p);
                }
            }
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| is_ident(*c) || *c == ':')
            .collect();
        let mut p = base;
        p.extend(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        out.push(p);
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `(file, lines of code)` for every production file.
fn sizes() -> Vec<(PathBuf, usize)> {
    let root = repo_root();
    CRATES
        .iter()
        .flat_map(|c| rust_files(&root.join(c).join("src")))
        .map(|f| {
            let n = production(&f).len();
            (f, n)
        })
        .collect()
}

#[test]
fn no_production_file_is_over_600_lines() {
    let big: Vec<String> = sizes()
        .into_iter()
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(f, n)| format!("{} ({n})", f.display()))
        .collect();
    assert!(
        big.is_empty(),
        "split these files (at most {MAX_LINES} lines before #[cfg(test)]): {big:?}"
    );
}

#[test]
fn no_two_files_import_each_other() {
    let root = repo_root();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for c in CRATES {
        let src = root.join(c).join("src");
        for f in rust_files(&src) {
            let me = module_of(&src, &f);
            let text = production(&f).join("\n");
            let deps = named_paths(&text, &me)
                .iter()
                .filter_map(|p| file_of(&src, p))
                .filter(|d| *d != f)
                .collect();
            edges.insert(f, deps);
        }
    }
    let mut cycles = Vec::new();
    for (a, deps) in &edges {
        for b in deps.iter().filter(|b| a < *b) {
            if edges.get(b).is_some_and(|d| d.contains(a)) {
                cycles.push(format!("{} <-> {}", a.display(), b.display()));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files that import each other (move what both need into a module below them): {cycles:#?}"
    );
}

#[test]
fn the_cycle_finder_sees_a_cycle() {
    // `a.rs` names `super::b::X` and `b.rs` names `crate::a::{Y, self}`.
    let a = named_paths("use super::b::X;", &["a".into()]);
    assert_eq!(a, [vec!["b".to_owned(), "X".into()]]);
    let b = named_paths(
        "use crate::a::{self, Y}; fn f() { super::c::g() }",
        &["d".into(), "b".into()],
    );
    assert!(b.contains(&vec!["a".to_owned()]), "{b:?}");
    assert!(
        b.contains(&vec!["d".to_owned(), "c".into(), "g".into()]),
        "{b:?}"
    );
    let g = named_paths("use super::{x, y::Z};", &["m".into(), "n".into()]);
    assert_eq!(
        g,
        [
            vec!["m".to_owned(), "x".into()],
            vec!["m".to_owned(), "y".into()]
        ]
    );
}

#[test]
fn no_result_carries_a_string_error() {
    let mut found = Vec::new();
    for (f, _) in sizes() {
        for (n, line) in production(&f).iter().enumerate() {
            for (i, _) in line.match_indices("Result<") {
                let rest = &line[i + "Result<".len()..];
                let Some(end) = rest.find('>') else { continue };
                let inner = &rest[..end];
                if !inner.contains('<') && inner.replace(' ', "").ends_with(",String") {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "use a thiserror enum, not Result<_, String>: {found:#?}"
    );
}
