//! The child's output: captured line by line, rotated by size, read back across files.

use windlass_runtime::{InstanceSpec, LogPolicy, Runtime};

use crate::harness::*;

#[tokio::test]
async fn output_is_rotated_by_size_and_tailed_across_files() {
    let root = Root::new();
    let runtime = root.runtime();
    let mut spec = InstanceSpec::new("chatty", "/bin/sh");
    spec.args = vec![
        "-c".into(),
        r#"i=0; while [ $i -lt 1000 ]; do echo "line $i"; i=$((i+1)); done; exec /bin/sleep 600"#.into(),
    ];
    spec.log = LogPolicy { max_bytes: 4096, keep: 2 };
    runtime.start(&spec).await.unwrap();

    let runtime_ref = &runtime;
    eventually("the last line in the log", || async move {
        let last = runtime_ref.logs("chatty", 1).await.unwrap();
        (last.len() == 1 && last[0].ends_with(" stdout line 999")).then_some(())
    })
    .await;

    let dir = root.instance_dir("chatty");
    let mut rotated: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("output.log."))
        .collect();
    rotated.sort();
    assert_eq!(rotated, ["output.log.1", "output.log.2"], "keep = 2");
    for name in ["output.log", "output.log.1", "output.log.2"] {
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(size <= 4096, "{name} has {size} bytes");
    }

    // 150 lines are more than one file holds (about 100 lines of 40 bytes).
    let tail = runtime.logs("chatty", 150).await.unwrap();
    let numbers: Vec<u32> = tail
        .iter()
        .map(|line| {
            let (_, number) = line.rsplit_once(" stdout line ").unwrap_or_else(|| panic!("{line:?}"));
            number.parse().unwrap()
        })
        .collect();
    assert_eq!(numbers, (850..1000).collect::<Vec<u32>>());
    let timestamp = tail[0].split(' ').next().unwrap();
    assert!(timestamp.parse::<jiff::Timestamp>().is_ok() && timestamp.ends_with('Z'), "{timestamp}");

    // Everything in the instance's directory is its owner's only: the spec holds the rendered
    // environment, the logs whatever the instance printed.
    assert_private_tree(&root.path());

    runtime.stop("chatty").await.unwrap();
}
