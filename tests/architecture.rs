//! The map is the territory: the layer table of `docs/ARCHITECTURE.md`
//! (each module of `src/` and the modules it may use) held against the
//! `crate::` paths of every file under `src/` (the `plan_queue::` paths of
//! `main.rs`). A module that uses one its row does not list fails, naming
//! the file, the line and the path; a circle, in the table or in the code,
//! fails naming the modules on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The map, relative to the package root.
const MAP: &str = "docs/ARCHITECTURE.md";
/// The heading of the layer table in the map.
const LAYERS: &str = "## Layers";

/// Module → the modules it may use, as the map's layer table says.
type Layers = BTreeMap<String, BTreeSet<String>>;
/// Module → its row in the table, from the top (0).
type Rows = BTreeMap<String, usize>;

#[test]
fn every_import_under_src_is_one_the_architecture_map_allows_and_none_makes_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(MAP)).expect("docs/ARCHITECTURE.md");
    let mut sources = Vec::new();
    for path in rust_files(&root.join("src")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        sources.push((relative, text));
    }
    assert!(sources.len() > 20, "src/ read: {} files", sources.len());
    let failures = check(&doc, &sources);
    assert!(
        failures.is_empty(),
        "docs/ARCHITECTURE.md and src/ disagree:\n{}",
        failures.join("\n")
    );
}

#[test]
fn an_import_the_table_does_not_allow_fails_naming_the_file_line_and_path() {
    let doc = table(&[
        ("`amqp/`", "`config`"),
        ("`db/`", "—"),
        ("`config.rs`", "—"),
    ]);
    let sources = [
        source("src/config.rs", "pub fn f() {}\n"),
        source("src/amqp/mod.rs", "use crate::config::AmqpConfig;\n"),
        source(
            "src/amqp/link.rs",
            "use super::x;\n\nuse crate::db::outbox::ClaimedDispatch;\n",
        ),
        source("src/db/mod.rs", "pub mod outbox;\n"),
    ];
    let failures = check(&doc, &sources);
    assert_eq!(
        failures,
        ["src/amqp/link.rs:3: `crate::db` — `amqp` may not use `db` (it may use: `config`)"]
    );
}

#[test]
fn a_circle_of_imports_fails_even_when_the_table_allows_each_arrow() {
    let doc = table(&[("`config.rs`", "`metrics`"), ("`metrics.rs`", "`config`")]);
    let sources = [
        source("src/config.rs", "fn f() { crate::metrics::g() }\n"),
        source("src/metrics.rs", "use crate::{config::{self, Config}};\n"),
    ];
    let failures = check(&doc, &sources);
    assert!(
        failures.contains(&"the layer table has a circle: config → metrics → config".to_owned()),
        "{failures:?}"
    );
    assert!(
        failures.contains(&"src/ has a circle of imports: config → metrics → config".to_owned()),
        "{failures:?}"
    );
}

#[test]
fn a_row_that_may_use_a_module_above_it_fails() {
    let doc = table(&[("`relay/`", "`db`"), ("`db/`", "`relay`")]);
    let sources = [source("src/relay/mod.rs", ""), source("src/db/mod.rs", "")];
    let failures = check(&doc, &sources);
    assert!(
        failures
            .contains(&"the layer table lets `db` use `relay`, which stands above it".to_owned()),
        "{failures:?}"
    );
}

#[test]
fn paths_in_comments_strings_and_other_crates_are_not_imports() {
    let doc = table(&[("`config.rs`", "—"), ("`db/`", "—")]);
    let sources = [
        source(
            "src/config.rs",
            "//! see [`crate::db`]\n/* crate::db */ const A: &str = \"crate::db\";\n\
             const B: &str = r#\"crate::db \"x\"\"#; const C: char = '\"'; fn f<'a>(x: &'a str) {}\n\
             macro_rules! m { () => { $crate::x }; }\nuse other_crate::db;\n",
        ),
        source("src/db/mod.rs", "pub mod x;\n"),
    ];
    assert_eq!(check(&doc, &sources), Vec::<String>::new());
}

#[test]
fn a_module_without_a_row_and_a_row_without_a_module_both_fail() {
    let doc = table(&[("`gone/`", "`config`"), ("`config.rs`", "—")]);
    let sources = [
        source("src/config.rs", ""),
        source("src/relay/mod.rs", "use crate::config::X;\n"),
    ];
    let failures = check(&doc, &sources);
    assert!(
        failures.contains(&"src/relay/ has no row in the layer table".to_owned()),
        "{failures:?}"
    );
    assert!(
        failures
            .contains(&"the layer table names `gone`, which is not a module of src/".to_owned()),
        "{failures:?}"
    );
}

