//! Binding the two listeners: TCP or Unix socket, as the config says.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpSocket, UnixListener};

use crate::config::ListenAddr;

/// Pending connections the kernel queues while the server is at
/// `max_connections` or busy accepting a burst of browsers.
const BACKLOG: u32 = 4096;

/// A bound listener.
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix socket; its file is removed when the server stops.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// The socket file.
        path: PathBuf,
    },
}

impl Listener {
    /// Binds `addr`. A `unix:` socket gets `mode` as its permissions; a
    /// stale socket file (nobody listening) is replaced, a live one is not.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_reuseaddr(true)?;
                socket.bind(*addr)?;
                Ok(Listener::Tcp(socket.listen(BACKLOG)?))
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    /// The same socket, registered with the runtime this is called on (to
    /// serve a listener on another runtime than the one that bound it).
    pub fn into_current_runtime(mut self) -> io::Result<Self> {
        use std::os::fd::AsFd;
        match &mut self {
            Listener::Tcp(listener) => {
                let fd = listener.as_fd().try_clone_to_owned()?;
                Ok(Listener::Tcp(TcpListener::from_std(fd.into())?))
            }
            Listener::Unix { listener, path } => {
                let fd = listener.as_fd().try_clone_to_owned()?;
                Ok(Listener::Unix {
                    listener: UnixListener::from_std(fd.into())?,
                    // The old handle must not remove the socket file when
                    // it drops: the new one owns it now.
                    path: std::mem::take(path),
                })
            }
        }
    }

    /// Where it listens, as the config would spell it (with the real port).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string()),
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    /// A URL for log lines.
    pub fn url(&self) -> String {
        match self {
            Listener::Tcp(_) => format!("http://{}", self.local_addr()),
            Listener::Unix { .. } => self.local_addr(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            if !path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server listens on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}
