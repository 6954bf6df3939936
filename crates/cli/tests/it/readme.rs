//! The README's quick start runs as written and prints what the README shows.

use crate::harness::{Windlass, repo_root};

#[test]
fn the_readme_quick_start_validate_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let prefix = "$ cargo run -q --bin windlass -- ";
    let start = readme.find(prefix).expect("the README shows a `cargo run -q --bin windlass --` command");
    let rest = &readme[start + prefix.len()..];
    let (command_line, after) = rest.split_once('\n').unwrap();
    let shown_output = &after[..after.find("```").expect("the console block closes")];
    let args: Vec<&str> = command_line.split_whitespace().collect();

    let run = Windlass::new().cwd(&repo_root()).run(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, shown_output, "the README's example output is what the command prints");
}
