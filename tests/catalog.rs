//! The README's event catalog and flag table, the data JSON Schema and the code say the same.

use clap::CommandFactory;
use kfp_event_bridge::cli::Cli;
use kfp_event_bridge::derive::lifecycle;
use kfp_event_bridge::encode::{DATA_FIELDS, DEFAULT_TYPE_PREFIX, EXTENSIONS};
use kfp_event_bridge::model::FactKind;
use std::collections::BTreeSet;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn readme_documents_every_type_extension_and_data_member() {
    let readme = readme();
    for kind in FactKind::ALL {
        let ty = format!("`{DEFAULT_TYPE_PREFIX}.{}`", kind.type_suffix());
        assert!(readme.contains(&ty), "README lacks type {ty}");
    }
    for ext in EXTENSIONS {
        assert!(
            readme.contains(&format!("| `{ext}` |")),
            "README lacks extension {ext}"
        );
    }
    for member in DATA_FIELDS {
        assert!(
            readme.contains(&format!("| `{member}` |")),
            "README lacks data member {member}"
        );
    }
    for (category, terminal, patterns) in lifecycle::categories() {
        let row = format!("| `{category}` | {terminal} | {} |", patterns.join(", "));
        assert!(
            readme.contains(&row),
            "README lifecycle table row differs from the code: {row}"
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
fn readme_flag_table_matches_the_command_line() {
    let readme = readme();
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
            assert!(readme.contains(&row), "README flag table lacks {row}");
        }
    }
}
