//! The README's first command runs as written and prints what the README shows.

use std::process::Command;

use windlass_testkit::process::Process;
use windlass_testkit::workspace_bin;

use crate::harness::{copy_dir, repo_root};

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_first_command_starts_the_example_platform_and_ctrl_c_stops_it() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let prefix = "$ cargo build --workspace && target/debug/windlass ";
    let start = readme.find(prefix).expect("the README's first command builds and runs `windlass up`");
    let command_line = readme[start + prefix.len()..].lines().next().unwrap();
    let args: Vec<&str> = command_line.split_whitespace().collect();
    assert_eq!(args[0], "up");
    let shown_start = readme.find("```text\n").unwrap() + "```text\n".len();
    let shown = &readme[shown_start..shown_start + readme[shown_start..].find("```").unwrap()];

    // The same files in a directory of the test's own, so its state starts empty.
    let dir = windlass_testkit::tempdir();
    copy_dir(&repo_root().join("examples/maily"), &dir.path().join("examples/maily"));
    let mut command = Command::new(workspace_bin("windlass"));
    command.args(&args).current_dir(dir.path());
    let mut up = Process::start(command);
    up.wait_for_line_containing("maily is up (staging):");
    // The lines the README shows after the deploy's outcome (the deploy id differs).
    let mut printed = vec!["", "maily is up (staging):"];
    let lines: Vec<String> = (0..4).map(|_| up.wait_for_line("")).collect();
    printed.extend(lines.iter().map(String::as_str));
    // (Lines are compared without their indentation, which the process helper trims.)
    let expected: Vec<&str> = shown.lines().skip(1).map(str::trim).collect();
    let printed: Vec<&str> = printed.into_iter().map(str::trim).collect();
    assert_eq!(printed, expected, "the README shows what `windlass up` prints");

    let reply = windlass_testkit::http::request(
        "GET",
        "127.0.0.1:8080".parse().unwrap(),
        "/version",
        &[("host", "api.maily.localhost")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("api-1.4.2"), "{}", reply.body);

    up.signal(libc::SIGINT);
    assert!(up.wait().success());
    let refused = tokio::net::TcpStream::connect("127.0.0.1:8080").await;
    assert!(refused.is_err(), "the edge stopped");
    let shim = workspace_bin("windlass-shim");
    let runtime = windlass_runtime::ProcessRuntime::new(dir.path().join("examples/maily/.windlass/instances"), shim);
    use windlass_runtime::Runtime as _;
    let instances = runtime.list().await.unwrap();
    assert_eq!(instances.len(), 6, "three services, two instances each");
    assert!(instances.iter().all(|i| !windlass_pipeline::rollout::is_alive(i.state)), "{instances:?}");
    // What `up` wrote (tokens, store, edge state, instances, the app's database and backups) is
    // private.
    let state = dir.path().join("examples/maily/.windlass");
    assert!(state.join("token").exists() && state.join("edge.token").exists());
    crate::private_files::assert_private_tree(&state);
}
