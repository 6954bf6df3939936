//! `windlass init`: a starter that validates as written, and never overwrites.

use crate::harness::Windlass;

#[test]
fn init_writes_a_starter_that_validates_as_written() {
    let test = Windlass::new();
    let run = test.run(&["init", "--name", "shop"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("wrote windlass.toml for project `shop`"), "{}", run.stdout);
    let written = test.read("windlass.toml");
    assert!(written.contains("name = \"shop\""));
    assert!(written.lines().filter(|l| l.starts_with('#')).count() >= 5, "the starter is commented");

    let validate = test.run(&["validate", "production"]);
    assert_eq!(validate.code, 0, "{}{}", validate.stdout, validate.stderr);
    let staging = test.run(&["validate", "staging"]);
    assert_eq!(staging.code, 0, "{}{}", staging.stdout, staging.stderr);
}

#[test]
fn init_refuses_to_overwrite_and_changes_nothing() {
    let test = Windlass::new();
    test.write("windlass.toml", "# mine, hand-written\n");
    let run = test.run(&["init"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr, "error: windlass.toml already exists; not overwriting it\n");
    assert_eq!(test.read("windlass.toml"), "# mine, hand-written\n");
}

#[test]
fn init_refuses_a_bad_project_name_and_writes_nothing() {
    let test = Windlass::new();
    let run = test.run(&["init", "--name", "My Shop"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`My Shop` cannot be a project name"), "{}", run.stderr);
    assert!(!test.path().join("windlass.toml").exists());
}
