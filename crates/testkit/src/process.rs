//! Real processes for tests: started from the real binaries, read line by line, and killed when
//! the test ends (even when it fails).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running child process; killed and reaped on drop.
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `command` with stdout captured (stderr is passed through for test logs).
    pub fn start(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        Process { child, lines: forward_lines(stdout) }
    }

    /// Starts `command` with `listeners` passed as fds 3, 4, ... and `LISTEN_FDS` set, the
    /// systemd convention: the test binds the ports, so no other process can take them.
    pub fn start_with_listeners(mut command: Command, listeners: &[&TcpListener]) -> Self {
        let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
        command.env("LISTEN_FDS", fds.len().to_string()).env_remove("LISTEN_PID");
        // SAFETY: between fork and exec only async-signal-safe calls are made (dup2, fcntl),
        // on descriptors this process owns and keeps open until the spawn returns.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                // First move every source above the targets, so that placing one cannot
                // overwrite another that happens to sit at 3, 4, ...
                let mut moved = Vec::with_capacity(fds.len());
                for &fd in &fds {
                    let high = libc::fcntl(fd, libc::F_DUPFD, 100);
                    if high < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    moved.push(high);
                }
                // dup2 leaves FD_CLOEXEC clear on the target, so the sockets survive exec.
                for (i, &fd) in moved.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Self::start(command)
    }

    /// Waits for an output line starting with `prefix` and returns the rest of it.
    pub fn wait_for_line(&self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(index) = line.find(prefix) {
                        return line[index + prefix.len()..].trim().to_owned();
                    }
                }
                Err(err) => panic!("no line containing {prefix:?} from the process: {err}"),
            }
        }
    }

    /// Waits for an output line containing `needle` and returns the whole line.
    pub fn wait_for_line_containing(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!("no line containing {needle:?} from the process: {err}"),
            }
        }
    }

    /// Waits for `<prefix> <address>` and parses the address.
    pub fn wait_for_address(&self, prefix: &str) -> SocketAddr {
        let rest = self.wait_for_line(prefix);
        let word = rest.split_whitespace().next().unwrap_or("");
        word.parse().unwrap_or_else(|_| panic!("{word:?} after {prefix:?} is not an address"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        #[allow(unsafe_code)]
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit (at most a minute) and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..6000 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("process {} did not exit within a minute", self.child.id());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A listening socket on a free loopback port, held by the test (so the port cannot be taken).
pub fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")
}
