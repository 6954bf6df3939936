//! Where the demo listens: a socket handed over by its supervisor (`LISTEN_FDS`, the systemd
//! convention, so the supervisor binds ports race-free), or one it binds itself from `$PORT`.
//!
//! The main socket can be made to *refuse* connections and later accept again on the same port:
//! shutting a listening socket down makes the kernel answer new connections with a reset (even
//! when the supervisor still holds a copy of it); accepting again opens a fresh socket on the same
//! address, rather than re-listening the shut one.

use std::io;
use std::net::{Shutdown, SocketAddr};

use socket2::{Domain, Socket, Type};

/// The first file descriptor passed by `LISTEN_FDS` (after stdin, stdout, stderr).
const LISTEN_FDS_START: i32 = 3;

pub struct Listener {
    /// The socket now in use; replaced by a fresh one when accepting resumes.
    socket: std::sync::Mutex<Socket>,
    address: SocketAddr,
}

impl Listener {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Binds `host:port` (port 0 picks a free one).
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        Self::from_socket(listening_socket(address)?)
    }

    fn from_socket(socket: Socket) -> io::Result<Self> {
        let address = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        Ok(Listener { socket: std::sync::Mutex::new(socket), address })
    }

    fn socket(&self) -> std::sync::MutexGuard<'_, Socket> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new tokio listener on the same socket (a duplicate descriptor).
    pub fn to_tokio(&self) -> io::Result<tokio::net::TcpListener> {
        let listener: std::net::TcpListener = self.socket().try_clone()?.into();
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// From now on, connections to the address are refused.
    pub fn refuse(&self) -> io::Result<()> {
        self.socket().shutdown(Shutdown::Read)
    }

    /// Accepts connections again, on the same address, with a fresh socket.
    pub fn resume(&self) -> io::Result<()> {
        let fresh = listening_socket(self.address)?;
        *self.socket() = fresh;
        Ok(())
    }
}

fn listening_socket(address: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

/// The listeners passed by a supervisor, if any: `LISTEN_FDS=N` (and `LISTEN_PID`, when set,
/// naming this process). fd 3 is the main port, fd 4 (if N ≥ 2) the admin port.
pub fn inherited(get: impl Fn(&str) -> Option<String>) -> io::Result<Vec<Listener>> {
    let Some(count) = get("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    if let Some(pid) = get("LISTEN_PID")
        && pid.trim() != std::process::id().to_string()
    {
        // The variables were meant for another process (they leaked through an exec).
        return Ok(Vec::new());
    }
    let count: i32 = count
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("LISTEN_FDS={count} is not a number")))?;
    (0..count.min(2)).map(|i| adopt(LISTEN_FDS_START + i)).collect()
}

#[allow(unsafe_code)]
fn adopt(fd: i32) -> io::Result<Listener> {
    use std::os::fd::FromRawFd;
    // SAFETY: by the LISTEN_FDS convention the supervisor passed this descriptor to us and nothing
    // else in this process owns it; it is adopted exactly once. If it is not a socket,
    // `local_addr` fails below and we report it instead of using it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let listener = Listener::from_socket(socket).map_err(|err| {
        io::Error::new(err.kind(), format!("LISTEN_FDS: fd {fd} is not a listening IP socket: {err}"))
    })?;
    listener.socket().set_cloexec(true)?;
    Ok(listener)
}
