//! Custom steps: shell commands with the environment's variables injected, output captured as
//! bytes, secrets redacted from the byte stream *before* it is cut into lines (a secret of
//! several lines, a PEM key, is hidden whole), a timeout that kills the whole process group, and
//! retries. Output that is not UTF-8 is decoded lossily and the pipes are read to their end, so a
//! step is never killed by SIGPIPE for what it printed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use windlass_secrets::Redactor;

/// A line longer than this is passed on in pieces (a step printing megabytes without a newline
/// does not grow memory without bound).
const MAX_LINE: usize = 64 * 1024;

/// Lines read ahead of the step's log at most: past it, reading the pipes waits (and so does
/// the command, on its full pipe) rather than memory growing.
const LINES_AHEAD: usize = 1024;

/// Why a custom step's command failed (its last attempt).
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("cannot start /bin/sh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Wait(std::io::Error),
    #[error("timed out after {0:?}; the step and what it started were killed")]
    TimedOut(Duration),
    #[error("exited with code {0}")]
    Exited(i32),
    #[error("killed by a signal")]
    Killed,
}

/// Runs `script` with `sh -c` until it succeeds or `retries` more attempts failed. Every output
/// line, redacted with `redactor`, goes to `line` as it arrives.
pub async fn run(
    script: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    retries: u32,
    redactor: &Redactor,
    mut line: impl FnMut(String) + Send,
) -> Result<(), ShellError> {
    let redactor = Arc::new(redactor.clone());
    let mut attempt = 0;
    loop {
        match run_once(script, env, timeout, &redactor, &mut line).await {
            Ok(()) => return Ok(()),
            Err(problem) if attempt < retries => {
                attempt += 1;
                line(format!("(attempt {} of {} after: {problem})", attempt + 1, retries + 1));
            }
            Err(problem) => return Err(problem),
        }
    }
}

async fn run_once(
    script: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    redactor: &Arc<Redactor>,
    line: &mut (impl FnMut(String) + Send),
) -> Result<(), ShellError> {
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
        .map_err(ShellError::Spawn)?;
    let (sender, mut lines) = mpsc::channel(LINES_AHEAD);
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        // Scoped: reads one stream of the command, ends with it; the command waits for them.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(read_lines(stream, redactor.clone(), sender.clone()));
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
            status = child.wait(), if !open => break status.map_err(ShellError::Wait)?,
            () = &mut deadline => {
                if let Some(pid) = pid {
                    kill_group(pid);
                }
                let _ = child.wait().await;
                return Err(ShellError::TimedOut(timeout));
            }
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(code) => ShellError::Exited(code),
            None => ShellError::Killed,
        })
    }
}

/// Reads `stream` to its end (whatever it holds, and whether or not anyone still listens: a pipe
/// closed early would kill the writer with SIGPIPE), redacts it as one stream of bytes, and only
/// then cuts it into lines, each decoded lossily.
async fn read_lines(
    mut stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    redactor: Arc<Redactor>,
    sender: mpsc::Sender<String>,
) {
    let mut redacting = redactor.stream();
    let mut buffer = vec![0u8; 8192];
    let mut text: Vec<u8> = Vec::new();
    let cut = |text: &mut Vec<u8>, last: bool| {
        let mut lines = Vec::new();
        loop {
            let (end, newline) = match text.iter().position(|&b| b == b'\n') {
                Some(at) => (at, 1),
                None if text.len() >= MAX_LINE => (MAX_LINE, 0),
                None if last && !text.is_empty() => (text.len(), 0),
                None => return lines,
            };
            let mut one: Vec<u8> = text.drain(..end + newline).collect();
            one.truncate(end);
            if one.last() == Some(&b'\r') {
                one.pop();
            }
            lines.push(String::from_utf8_lossy(&one).into_owned());
        }
    };
    // Nobody listening any more (the step timed out) is fine: the pipe is still drained.
    let mut listened = true;
    let mut send = async |lines: Vec<String>| {
        for line in lines {
            if listened && sender.send(line).await.is_err() {
                listened = false;
            }
        }
    };
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                text.extend(redacting.push(&buffer[..n]));
                send(cut(&mut text, false)).await;
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(%err, "cannot read a step's output");
                break;
            }
        }
    }
    text.extend(redacting.finish());
    send(cut(&mut text, true)).await;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn lines_of(
        script: &str,
        env: &[(&str, &str)],
        redactor: &Redactor,
    ) -> (Result<(), ShellError>, Vec<String>) {
        let mut all = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())]);
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut lines = Vec::new();
        let result = run(script, &all, Duration::from_secs(60), 0, redactor, |line| lines.push(line)).await;
        (result, lines)
    }

    #[tokio::test]
    async fn a_multi_line_secret_printed_by_a_step_reaches_no_line() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nq1w2e3r4t5y6u7i8o9p0\n-----END PRIVATE KEY-----\n";
        let redactor = Redactor::new([("TLS_KEY", key)]);
        // Once whole on stdout, once on stderr, once line by line with other output between.
        let script = r#"printf 'key: %s' "$TLS_KEY"; printf '%s' "$TLS_KEY" >&2; printf '%s\n' "$TLS_KEY" | while read -r l; do echo "got $l"; done"#;
        let (result, lines) = lines_of(script, &[("TLS_KEY", key)], &redactor).await;
        assert!(result.is_ok(), "{result:?}");
        let all = lines.join("\n");
        for line in key.lines() {
            assert!(!all.contains(line), "{line:?} leaked in:\n{all}");
        }
        assert!(lines[0].starts_with("key: [REDACTED:TLS_KEY]"), "{lines:?}");
        assert_eq!(lines.iter().filter(|l| l.ends_with("got [REDACTED:TLS_KEY]")).count(), 4, "{lines:?}");
        assert!(lines.contains(&"[REDACTED:TLS_KEY]".to_owned()), "stderr: {lines:?}");
    }

    #[tokio::test]
    async fn output_that_is_not_utf8_is_kept_and_the_step_is_not_killed() {
        // More than a pipe holds after the bad byte: a reader that gave up would SIGPIPE the step.
        let script = r#"printf 'before \377 after\n'; i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done; printf 'no newline'"#;
        let (result, lines) = lines_of(script, &[], &Redactor::default()).await;
        assert!(result.is_ok(), "{result:?}: {:?}", lines.last());
        assert_eq!(lines.len(), 20002, "{:?}", &lines[..3.min(lines.len())]);
        assert_eq!(lines[0], "before \u{fffd} after");
        assert_eq!(lines[20000], "line 19999");
        assert_eq!(lines[20001], "no newline");
    }
}
