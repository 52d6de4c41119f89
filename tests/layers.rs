//! The architecture rule of the README's Development section, checked on the source tree
//! (issue 14): every module uses only the layers below its own, no two modules use each other
//! (directly or round a loop), the library never sees clap or prints, and only `store` opens
//! SQLite databases.
//!
//! How: every `crate::`, `super::`, `self::` and `s3meta::` path in `src/` (use trees
//! expanded, comments and string literals removed) is resolved to the deepest module file it
//! names; that gives the module graph. Edges between a module and its own ancestors are left
//! out (a parent owns its children: a child using its parent's types is no cycle), and so are
//! the unit tests (`tests.rs` files and `mod tests` blocks, which use what they test).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Which top-level modules each may use; the binary (`main`, `cli`) may use them all.
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("keys", &[]),
    ("model", &["error", "keys"]),
    ("s3", &["model", "keys", "error"]),
    ("store", &["model", "keys", "error"]),
    ("scan", &["s3", "store", "model", "keys", "error"]),
    ("read", &["s3", "store", "model", "keys", "error"]),
];

#[test]
fn modules_use_only_the_layers_below_them() {
    let tree = Tree::read();
    let mut wrong = Vec::new();
    for (from, uses) in &tree.edges {
        if is_binary(from) || from.is_empty() {
            continue;
        }
        let allowed = LAYERS
            .iter()
            .find(|(m, _)| *m == from[0])
            .unwrap_or_else(|| panic!("{} has no layer in LAYERS", from.join("::")))
            .1;
        for to in uses {
            if to.is_empty() || to[0] == from[0] {
                continue;
            }
            if is_binary(to) || !allowed.contains(&to[0].as_str()) {
                wrong.push(format!("{} uses {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_modules_use_each_other() {
    let tree = Tree::read();
    let cycles = tree.cycles();
    assert!(
        cycles.is_empty(),
        "module cycles:\n{}",
        cycles
            .iter()
            .map(|c| c
                .iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" → "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_library_neither_sees_clap_nor_prints_nor_writes_sqlite_outside_store() {
    let tree = Tree::read();
    let mut wrong = Vec::new();
    for (module, text) in &tree.code {
        if is_binary(module) {
            continue;
        }
        let name = module.join("::");
        for word in [
            "clap",
            "println!",
            "eprintln!",
            "print!",
            "eprint!",
            "stdout()",
            "stderr()",
            "indicatif",
        ] {
            if text.contains(word) {
                wrong.push(format!("{name} mentions {word}"));
            }
        }
        let opens = text.contains("Connection::open") || text.contains("READ_WRITE");
        if opens && module.first().is_none_or(|m| m != "store") {
            wrong.push(format!("{name} opens a database (only store does)"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn is_binary(m: &Module) -> bool {
    m.first().is_some_and(|t| t == "main" || t == "cli")
}

struct Tree {
    /// Each module's code, comments, string literals and unit tests removed.
    code: BTreeMap<Module, String>,
    /// What each module uses, resolved to modules, ancestors left out.
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

impl Tree {
    fn read() -> Tree {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let mut code = BTreeMap::new();
        let mut is_dir = BTreeMap::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Module = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let last = module.last().cloned().unwrap_or_default();
            if last == "tests" {
                continue;
            }
            let dir = last == "mod" || module == ["lib"];
            if dir {
                module.pop();
            }
            if module == ["lib"] {
                module.clear();
            }
            let text = strip(&std::fs::read_to_string(&file).unwrap());
            is_dir.insert(module.clone(), dir);
            code.insert(module, text);
        }
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, text) in &code {
            let uses = edges.entry(module.clone()).or_default();
            for (root, path) in paths(text) {
                let mut base: Module = match root {
                    "crate" | "s3meta" => Vec::new(),
                    // In `a/b.rs`, `super` is `a`; in `a/b/mod.rs` too (`self` is `a::b`).
                    "super" => module[..module.len().saturating_sub(1)].to_vec(),
                    _ => module.clone(),
                };
                if root == "crate" && is_binary(module) && path.first().is_none_or(|p| p != "cli") {
                    // In the binary, `crate` is main.rs (and its `cli` folder).
                    base = vec!["main".into()];
                }
                let mut rest = path.as_slice();
                while rest.first().is_some_and(|p| p == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                let Some(target) = deepest(&code, &base) else {
                    continue;
                };
                let related = target.starts_with(module) || module.starts_with(&target);
                if !related {
                    uses.insert(target);
                }
            }
        }
        Tree { code, edges }
    }

    /// The strongly connected components of more than one module (Tarjan's algorithm).
    fn cycles(&self) -> Vec<Vec<Module>> {
        struct Search<'a> {
            edges: &'a BTreeMap<Module, BTreeSet<Module>>,
            index: BTreeMap<&'a Module, usize>,
            low: BTreeMap<&'a Module, usize>,
            stack: Vec<&'a Module>,
            found: Vec<Vec<Module>>,
        }
        impl<'a> Search<'a> {
            fn visit(&mut self, v: &'a Module) {
                let n = self.index.len();
                self.index.insert(v, n);
                self.low.insert(v, n);
                self.stack.push(v);
                for w in self.edges.get(v).into_iter().flatten() {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(lw);
                    } else if self.stack.contains(&w) {
                        let iw = self.index[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(iw);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        component.push(w.clone());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        self.found.push(component);
                    }
                }
            }
        }
        let mut search = Search {
            edges: &self.edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            found: Vec::new(),
        };
        for v in self.edges.keys() {
            if !search.index.contains_key(v) {
                search.visit(v);
            }
        }
        search.found
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The longest prefix of `path` that is a module.
fn deepest(code: &BTreeMap<Module, String>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| code.contains_key(m))
}

/// Removes comments, string and char literals, and `#[cfg(test)] mod tests { … }` blocks.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if text[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            i += text[i..].find("*/").map_or(b.len() - i, |e| e + 2);
        } else if text[i..].starts_with("r#\"") {
            i += 3 + text[i + 3..].find("\"#").map_or(b.len() - i - 3, |e| e + 2);
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // A char literal with an escape: `'\''`, `'\\'`, `'\u{10FFFF}'`.
            i += 2 + text[i + 2..].find('\'').map_or(b.len() - i - 2, |e| e + 1);
            out.push_str("' '");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            out.push_str("' '");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if text[i..].starts_with("#[cfg(test)]\nmod tests {") {
            // Its closing brace is the first one at the start of a line.
            i += text[i..].find("\n}").map_or(b.len() - i, |e| e + 2);
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path after `crate::`, `super::`, `self::` or `s3meta::`, use trees expanded.
fn paths(text: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for root in ["crate", "super", "self", "s3meta"] {
        let pat = format!("{root}::");
        let mut from = 0;
        while let Some(at) = text[from..].find(&pat) {
            let start = from + at;
            from = start + pat.len();
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut p = Parser {
                s: text.as_bytes(),
                i: from,
            };
            for path in p.tree() {
                out.push((root, path));
            }
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let hit = self.s[self.i..].starts_with(token.as_bytes());
        if hit {
            self.i += token.len();
        }
        hit
    }

    /// `a::b::{c, d::e}` → `[a, b, c]`, `[a, b, d, e]`.
    fn tree(&mut self) -> Vec<Vec<String>> {
        let mut prefix = Vec::new();
        loop {
            if self.eat("{") {
                let mut all = Vec::new();
                loop {
                    if self.eat("}") {
                        break;
                    }
                    let before = self.i;
                    for sub in self.tree() {
                        all.push(prefix.iter().cloned().chain(sub).collect());
                    }
                    self.eat(",");
                    if self.i == before {
                        break;
                    }
                }
                return if all.is_empty() { vec![prefix] } else { all };
            }
            match self.ident() {
                Some(name) => prefix.push(name),
                None => return vec![prefix],
            }
            if !self.eat("::") {
                return vec![prefix];
            }
        }
    }
}