/// A map with a layer table of `rows` (module cell, may-use cell).
fn table(rows: &[(&str, &str)]) -> String {
    let mut doc = format!("# Map\n\n{LAYERS}\n\n| module | what | may use |\n|---|---|---|\n");
    for (module, may_use) in rows {
        doc.push_str(&format!("| {module} | things | {may_use} |\n"));
    }
    doc + "\n## Next\n"
}

fn source(path: &str, text: &str) -> (String, String) {
    (path.to_owned(), text.to_owned())
}

/// Every disagreement between the map `doc` and `sources` (path under the
/// package root, text), one line each.
fn check(doc: &str, sources: &[(String, String)]) -> Vec<String> {
    let mut failures = Vec::new();
    let (layers, rows) = match layer_table(doc) {
        Ok(table) => table,
        Err(e) => return vec![e],
    };
    for (module, may_use) in &layers {
        for used in may_use.iter().filter(|m| rows.get(*m) <= rows.get(module)) {
            failures.push(format!(
                "the layer table lets `{module}` use `{used}`, which stands above it"
            ));
        }
    }
    let aliases = crate_root_aliases(sources);
    let modules: BTreeMap<String, String> = sources
        .iter()
        .filter_map(|(path, _)| module_of(path).map(|m| (m, shown(path))))
        .collect();
    for (module, place) in &modules {
        if !layers.contains_key(module) {
            failures.push(format!("{place} has no row in the layer table"));
        }
    }
    for module in layers.keys().filter(|m| !modules.contains_key(*m)) {
        failures.push(format!(
            "the layer table names `{module}`, which is not a module of src/"
        ));
    }
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources {
        let Some(module) = module_of(path) else {
            continue;
        };
        let prefix = if module == "main" {
            "plan_queue"
        } else {
            "crate"
        };
        let allowed = layers.get(&module).cloned().unwrap_or_default();
        for (line, target) in imports(text, prefix, depth(path)) {
            let target = aliases.get(&target).cloned().unwrap_or(target);
            if target == module {
                continue;
            }
            used.entry(module.clone())
                .or_default()
                .insert(target.clone());
            if !allowed.contains(&target) {
                let listed: Vec<String> = allowed.iter().map(|m| format!("`{m}`")).collect();
                failures.push(format!(
                    "{path}:{line}: `{prefix}::{target}` — `{module}` may not use `{target}` (it may use: {})",
                    if listed.is_empty() { "nothing".to_owned() } else { listed.join(", ") }
                ));
            }
        }
    }
    if let Some(circle) = find_circle(&layers) {
        failures.push(format!(
            "the layer table has a circle: {}",
            circle.join(" → ")
        ));
    }
    if let Some(circle) = find_circle(&used) {
        failures.push(format!(
            "src/ has a circle of imports: {}",
            circle.join(" → ")
        ));
    }
    failures.dedup();
    failures
}

/// The table under [`LAYERS`]: the first column names one or more modules
/// (`config.rs`, `routes/`), the last the modules they may use, each in
/// backticks (`—` for none; words outside backticks are comments).
fn layer_table(doc: &str) -> Result<(Layers, Rows), String> {
    let section = doc
        .split_once(LAYERS)
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .ok_or(format!("{MAP} has no section {LAYERS}"))?;
    let mut layers = Layers::new();
    let mut rows = Rows::new();
    for line in section.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if cells.len() < 3 || cells[0].trim() == "module" || cells[0].contains("---") {
            continue;
        }
        let may_use: BTreeSet<String> = backticked(cells[cells.len() - 1])
            .iter()
            .map(|m| top_of(m))
            .collect();
        for module in backticked(cells[0]) {
            rows.insert(top_of(&module), rows.len());
            layers.insert(top_of(&module), may_use.clone());
        }
    }
    if layers.is_empty() {
        return Err(format!("{MAP}: no rows under {LAYERS}"));
    }
    Ok((layers, rows))
}

/// The texts between backticks.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// `config.rs` → `config`, `routes/` → `routes`, `db::outbox` → `db`.
fn top_of(name: &str) -> String {
    let name = name.trim().trim_end_matches('/');
    let name = name.strip_suffix(".rs").unwrap_or(name);
    name.split("::").next().unwrap_or(name).to_owned()
}

/// The top-level module a file under `src/` belongs to; `None` for the
/// crate root `lib.rs`, which declares them all.
fn module_of(path: &str) -> Option<String> {
    let inside = path.strip_prefix("src/")?;
    if inside == "lib.rs" {
        return None;
    }
    Some(top_of(inside.split('/').next()?))
}

/// How the failure names a module's place: `src/config.rs`, `src/routes/`.
fn shown(path: &str) -> String {
    let inside = path.trim_start_matches("src/");
    match inside.split_once('/') {
        Some((dir, _)) => format!("src/{dir}/"),
        None => path.to_owned(),
    }
}

