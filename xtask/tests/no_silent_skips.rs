//! A test either runs what it names or fails: none may return early or skip
//! and still be counted as passed, where a green run would prove nothing
//! (issue 17 found one returning early whenever `cargo xtask test` set an
//! environment variable, and one printing "skipped" when PostgreSQL was
//! missing). This walks every Rust file of the workspace and fails, naming
//! file and line, on each of:
//!
//! - a print macro whose string literal speaks of skipping: the message is
//!   lost in the output nextest captures from a passing test;
//! - an ignore attribute (also under `cfg_attr`): the run is green with the
//!   test left out;
//! - a guard at the top level of a test function whose block starts with a
//!   bare `return;` or `return Ok(());`: the test passes without asserting.
//!
//! A test that cannot run must fail with what is missing instead. The
//! needles are built with `concat!`, so this file does not match itself.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The print macros' common stem: `print`, `println`, `eprint`, `eprintln`.
const PRINT: &str = concat!("pr", "int");

/// What a printed skip message says (compared lowercased).
const SKIP: &str = concat!("sk", "ip");

/// The attribute that leaves a test out.
const IGNORE: &str = concat!("ign", "ore");

#[test]
fn no_test_skips_silently() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files).expect("listing the workspace's Rust files");
    // A walk that found nothing would pass as well.
    assert!(
        files
            .iter()
            .any(|file| file.ends_with("xtask/tests/no_silent_skips.rs")),
        "the walk of {} did not find this file",
        root.display()
    );

    let mut findings = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let shown = file.strip_prefix(&root).unwrap_or(file);
        for (line, what) in silent_skips(&source) {
            findings.push(format!("{}:{line}: {what}", shown.display()));
        }
    }
    assert!(
        findings.is_empty(),
        "tests that can pass without running (make each fail with what it misses):\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_check_finds_each_kind_of_silent_skip() {
    let source = concat!(
        "fn helper() {\n",
        "    epr",
        "intln!(\"{}\", x);\n",
        "    epr",
        "intln!(\n",
        "        \"Skipped: no database\"\n",
        "    );\n",
        "    pr",
        "int!(\"{skip_count} done\");\n",
        "    // pr",
        "intln!(\"skipping\");\n",
        "}\n",
        "#[test]\n",
        "#[ign",
        "ore = \"slow\"]\n",
        "fn guarded() {\n",
        "    if std::env::var_os(\"X\").is_some() {\n",
        "        return; // set by CI\n",
        "    }\n",
        "    for _ in 0..3 {\n",
        "        if done() {\n",
        "            return;\n",
        "        }\n",
        "    }\n",
        "}\n",
        "fn not_a_test() {\n",
        "    if quiet() {\n",
        "        return;\n",
        "    }\n",
        "}\n",
        "#[cfg_attr(miri, ign",
        "ore)]\n",
        "#[tokio::test]\n",
        "async fn let_else() -> anyhow::Result<()> {\n",
        "    let Ok(url) = std::env::var(\"URL\") else { return Ok(()) };\n",
        "    Ok(())\n",
        "}\n",
    );
    let lines: Vec<usize> = silent_skips(source)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(lines, [3, 10, 12, 26, 29]);
}

/// The workspace root: the parent of this package's directory. The
/// directory Cargo passes at run time comes first, so a test binary built
/// in another clone sharing the target directory checks this clone.
fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

/// Every `.rs` file under `dir`, leaving out hidden directories and build
/// output (`target`, and any directory Cargo marked with `CACHEDIR.TAG`,
/// whatever `CARGO_TARGET_DIR` calls it).
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", path.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            if !name.starts_with('.') && name != "target" && !path.join("CACHEDIR.TAG").exists() {
                rust_files(&path, files)?;
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The 1-based lines of `source` that let a test pass without running, with
/// what each one does.
fn silent_skips(source: &str) -> Vec<(usize, &'static str)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut offset = 0;
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let start = offset;
        offset += line.len() + 1;
        if line.trim_start().starts_with("//") {
            continue;
        }
        let prints_skip = print_calls(line).into_iter().any(|args| {
            let args = source.get(start + args..).unwrap_or_default();
            string_literals(args)
                .iter()
                .any(|literal| without_placeholders(literal).to_lowercase().contains(SKIP))
        });
        if prints_skip {
            found.push((index + 1, "prints a skip message"));
        }
        if has_ignore_attribute(line) {
            found.push((index + 1, "ignores a test"));
        }
        if returns_from_a_test(&lines, index) {
            found.push((index + 1, "returns early from a test"));
        }
    }
    found
}

/// Where the arguments of each print-macro call on `line` start: the byte
/// just after its opening parenthesis.
fn print_calls(line: &str) -> Vec<usize> {
    let mut calls = Vec::new();
    for (at, _) in line.match_indices(PRINT) {
        let name_start = if line[..at].ends_with('e') {
            at - 1
        } else {
            at
        };
        let standalone = line[..name_start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_identifier_char(c));
        let after = &line[at + PRINT.len()..];
        let after = after.strip_prefix("ln").unwrap_or(after);
        if standalone && after.starts_with("!(") {
            calls.push(line.len() - after.len() + 2);
        }
    }
    calls
}

