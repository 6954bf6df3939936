//! `docs/config.md` documents every key the parser knows, and nothing else: the complete example
//! in it parses without a problem, and its key tables list exactly the keys the parser asks for.

use std::collections::BTreeSet;
use std::path::Path;

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md")).unwrap()
}

/// The TOML block under the "Complete example" heading.
fn complete_example(docs: &str) -> String {
    let start = docs.find("## Complete example").expect("docs/config.md has a Complete example");
    let block = &docs[start..];
    let open = block.find("```toml\n").expect("a toml code block") + "```toml\n".len();
    let close = block[open..].find("```").expect("the block closes");
    block[open..open + close].to_owned()
}

/// The first cell of each key-table row: "| `services.<service>.instances` | ...".
fn documented_keys(docs: &str) -> BTreeSet<String> {
    docs.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_owned()))
        .collect()
}

#[test]
fn the_complete_example_is_valid() {
    let parsed = crate::parse_text(&complete_example(&docs()));
    assert!(!parsed.has_errors(), "{}", crate::rendered(&parsed));
}

#[test]
fn every_key_is_documented_and_every_documented_key_exists() {
    let docs = docs();
    let parsed = crate::parse_text(&complete_example(&docs));
    let documented = documented_keys(&docs);
    let known = parsed.schema_paths;
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(undocumented.is_empty(), "keys the parser knows but docs/config.md does not document: {undocumented:#?}");
    assert!(unknown.is_empty(), "keys docs/config.md documents but the parser does not know: {unknown:#?}");
}
