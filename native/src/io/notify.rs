//! systemd's notification protocol (sd_notify(3)): one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET`. Node has
//! no Unix datagram sockets, so the daemon sends them through the addon.

use super::sys::*;
use super::tap::annotate;
use std::io;
use std::os::fd::AsRawFd;

/// Send `message` to the notification socket `path` (a filesystem path, or
/// `@name` for an abstract socket).
pub fn sd_notify(path: &str, message: &str) -> io::Result<()> {
    let mut addr = sockaddr_un { family: AF_UNIX as u16, path: [0; 108] };
    let name = path.as_bytes();
    if name.is_empty() || name.len() >= addr.path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad NOTIFY_SOCKET {path:?}")));
    }
    addr.path[..name.len()].copy_from_slice(name);
    if name[0] == b'@' {
        addr.path[0] = 0; // abstract namespace
    }
    // An abstract name is exactly its bytes; a path is NUL-terminated.
    let len = 2 + name.len() + (name[0] != b'@') as usize;
    let fd = owned(unsafe { socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) })?;
    cvt_size(unsafe {
        sendto(fd.as_raw_fd(), message.as_ptr().cast(), message.len(), 0, &addr as *const _ as *const _, len as u32)
    })
    .map(|_| ())
    .map_err(|e| annotate(e, &format!("notifying systemd on {path}")))
}
