//! The layering rule of `docs/ARCHITECTURE.md`, checked on every test run (issue #10): each top-level
//! module of `gateway/src` belongs to a layer, and a module may import only from layers strictly
//! below its own. That also rules out cycles between top-level modules, which this test reports
//! separately (with the module graph) so a failure says what to untangle.
//!
//! It reads the source as text: every `crate::…` path (including `use crate::{a, b::c}` groups) and
//! every `super::…` chain that climbs out of its top-level module. `lib.rs` and `main.rs` are the
//! wiring and may import anything; `tests.rs` files are test code and may use the wiring (`crate::build`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module, bottom first. A new top-level module must be added here.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("metrics", 1),
    ("stores", 2),
    ("upstream", 2),
    ("services", 3),
    ("http", 4),
    ("dashboard", 4),
    ("graphql", 4),
    ("worker", 4),
];
/// Items of the crate root (`crate::build`, `crate::StartError`): the wiring, above every layer.
const ROOT: &str = "<root>";
const ROOT_RANK: u8 = 5;

fn rank(module: &str) -> Option<u8> {
    if module == ROOT {
        return Some(ROOT_RANK);
    }
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file relative to `src` (`services/auth/jwt.rs` → services, auth, jwt).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    parts
}

/// Drops `//` comments and the contents of string literals, so paths in docs and messages don't count.
fn code_only(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
    }
    out
}

fn ident_at(s: &str) -> Option<String> {
    let ident: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!ident.is_empty()).then_some(ident)
}

/// First segments named after `crate::` in `code`: `crate::a::b` → a, `crate::{a, b::c}` → a, b.
fn crate_targets(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue; // `$crate::`, `other_crate::`, or part of a longer path
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            out.extend(items.iter().filter_map(|i| ident_at(i.trim())));
        } else if let Some(ident) = ident_at(rest) {
            out.push(ident);
        }
    }
    out
}

/// Top-level modules reached by `super::` chains that climb to the crate root.
fn super_targets(code: &str, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut search = code;
    while let Some(i) = search.find("super::") {
        let before = search[..i].chars().last();
        let mut rest = &search[i..];
        search = &search[i + "super::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue;
        }
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        // A file `a/b/c.rs` is module depth 3: `super` x2 is `a`, x3 is the crate root.
        if ups >= depth {
            out.extend(ident_at(rest));
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(&src).ok())
        .map(|rel| module_path(rel)[0].clone())
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut g: Graph = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let path = module_path(rel);
        let from = path[0].clone();
        if from == "lib" || from == "main" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code_only(line);
            let mut targets = crate_targets(&code);
            targets.extend(super_targets(&code, path.len()));
            for target in targets {
                let to = if top.contains(&target) { target } else { ROOT.to_owned() };
                if to != from {
                    let at = format!("{}:{}", rel.display(), n + 1);
                    g.entry(from.clone()).or_default().entry(to).or_default().push(at);
                }
            }
        }
        g.entry(from).or_default();
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).map(|e| e.keys()).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn modules_import_only_from_layers_below() {
    let g = graph();
    let mut report = String::new();
    let mut edges = 0;
    for (from, tos) in &g {
        let names: Vec<&str> = tos.keys().map(String::as_str).collect();
        edges += names.len();
        report.push_str(&format!("{from} -> {}\n", names.join(", ")));
    }
    let found = cycles(&g);
    report.push_str(&format!("modules {}, edges {edges}, cycles: {}\n", g.len(), found.len()));
    println!("{report}");

    let mut violations = Vec::new();
    for (from, tos) in &g {
        let Some(from_rank) = rank(from) else {
            violations.push(format!("`{from}` has no layer: add it to LAYERS in gateway/tests/layers.rs"));
            continue;
        };
        for (to, places) in tos {
            let to_rank = rank(to).unwrap_or(u8::MAX);
            if to_rank >= from_rank {
                violations.push(format!(
                    "`{from}` (layer {from_rank}) imports `{to}` (layer {to_rank}) at {}",
                    places.join(", ")
                ));
            }
        }
    }
    for scc in &found {
        violations.push(format!("cycle between top-level modules: {}", scc.join(", ")));
    }
    assert!(violations.is_empty(), "layering violations:\n{}\n\nmodule graph:\n{report}", violations.join("\n"));
}

#[test]
fn the_checker_sees_every_kind_of_path() {
    assert_eq!(crate_targets("use crate::domain::config::Config;"), ["domain"]);
    assert_eq!(crate_targets("use crate::{services::Error, stores::ledger};"), ["services", "stores"]);
    assert_eq!(crate_targets("let x = crate::http::routes::X; f(crate::metrics::M)"), ["http", "metrics"]);
    assert_eq!(crate_targets("use crate::{a::{b, c}, d};"), ["a", "d"]);
    assert!(crate_targets("$crate::x; other_crate::y").is_empty());
    assert!(crate_targets(&code_only(r#"let s = "crate::http"; // crate::http"#)).is_empty());
    // `super` from `services/auth/jwt.rs` (depth 3): two levels stay inside `services`, three escape.
    assert!(super_targets("use super::super::error::Error;", 3).is_empty());
    assert_eq!(super_targets("use super::super::super::http::X;", 3), ["http"]);
    assert_eq!(super_targets("use super::http::X;", 1), ["http"]);

    let mut g: Graph = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into(), vec![]);
        g.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
}
