//! The layering promise of `src/lib.rs`: each folder of `src/` is a layer,
//! and a module names only its own layer and those below it. This test reads
//! every file under `src/`, finds every path it names through `crate::…`
//! (including `use crate::{…}` groups) and every `super::` that climbs out
//! of its folder, and fails, naming the file, the line and both layers, when
//! one runs upward. Comments and string literals are not code and are
//! skipped, as are `#[cfg(test)]` modules: a unit test may bring the whole
//! allocator up. `test_hooks` (the test hooks' window into every layer,
//! built with RSEQALLOC_TEST_HOOKS=1) may name anything, and nothing but
//! the crate root may name it.
//! It also checks that every folder's `mod.rs` opens with its layer.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom to top: a module may name its own layer and those
/// before it in this list.
const LAYERS: [&str; 7] = ["platform", "rseq", "backend", "middle", "cache", "front", "capi"];

/// Where a file or a named path sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// One of `LAYERS`, by index.
    Layer(usize),
    /// `lib.rs` and the items it defines or re-exports: above every layer.
    Root,
    /// `test_hooks.rs`.
    TestHooks,
}

impl Place {
    fn describe(self) -> String {
        match self {
            Place::Layer(i) => format!("{} (layer {i})", LAYERS[i]),
            Place::Root => "the crate root (lib.rs, above every layer)".into(),
            Place::TestHooks => "test_hooks".into(),
        }
    }

    /// Whether a module here may name something at `to`.
    fn may_name(self, to: Place) -> bool {
        match (self, to) {
            (Place::Root | Place::TestHooks, _) => true,
            (_, Place::TestHooks) => false,
            (_, Place::Root) => false,
            (Place::Layer(from), Place::Layer(to)) => to <= from,
        }
    }
}

/// The place of the crate-level module named `name` (the first segment of a
/// `crate::` path).
fn place_of_top(name: &str) -> Place {
    match LAYERS.iter().position(|&l| l == name) {
        Some(i) => Place::Layer(i),
        None if name == "test_hooks" => Place::TestHooks,
        None => Place::Root,
    }
}

/// A file's module path from `src/` (`src/cache/percpu.rs` → [cache, percpu];
/// `src/cache/mod.rs` → [cache]; `src/lib.rs` → []).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn place_of_path(path: &[String]) -> Place {
    match path.first() {
        None => Place::Root,
        Some(top) => place_of_top(top),
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Pound,
    Other(char),
}

/// Tokens with their line numbers; comments, strings and char literals
/// dropped.
fn tokenize(src: &str) -> Vec<(usize, Tok)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += (chars[i] == '\n') as usize;
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string_len(&chars[i..]).is_some() {
            let len = raw_string_len(&chars[i..]).unwrap();
            line += chars[i..i + len].iter().filter(|&&c| c == '\n').count();
            i += len;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                line += (chars.get(i) == Some(&'\n')) as usize;
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1; // a lifetime: its name follows as an identifier
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((line, Tok::Ident(chars[start..i].iter().collect())));
        } else if c == ':' && next == Some(':') {
            out.push((line, Tok::PathSep));
            i += 2;
        } else {
            out.push((
                line,
                match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    '#' => Tok::Pound,
                    _ => Tok::Other(c),
                },
            ));
            i += 1;
        }
    }
    out
}

