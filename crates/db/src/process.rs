//! The child processes of database work (`pg_dump`, `pg_restore`, `psql`, a `migrate`
//! command): each runs in its own process group under a time limit (`[database]
//! command_timeout`); past it the whole group is killed (a shell's children too) and the run
//! fails with a message saying so. The PostgreSQL tools also get umask 077, so a file one of them
//! creates is private from its first byte.

use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How a child run ended, when not with an exit status.
#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started (`NotFound`: no such program).
    Spawn(std::io::Error),
    /// It ran past the time limit; its process group was killed. Holds what it printed.
    TimedOut { output: String },
}

/// Time the group is given to go away after SIGKILL before its pipes are abandoned (a
/// process that left the group could hold them open).
const REAP: Duration = Duration::from_secs(5);

/// Files the tool creates are 0600 whatever the caller's umask.
#[allow(unsafe_code)]
pub(crate) fn private_umask(command: &mut Command) {
    // SAFETY: between fork and exec the closure calls only umask, which is async-signal-safe,
    // and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
pub(crate) fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else { return };
    // SAFETY: killpg only sends a signal; the group id is a child's pid, set with
    // process_group(0) at spawn, and that child has not been reaped yet, so it is still ours.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    bytes
}

/// Runs `command` in its own process group with stdout and stderr captured; past `timeout`
/// the whole group is killed.
pub(crate) async fn output(mut command: Command, timeout: Duration) -> Result<Output, RunError> {
    command.process_group(0).kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();
    let wait = child.wait_with_output();
    tokio::pin!(wait);
    tokio::select! {
        result = &mut wait => result.map_err(RunError::Spawn),
        () = tokio::time::sleep(timeout) => {
            kill_group(pid);
            let output = match tokio::time::timeout(REAP, &mut wait).await {
                Ok(Ok(output)) => format!("{}{}", lossy(&output.stdout), lossy(&output.stderr)),
                _ => String::new(),
            };
            Err(RunError::TimedOut { output })
        }
    }
}

/// The two ends of a streamed restore: `preamble`, then `producer`'s stdout (pg_restore writing
/// SQL), go into `consumer`'s stdin (psql), through this process, never through a file. The
/// consumer's stdin is closed only after the producer exited successfully; if the producer
/// fails, or the consumer stops reading, the group is killed first.
pub(crate) struct Piped {
    pub producer: ExitStatus,
    pub producer_stderr: String,
    pub consumer: ExitStatus,
    pub consumer_output: String,
}

pub(crate) async fn pipe(
    mut producer: Command,
    mut consumer: Command,
    preamble: &[u8],
    timeout: Duration,
    failpoint: &'static str,
) -> Result<Piped, (&'static str, RunError)> {
    consumer.process_group(0).kill_on_drop(true).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut consumer = consumer.spawn().map_err(|err| ("consumer", RunError::Spawn(err)))?;
    let group = consumer.id();
    producer
        .process_group(group.and_then(|g| i32::try_from(g).ok()).unwrap_or(0))
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut producer = match producer.spawn() {
        Ok(child) => child,
        Err(err) => {
            kill_group(group);
            let _ = consumer.wait().await;
            return Err(("producer", RunError::Spawn(err)));
        }
    };
    let work = stream(&mut producer, &mut consumer, group, preamble, failpoint);
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result.map_err(|err| ("consumer", RunError::Spawn(err))),
        () = tokio::time::sleep(timeout) => {
            kill_group(group);
            let output = match tokio::time::timeout(REAP, &mut work).await {
                Ok(Ok(piped)) => format!("{}{}", piped.producer_stderr, piped.consumer_output),
                _ => String::new(),
            };
            Err(("both", RunError::TimedOut { output }))
        }
    }
}

async fn stream(
    producer: &mut Child,
    consumer: &mut Child,
    group: Option<u32>,
    preamble: &[u8],
    failpoint: &'static str,
) -> std::io::Result<Piped> {
    let from = producer.stdout.take();
    let producer_err = producer.stderr.take();
    let mut to = consumer.stdin.take();
    let consumer_out = consumer.stdout.take();
    let consumer_err = consumer.stderr.take();
    let drive = async {
        let copy = async {
            let (Some(mut from), Some(to)) = (from, to.as_mut()) else { return false };
            if to.write_all(preamble).await.is_err() {
                return false;
            }
            let mut buffer = vec![0u8; 1 << 16];
            let mut forwarded = false;
            loop {
                let n = match from.read(&mut buffer).await {
                    Ok(0) => return true,
                    Ok(n) => n,
                    Err(_) => return false,
                };
                if to.write_all(&buffer[..n]).await.is_err() {
                    return false;
                }
                if !forwarded {
                    forwarded = true;
                    // Part of the SQL is in psql, none of it on disk.
                    windlass_failpoint::hit(failpoint);
                }
            }
        };
        let (copied, producer_stderr) = tokio::join!(copy, read_all(producer_err));
        let producer_status = producer.wait().await?;
        if copied && producer_status.success() {
            // All of it arrived: end the input, the consumer commits.
            if let Some(mut to) = to.take() {
                let _ = to.shutdown().await;
            }
        } else {
            // Never let the consumer see an end of input it could commit.
            kill_group(group);
        }
        drop(to);
        let consumer_status = consumer.wait().await?;
        Ok::<_, std::io::Error>((producer_status, lossy(&producer_stderr), consumer_status))
    };
    let (driven, out, err) = tokio::join!(drive, read_all(consumer_out), read_all(consumer_err));
    let (producer, producer_stderr, consumer) = driven?;
    Ok(Piped { producer, producer_stderr, consumer, consumer_output: format!("{}{}", lossy(&out), lossy(&err)) })
}
