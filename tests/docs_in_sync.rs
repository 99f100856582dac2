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

/// The flags of every `wsm` command line in the README and `docs/` exist: each `--flag` after
/// `wsm load`, `wsm load merge`, `wsm serve` or `wsm connect` is in that command's `--help`.
#[test]
fn every_wsm_flag_in_the_docs_exists() {
    let help = |cmd: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsm"))
            .args(cmd)
            .arg("--help")
            .output()
            .expect("wsm runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let helps = [
        ("wsm load merge", help(&["load", "merge"])),
        ("wsm load", help(&["load"])),
        ("wsm serve", help(&["serve"])),
        ("wsm connect", help(&["connect"])),
    ];
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    let mut texts = vec![(
        "README.md".to_owned(),
        include_str!("../README.md").to_owned(),
    )];
    for entry in std::fs::read_dir(docs).expect("docs/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        texts.push((path.display().to_string(), text));
    }
    let mut checked = 0;
    for (file, text) in texts {
        // Continued lines (`\` at the end) are one command.
        let joined = text.replace("\\\n", " ");
        for line in joined.lines() {
            let Some((cmd, help)) = helps.iter().find(|(c, _)| line.contains(&format!("{c} ")))
            else {
                continue;
            };
            let rest = line.split_once(&format!("{cmd} ")).map_or("", |(_, r)| r);
            // The command ends at a comment, a redirection, a pipe, a closing quote or the end
            // of inline code.
            let end = rest
                .find(['#', '>', '|', '"', ';', '&', '`'])
                .unwrap_or(rest.len());
            for flag in rest[..end]
                .split_whitespace()
                .filter(|t| t.starts_with("--"))
            {
                let flag = flag.split('=').next().unwrap_or(flag);
                let flag = flag.trim_end_matches([',', '.', ')', ':']);
                // `--jwt-*` stands for a family of flags.
                let known = match flag.strip_suffix('*') {
                    Some(prefix) => help.contains(prefix),
                    None => {
                        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"))
                    }
                };
                assert!(known, "{file}: `{cmd}` has no {flag}: {line}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "checked {checked} flags");
}
