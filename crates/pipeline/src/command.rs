//! Custom steps: shell commands with the environment's variables injected, output captured line
//! by line (secrets redacted), a timeout that kills the whole process group, and retries.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Runs `script` with `sh -c` until it succeeds or `retries` more attempts failed. Every output
/// line goes to `line` as it arrives.
pub async fn run(
    script: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    retries: u32,
    mut line: impl FnMut(String) + Send,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            line(format!("(attempt {} of {} after: {last})", attempt + 1, retries + 1));
        }
        match run_once(script, env, timeout, &mut line).await {
            Ok(()) => return Ok(()),
            Err(problem) => last = problem,
        }
    }
    Err(last)
}

async fn run_once(
    script: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    line: &mut (impl FnMut(String) + Send),
) -> Result<(), String> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout stops what the script started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start /bin/sh: {err}"))?;
    let (sender, mut lines) = mpsc::unbounded_channel();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(text)) = reader.next_line().await {
                if sender.send(text).is_err() {
                    break;
                }
            }
        });
    }
    drop(sender);
    let pid = child.id();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut open = true;
    let status = loop {
        tokio::select! {
            text = lines.recv(), if open => match text {
                Some(text) => line(text),
                None => open = false,
            },
            status = child.wait(), if !open => break status.map_err(|err| err.to_string())?,
            () = &mut deadline => {
                if let Some(pid) = pid {
                    kill_group(pid);
                }
                let _ = child.wait().await;
                return Err(format!("timed out after {timeout:?}; the step and what it started were killed"));
            }
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "killed by a signal".into(),
        })
    }
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: killpg only sends a signal; the group id is the child's pid, set with
    // process_group(0) at spawn, and the child has not been reaped yet, so it is still ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}
