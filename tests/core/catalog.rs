//! The documentation's event catalog and flag table, the data JSON Schema and the code say the same;
//! the README stays short and indexes every page under docs/.
//!
//! The catalog (types, extensions, data members, lifecycle table) lives in docs/events.md and the
//! flag table in docs/running.md; the checks search README.md and every docs/*.md, and a failure
//! names the page the row belongs in.

use clap::CommandFactory;
use kfp_event_bridge::cli::Cli;
use kfp_event_bridge::derive::lifecycle;
use kfp_event_bridge::encode::{DATA_FIELDS, DEFAULT_TYPE_PREFIX, EXTENSIONS};
use kfp_event_bridge::model::FactKind;
use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const README_MAX_LINES: usize = 250;

/// The pages under docs/, by file name (`events.md`, …), sorted.
fn doc_pages() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|entry| {
            entry
                .expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    pages
}

/// README.md and every docs/*.md, concatenated.
fn documentation() -> String {
    let mut text = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    for page in doc_pages() {
        let path = Path::new(ROOT).join("docs").join(&page);
        text.push('\n');
        text.push_str(
            &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("docs/{page}: {e}")),
        );
    }
    text
}

#[test]
fn docs_document_every_type_extension_and_data_member() {
    let docs = documentation();
    for kind in FactKind::ALL {
        let ty = format!("`{DEFAULT_TYPE_PREFIX}.{}`", kind.type_suffix());
        assert!(
            docs.contains(&ty),
            "docs/events.md (Types) lacks type {ty} (searched README.md and docs/*.md)"
        );
    }
    for ext in EXTENSIONS {
        assert!(
            docs.contains(&format!("| `{ext}` |")),
            "docs/events.md (Extensions table) lacks extension {ext} (searched README.md and docs/*.md)"
        );
    }
    for member in DATA_FIELDS {
        assert!(
            docs.contains(&format!("| `{member}` |")),
            "docs/events.md (Data table) lacks data member {member} (searched README.md and docs/*.md)"
        );
    }
    for (category, terminal, patterns) in lifecycle::categories() {
        let row = format!("| `{category}` | {terminal} | {} |", patterns.join(", "));
        assert!(
            docs.contains(&row),
            "docs/events.md lifecycle table row differs from the code (searched README.md and docs/*.md): {row}"
        );
    }
}

#[test]
fn readme_is_short_and_links_every_docs_page() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail to a docs/ page"
    );
    let pages = doc_pages();
    assert!(!pages.is_empty(), "docs/ has no pages");
    for page in pages {
        assert!(
            readme.contains(&format!("](docs/{page})")),
            "README.md does not link docs/{page} (expected a link `](docs/{page})`)"
        );
    }
}

#[test]
fn schema_lists_exactly_the_data_members() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/event-data.v1.json"
        ))
        .expect("schema"),
    )
    .expect("schema is JSON");
    let properties: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        properties,
        DATA_FIELDS.iter().copied().collect::<BTreeSet<_>>()
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        required,
        DATA_FIELDS[..5].to_vec(),
        "the kfp-event-handler members are the required ones"
    );
    assert_eq!(schema["$id"], kfp_event_bridge::encode::DATA_SCHEMA);
}

#[test]
fn docs_flag_table_matches_the_command_line() {
    let docs = documentation();
    let mut cli = Cli::command();
    cli.build();
    let mut commands = vec![cli.clone()];
    commands.extend(cli.get_subcommands().cloned());
    for command in commands {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .expect("every flag has an env twin");
            let row = format!("| `--{long}` | `{env}` |");
            assert!(
                docs.contains(&row),
                "docs/running.md flag table (Options) lacks {row} (searched README.md and docs/*.md)"
            );
        }
    }
}

/// `lib.rs`'s Layout lists exactly the modules that exist, each on its bullet in dependency
/// order: a module imports (`crate::…`) only modules listed on its own bullet or below it.
#[test]
fn the_layout_lists_the_modules_in_dependency_order() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    // Bullet number of each module the Layout names first on a bullet line (`- [`name`]`, and
    // the others of a `[`a`], [`b`]` group).
    let mut rank: std::collections::BTreeMap<String, usize> = Default::default();
    let mut bullet = 0;
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! - ")) {
        bullet += 1;
        let head = line.split(':').next().unwrap_or_default();
        for name in head
            .split("[`")
            .skip(1)
            .filter_map(|n| n.split("`]").next())
        {
            if declared.contains(name) {
                rank.entry(name.to_owned()).or_insert(bullet);
            }
        }
    }
    let listed: BTreeSet<String> = rank.keys().cloned().collect();
    assert_eq!(listed, declared, "lib.rs Layout vs pub mod");
    for (module, at) in &rank {
        let mut files = vec![root.join(format!("{module}.rs"))];
        if let Ok(dir) = std::fs::read_dir(root.join(module)) {
            files.extend(dir.map(|e| e.expect("entry").path()));
        }
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        {
            let source = std::fs::read_to_string(file).expect("source");
            // Code only: a doc link to a module above is no import.
            let text: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for used in text.split("crate::").skip(1) {
                let name: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(other) = rank.get(&name) {
                    assert!(
                        other >= at,
                        "{} uses crate::{name}, listed above {module} in lib.rs's Layout",
                        file.display()
                    );
                }
            }
        }
    }
}