/// The contents of the string literals among a macro's arguments, `args`
/// being the source after its opening parenthesis.
fn string_literals(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    let mut literals = Vec::new();
    let mut depth = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_identifier = i > 0 && is_identifier_char(chars[i - 1]);
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            '"' => {
                let mut literal = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&c) = chars.get(i) {
                        literal.push(c);
                    }
                    i += 1;
                }
                literals.push(literal);
            }
            'r' if !after_identifier && matches!(chars.get(i + 1).copied(), Some('"' | '#')) => {
                let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
                i += 1 + hashes;
                if chars.get(i) == Some(&'"') {
                    let close: Vec<char> = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let mut literal = String::new();
                    i += 1;
                    while i < chars.len() && !chars[i..].starts_with(&close) {
                        literal.push(chars[i]);
                        i += 1;
                    }
                    i += hashes;
                    literals.push(literal);
                }
            }
            // A character literal (its quote or bracket must not count);
            // anything else after a quote is a lifetime.
            '\'' => {
                if chars.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    literals
}

/// A format string without its `{…}` placeholders, which name arguments
/// rather than say anything.
fn without_placeholders(literal: &str) -> String {
    let mut text = String::new();
    let mut chars = literal.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() != Some(&'{') {
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            if c == '{' {
                chars.next();
            }
            text.push(c);
        }
    }
    text
}

/// Whether `line` holds an ignore attribute, directly or under `cfg_attr`.
fn has_ignore_attribute(line: &str) -> bool {
    line.match_indices("#[").any(|(at, _)| {
        let body = line[at + 2..].trim_start();
        let body = body.split_once(']').map_or(body, |(body, _)| body);
        is_ignore(body)
            || body
                .strip_prefix("cfg_attr(")
                .is_some_and(|args| args.split(',').skip(1).any(is_ignore))
    })
}

/// Whether an attribute's text starts with the ignore attribute's name.
fn is_ignore(attribute: &str) -> bool {
    attribute
        .trim_start()
        .strip_prefix(IGNORE)
        .is_some_and(|rest| !rest.starts_with(is_identifier_char))
}

/// Whether line `index` opens a guard (`if`, `else` or `let … else`) at the
/// top level of a test function, whose block starts with a bare return.
fn returns_from_a_test(lines: &[&str], index: usize) -> bool {
    let line = lines[index];
    let code = line.trim_start();
    let guard = code.starts_with("if ")
        || code.starts_with("} else")
        || (code.starts_with("let ") && code.contains(" else"));
    if !guard || !block_starts_with_bare_return(&lines[index..]) {
        return false;
    }
    let indent = line.len() - code.len();
    let Some(function) = enclosing_function(lines, index, indent) else {
        return false;
    };
    indentation(lines[function]) + 4 == indent && is_test_function(lines, function)
}

/// Whether the first block opened in `lines` (within the guard's first four
/// lines) starts with `return;` or `return Ok(());`.
fn block_starts_with_bare_return(lines: &[&str]) -> bool {
    let Some((open, rest)) = lines
        .iter()
        .take(4)
        .enumerate()
        .find_map(|(k, line)| line.rfind('{').map(|at| (k, &line[at + 1..])))
    else {
        return false;
    };
    let first = std::iter::once(rest)
        .chain(lines[open + 1..].iter().copied())
        .map(|line| line.split("//").next().unwrap_or_default().trim())
        .find(|statement| !statement.is_empty());
    first.is_some_and(|statement| {
        let statement =
            statement.trim_end_matches(|c: char| c == '}' || c == ';' || c.is_whitespace());
        statement == "return" || statement == "return Ok(())"
    })
}

/// The line of the function signature that line `index` (indented by
/// `indent`) is directly in, if the first less indented line above it is
/// one (the closing line of a signature split over lines leads to it).
fn enclosing_function(lines: &[&str], index: usize, indent: usize) -> Option<usize> {
    let mut above = (0..index)
        .rev()
        .filter(|&k| !lines[k].trim().is_empty() && indentation(lines[k]) < indent);
    let mut candidate = above.next()?;
    if lines[candidate].trim_start().starts_with(')') {
        let signature_indent = indentation(lines[candidate]);
        candidate = above.find(|&k| indentation(lines[k]) == signature_indent)?;
    }
    is_function_signature(lines[candidate]).then_some(candidate)
}

/// Whether `line` starts a function (`pub`, `async`, `const` or `unsafe`
/// before `fn` allowed).
fn is_function_signature(line: &str) -> bool {
    let mut code = line.trim_start();
    while let Some(rest) = ["pub(crate) ", "pub ", "async ", "const ", "unsafe "]
        .iter()
        .find_map(|prefix| code.strip_prefix(prefix))
    {
        code = rest;
    }
    code.starts_with("fn ")
}

/// Whether the attributes above the signature on line `function` make it a
/// test (`#[test]`, `#[tokio::test]`, `#[tokio::test(…)]` and the like).
fn is_test_function(lines: &[&str], function: usize) -> bool {
    lines[..function]
        .iter()
        .rev()
        .map(|line| line.trim())
        .take_while(|line| line.starts_with("#[") || line.starts_with("//"))
        .filter_map(|line| line.strip_prefix("#["))
        .any(|attribute| {
            let path = attribute
                .split(['(', ']'])
                .next()
                .unwrap_or_default()
                .trim();
            path.rsplit("::").next() == Some("test")
        })
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}