/// How many `super::` lead from the file's module to the crate root.
fn depth(path: &str) -> usize {
    let inside = path.trim_start_matches("src/");
    let parts = inside.split('/').count();
    if inside.ends_with("/mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// What the crate root re-exports under another name (`pub use db::seed;`
/// makes `seed` a path into `db`).
fn crate_root_aliases(sources: &[(String, String)]) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    let Some((_, lib)) = sources.iter().find(|(p, _)| p == "src/lib.rs") else {
        return aliases;
    };
    let code = code_only(lib);
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let segments: Vec<&str> = path.trim().split("::").map(str::trim).collect();
        if let (Some(first), Some(last)) = (segments.first(), segments.last()) {
            if segments.len() > 1 && !last.contains('{') {
                aliases.insert((*last).to_owned(), (*first).to_owned());
            }
        }
    }
    aliases
}

/// The top-level modules that `text` names through `<prefix>::` (or enough
/// `super::` to reach the crate root from `depth`), with their line.
fn imports(text: &str, prefix: &str, depth: usize) -> Vec<(usize, String)> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(start) = next_path_start(&code, at, prefix, depth) else {
            break;
        };
        let (path_start, after) = start;
        at = after;
        let line = code[..path_start].matches('\n').count() + 1;
        for module in leading_names(&code[after..]) {
            found.push((line, module));
        }
    }
    found
}

/// The next path from the crate root at or after `at`: its start and the
/// index right after `<prefix>::` (or the `super::` chain).
fn next_path_start(code: &str, at: usize, prefix: &str, depth: usize) -> Option<(usize, usize)> {
    let bytes = code.as_bytes();
    let mut i = at;
    while i < bytes.len() {
        let word_start =
            i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b'$' && bytes[i - 1] != b':';
        if word_start {
            let rest = &code[i..];
            let head = format!("{prefix}::");
            if rest.starts_with(&head) && (i + head.len()) < bytes.len() {
                return Some((i, i + head.len()));
            }
            if depth > 0 && rest.starts_with("super::") {
                let mut j = i;
                let mut ups = 0;
                while code[j..].starts_with("super::") {
                    ups += 1;
                    j += "super::".len();
                    j += code[j..].len() - code[j..].trim_start().len();
                }
                if ups >= depth {
                    return Some((i, j));
                }
                i = j;
                continue;
            }
        }
        i += 1;
    }
    None
}

/// The first name of the path at the start of `rest`, or the first name of
/// each item of a `{…}` group there (`self` left out).
fn leading_names(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let mut level = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => break,
                '}' => level -= 1,
                ',' if level == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    item_start = false;
                    let name = ident_at(&group[i..]);
                    if !name.is_empty() && name != "self" {
                        names.push(name);
                    }
                }
                _ => {}
            }
        }
        return names;
    }
    let name = ident_at(rest);
    if name.is_empty() {
        Vec::new()
    } else {
        vec![name]
    }
}

fn ident_at(text: &str) -> String {
    text.bytes()
        .take_while(|b| is_ident(*b))
        .map(char::from)
        .collect()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `source` with comments and string and character literals blanked (line
/// breaks kept, so that positions keep their line).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut level = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    level += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    level -= 1;
                    out.push_str("  ");
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('#') | Some('"')) && raw_may_start(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let closes = |at: usize| {
                chars[at] == '"'
                    && chars
                        .get(at + 1..at + 1 + hashes)
                        .is_some_and(|s| s.iter().all(|&h| h == '#'))
            };
            let mut end = i + 2 + hashes;
            while end < chars.len() && !closes(end) {
                end += 1;
            }
            let end = (end + 1 + hashes).min(chars.len());
            for &ch in &chars[i..end] {
                out.push(blank(ch));
            }
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // a character literal ('x', '\n', '\''); a lifetime has no closing quote
            let mut j = i + 1;
            if chars.get(j) == Some(&'\\') {
                j += 2;
            } else {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            for _ in i..=j.min(chars.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether an `r` at `i` can open a raw string (`r"`, `r#"`, `br"`), not
/// end a name such as `for`.
fn raw_may_start(chars: &[char], i: usize) -> bool {
    match i.checked_sub(1).map(|p| chars[p]) {
        None => true,
        Some('b') => i < 2 || !(chars[i - 2].is_alphanumeric() || chars[i - 2] == '_'),
        Some(p) => !(p.is_alphanumeric() || p == '_'),
    }
}

/// A circle of `graph` as its modules in order, the first repeated last.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = path[from..].to_vec();
                circle.push(node.to_owned());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, path) {
                return Some(circle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(circle);
        }
    }
    None
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
