//! The module graph the crate doc (`src/lib.rs`) draws is the one the code has: every
//! top-level module uses only modules of lower layers (and the `metrics` leaf), and no two
//! files depend on each other through any chain of `use`s.
//!
//! Dependencies are read from the source text (`crate::a::b` paths, `super::x` and child
//! modules), without `#[cfg(test)]` modules, whose fixtures may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`table::upstream`) -> the source of that file without its test module.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = module_name(&root, &path);
                if name != "lib" && name != "main" {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.insert(name, without_comments(without_tests(&text)));
                }
            }
        }
    }
    out
}

fn module_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers of a `::`-path starting right after `at` in `text`.
fn path_after(text: &str, at: usize) -> Vec<&str> {
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].split("::").filter(|p| !p.is_empty()).collect()
}

/// The longest known module that `path` (relative to the crate root) names.
fn resolve(path: &[&str], known: &BTreeMap<String, String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

/// File-level edges: module -> the modules it names.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in modules {
        let parent: Vec<&str> = name.split("::").collect();
        let parent = &parent[..parent.len() - 1];
        let mut found = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            found.extend(resolve(&path_after(text, at + 7), modules));
        }
        for (at, _) in text.match_indices("super::") {
            let mut path = parent.to_vec();
            path.extend(path_after(text, at + 7));
            found.extend(resolve(&path, modules));
        }
        for line in text.lines() {
            let line = line.trim_start();
            let Some(rest) = line
                .strip_prefix("use self::")
                .or_else(|| line.strip_prefix("use "))
            else {
                continue;
            };
            let mut path: Vec<&str> = name.split("::").collect();
            path.extend(path_after(rest, 0));
            if let Some(child) = resolve(&path, modules) {
                if child.len() > name.len() {
                    found.insert(child);
                }
            }
        }
        found.remove(name);
        // A parent naming its own children is how Rust declares them, not a dependency back.
        found.retain(|m| !name.starts_with(&format!("{m}::")));
        edges.insert(name.clone(), found);
    }
    edges
}

/// The layer table of the crate doc: module -> layer (`None` for the leaf).
fn layers() -> BTreeMap<String, Option<u32>> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let table = lib
        .split("//!  layer  modules")
        .nth(1)
        .expect("src/lib.rs draws the layer table")
        .split("//! ```")
        .next()
        .unwrap();
    let mut layers = BTreeMap::new();
    for line in table.lines() {
        let words: Vec<&str> = line.trim_start_matches("//!").split_whitespace().collect();
        let Some((layer, rest)) = words.split_first() else {
            continue;
        };
        let layer = if *layer == "leaf" {
            None
        } else {
            Some(layer.parse::<u32>().expect("a layer number"))
        };
        for module in rest
            .iter()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        {
            layers.insert((*module).to_owned(), layer);
        }
    }
    layers
}

#[test]
fn every_module_uses_only_lower_layers() {
    let modules = modules();
    let layers = layers();
    let top = |m: &str| m.split("::").next().unwrap().to_owned();
    let mut wrong = Vec::new();
    for (from, to) in edges(&modules) {
        let from_top = top(&from);
        let Some(from_layer) = layers.get(&from_top) else {
            wrong.push(format!(
                "{from_top} is not in the layer table of src/lib.rs"
            ));
            continue;
        };
        for target in to {
            let to_top = top(&target);
            if to_top == from_top {
                continue;
            }
            let ok = match (from_layer, layers.get(&to_top)) {
                (_, Some(None)) => true,
                (Some(a), Some(Some(b))) => b > a,
                _ => false,
            };
            if !ok {
                wrong.push(format!("{from} uses {target}"));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "against the layers of src/lib.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_depends_on_itself_through_others() {
    let edges = edges(&modules());
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("a dependency cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_a_cycle_and_a_layer_breach() {
    let mut modules = BTreeMap::new();
    modules.insert("a".to_owned(), "use crate::b::x;".to_owned());
    modules.insert("b".to_owned(), "fn f() { super::a::g() }".to_owned());
    let edges = edges(&modules);
    assert!(edges["a"].contains("b"));
    assert!(edges["b"].contains("a"));
    assert!(layers().get("model").is_some_and(|l| *l == Some(8)));
    assert_eq!(layers().get("metrics"), Some(&None));
}
