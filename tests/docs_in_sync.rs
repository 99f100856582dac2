//! The documentation promises that are cheap to check without running anything: the README's
//! opening example is the crate docs' opening example, and every example opens with a `//!`
//! comment that says how to run it.

/// The first code block of the crate docs (`src/lib.rs`), without its `//! ` prefixes.
fn crate_docs_example() -> String {
    let lib = include_str!("../src/lib.rs");
    let docs: Vec<&str> = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect();
    let start = docs
        .iter()
        .position(|l| l.starts_with("```"))
        .expect("a code block")
        + 1;
    let len = docs[start..]
        .iter()
        .position(|l| l.starts_with("```"))
        .expect("its end");
    docs[start..start + len].join("\n")
}

/// The code block of the README's "Quick start" section.
fn readme_quick_start() -> String {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("## Quick start")
        .expect("a Quick start section")..];
    let start = section.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let len = section[start..].find("\n```").expect("its end");
    section[start..start + len].to_owned()
}

/// The README's Quick start is the crate docs' runnable example, line for line (both run as
/// doctests; this keeps them from drifting apart).
#[test]
fn readme_quick_start_is_the_crate_docs_example() {
    assert_eq!(readme_quick_start(), crate_docs_example());
}

/// Every example opens with a `//!` comment that says how to run it (`cargo run --example`).
#[test]
fn every_example_says_what_it_shows_and_how_to_run_it() {
    let mut seen = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        assert!(text.starts_with("//! "), "{name} opens with a //! comment");
        let header: String = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(
            header.contains(&format!("cargo run --example {name}")),
            "{name}'s header says how to run it"
        );
        seen += 1;
    }
    assert!(seen >= 3, "found {seen} examples");
}