/// The length of the raw string literal (`r"…"`, `r#"…"#`) at the start of
/// `s`, if one starts there.
fn raw_string_len(s: &[char]) -> Option<usize> {
    let hashes = s[1..].iter().take_while(|&&c| c == '#').count();
    if s.get(1 + hashes) != Some(&'"') {
        return None;
    }
    let mut i = 2 + hashes;
    while i < s.len() {
        if s[i] == '"' && s[i + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    None
}

/// One upward name: the line, the path as written, and where it points.
struct Violation {
    line: usize,
    path: String,
    to: Place,
}

/// Every name in `src` (the file at module path `module`) that points
/// outside what `from` may name.
fn check_source(module: &[String], src: &str) -> Vec<Violation> {
    let from = place_of_path(module);
    let toks = tokenize(src);
    let mut found = Vec::new();
    // The module path at each open brace: inline `mod name {` pushes a name.
    let mut scopes: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        // `#[cfg(test)] mod name { … }`: skipped whole.
        if toks[i].1 == Tok::Pound && is_cfg_test(&toks[i..]) {
            let mut j = i + 7;
            if toks.get(j).map(|t| &t.1) == Some(&Tok::Ident("pub".into())) {
                j += 1;
            }
            if toks.get(j).map(|t| &t.1) == Some(&Tok::Ident("mod".into()))
                && toks.get(j + 2).map(|t| &t.1) == Some(&Tok::Open)
            {
                i = skip_block(&toks, j + 2);
                continue;
            }
        }
        match &toks[i].1 {
            Tok::Open => {
                let inline_mod = match (i.checked_sub(2).map(|k| &toks[k].1), i.checked_sub(1).map(|k| &toks[k].1)) {
                    (Some(Tok::Ident(m)), Some(Tok::Ident(name))) if m == "mod" => Some(name.clone()),
                    _ => None,
                };
                scopes.push(inline_mod);
            }
            Tok::Close => {
                scopes.pop();
            }
            Tok::Ident(word)
                if word == "crate"
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                    && (i == 0 || toks[i - 1].1 != Tok::PathSep) =>
            {
                for (line, top, written) in first_segments(&toks, i + 2) {
                    let to = place_of_top(&top);
                    if !from.may_name(to) {
                        found.push(Violation { line, path: format!("crate::{written}"), to });
                    }
                }
            }
            Tok::Ident(word)
                if word == "super"
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                    && (i == 0 || toks[i - 1].1 != Tok::PathSep) =>
            {
                let line = toks[i].0;
                let mut here: Vec<String> = module.to_vec();
                here.extend(scopes.iter().flatten().cloned());
                let mut j = i;
                let mut written = String::new();
                while matches!(&toks.get(j).map(|t| &t.1), Some(Tok::Ident(w)) if w == "super")
                    && toks.get(j + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                {
                    here.pop();
                    written.push_str("super::");
                    j += 2;
                }
                let targets: Vec<(usize, Place, String)> = if here.is_empty() {
                    first_segments(&toks, j).into_iter().map(|(line, top, w)| (line, place_of_top(&top), w)).collect()
                } else {
                    vec![(line, place_of_path(&here), String::new())]
                };
                for (line, to, rest) in targets {
                    if !from.may_name(to) {
                        found.push(Violation { line, path: format!("{written}{rest}"), to });
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Whether the attribute starting at `toks[0]` (`#`) is `#[cfg(test)]`.
fn is_cfg_test(toks: &[(usize, Tok)]) -> bool {
    let words: Vec<&Tok> = toks.iter().take(7).map(|t| &t.1).collect();
    words.len() == 7
        && words[1] == &Tok::Other('[')
        && words[2] == &Tok::Ident("cfg".into())
        && words[3] == &Tok::Other('(')
        && words[4] == &Tok::Ident("test".into())
        && words[5] == &Tok::Other(')')
        && words[6] == &Tok::Other(']')
}

/// The index just past the block whose `{` is at `open`.
fn skip_block(toks: &[(usize, Tok)], open: usize) -> usize {
    let mut depth = 0;
    for (k, (_, t)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The line and first segment of the path that starts at `toks[at]`, with
/// the path as written; for a group (`{a::b, c}`), those of each member.
fn first_segments(toks: &[(usize, Tok)], at: usize) -> Vec<(usize, String, String)> {
    match toks.get(at).map(|t| &t.1) {
        Some(Tok::Ident(name)) => {
            let mut written = name.clone();
            let mut k = at + 1;
            while toks.get(k).map(|t| &t.1) == Some(&Tok::PathSep) {
                match toks.get(k + 1).map(|t| &t.1) {
                    Some(Tok::Ident(next)) => {
                        written.push_str("::");
                        written.push_str(next);
                        k += 2;
                    }
                    _ => break,
                }
            }
            vec![(toks[at].0, name.clone(), written)]
        }
        Some(Tok::Open) => {
            let mut members = Vec::new();
            let mut depth = 0;
            let mut expect_member = true;
            for (k, (_, t)) in toks.iter().enumerate().skip(at) {
                match t {
                    Tok::Open => {
                        depth += 1;
                        if depth == 1 {
                            expect_member = true;
                            continue;
                        }
                    }
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Other(',') if depth == 1 => {
                        expect_member = true;
                        continue;
                    }
                    Tok::Ident(_) if depth == 1 && expect_member => {
                        members.extend(first_segments(toks, k));
                    }
                    _ => {}
                }
                expect_member = false;
            }
            members
        }
        _ => Vec::new(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_names_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files under {}", files.len(), src.display());
    let mut report = String::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let module = module_path(rel);
        let place = place_of_path(&module);
        if place == Place::Root && !module.is_empty() {
            let _ = writeln!(
                report,
                "src/{}: not in a layer folder: move it into one of {LAYERS:?} (or add its folder to LAYERS in tests/layers.rs)",
                rel.display()
            );
            continue;
        }
        let text = fs::read_to_string(file).expect("readable source");
        for v in check_source(&module, &text) {
            let _ = writeln!(
                report,
                "src/{}:{}: {} names `{}` in {}: a module may only use its own layer and those below it",
                rel.display(),
                v.line,
                place.describe(),
                v.path,
                v.to.describe()
            );
        }
    }
    assert!(report.is_empty(), "upward names:\n{report}");
}

#[test]
fn every_layer_folder_says_what_it_is() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (i, layer) in LAYERS.iter().enumerate() {
        let path = src.join(layer).join("mod.rs");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let first = text.lines().next().unwrap_or("");
        let want = format!("//! Layer {i}, {layer}");
        assert!(
            first.starts_with(&want),
            "{}: its first line should open with `{want}`, not `{first}`",
            path.display()
        );
    }
}

/// The checker itself catches what it should, and only that.
#[test]
fn the_checker_catches_upward_names() {
    let at = |p: &str| module_path(Path::new(p));
    let lines = |module: &[String], src: &str| check_source(module, src).iter().map(|v| v.line).collect::<Vec<_>>();
    // Plain paths, groups over lines, `super` out of a folder, the root.
    let src = "use crate::platform::os;\n\
               use crate::front::init;\n\
               use crate::{\n    middle::transfer,\n    capi,\n};\n\
               fn f() { crate::cache::percpu::drain_all(); let _ = crate::RseqAlloc; }\n\
               use super::super::front;\n";
    assert_eq!(lines(&at("backend/medium.rs"), src), [2, 4, 5, 7, 7, 8]);
    // The same names from the top are fine; nothing may name test_hooks.
    assert_eq!(lines(&at("capi/mod.rs"), "use crate::front::init; use crate::test_hooks;"), [1]);
    assert!(lines(&at("lib.rs"), "use crate::capi; use crate::test_hooks;").is_empty());
    assert!(lines(&at("test_hooks.rs"), "use crate::capi; use crate::RseqAlloc;").is_empty());
    // Comments, strings, test modules and in-folder `super` are not names.
    let quiet = "// crate::front\n/* crate::capi */\nconst S: &str = \"crate::front\";\n\
                 use super::transfer;\nmod inner { use super::super::central; }\n\
                 #[cfg(test)]\nmod tests { use crate::front::init; }\n";
    assert!(lines(&at("middle/central.rs"), quiet).is_empty());
    // From a folder's mod.rs, `super` is the root.
    assert_eq!(lines(&at("rseq/mod.rs"), "use super::front::init;\nuse super::platform::os;"), [1]);
}
