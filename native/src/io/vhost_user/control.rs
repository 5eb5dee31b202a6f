//! The port's control thread: keeps a connection to the front-end (as a
//! client, reconnecting while it is away; as a server, one at a time) and
//! applies its messages to the device. A message that breaks the protocol
//! closes the connection; when a connection ends, for whatever reason, the
//! device goes down at once: rings stopped, memory unmapped, descriptors
//! closed. A new connection sets everything up again.

use super::memory::GuestMemory;
use super::msg::{self, req, Message, PROTOCOL_F_MQ, PROTOCOL_F_NET_MTU, PROTOCOL_F_REPLY_ACK};
use super::net::OFFERED;
use super::virtq::{valid_size, Cursor};
use super::{lock, Device, Queue, Readiness, Shared, TX};
use crate::io::sys::*;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Protocol features offered: MQ only to answer `GET_QUEUE_NUM` (one
/// queue pair), REPLY_ACK so the front-end learns that a message failed,
/// NET_MTU to hear the MTU announced to the guest.
const PROTOCOL_OFFERED: u64 = PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK | PROTOCOL_F_NET_MTU;
/// A client retries this often while the front-end is away.
const RECONNECT: Duration = Duration::from_secs(1);

/// Listen on `path`, replacing a stale socket there (one nobody listens on)
/// but nothing else.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        let stale = m.file_type().is_socket()
            && UnixStream::connect(path).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{} exists", path.display())));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path).map_err(|e| io::Error::new(e.kind(), format!("listening on {}: {e}", path.display())))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Connect without waiting: a front-end whose listen queue is full is
/// tried again later, rather than blocking the control thread (and so the
/// port's removal).
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let mut addr = sockaddr_un { family: AF_UNIX as u16, path: [0; 108] };
    let p = path.as_os_str().as_encoded_bytes();
    if p.is_empty() || p.len() >= addr.path.len() || p.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad socket path"));
    }
    addr.path[..p.len()].copy_from_slice(p);
    // SAFETY: plain syscall; the result is checked by `owned`.
    let fd = owned(unsafe { socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) })?;
    let len = (2 + p.len() + 1) as socklen_t;
    // SAFETY: `addr` is a live sockaddr_un of at least `len` bytes.
    cvt(unsafe { connect(fd.as_raw_fd(), (&addr as *const sockaddr_un).cast(), len) })?;
    Ok(UnixStream::from(fd))
}

/// What a change leaves for after the device's lock is released: the
/// worker told about the kick descriptor first, then old memory and
/// descriptors dropped (no worker can reach them any more).
#[derive(Default)]
struct After {
    readiness: Option<Option<RawFd>>,
    memory: Option<GuestMemory>,
    fds: Vec<OwnedFd>,
}

pub struct Control {
    shared: Arc<Shared>,
    readiness: Arc<dyn Readiness>,
    socket: PathBuf,
    listener: Option<UnixListener>,
}

impl Control {
    pub fn new(shared: Arc<Shared>, readiness: Arc<dyn Readiness>, socket: PathBuf, listener: Option<UnixListener>) -> Control {
        Control { shared, readiness, socket, listener }
    }

    fn stop_fd(&self) -> RawFd {
        self.shared.stop.as_raw_fd()
    }

    pub fn run(self) {
        loop {
            let conn = match &self.listener {
                Some(l) => match msg::wait_readable(&[self.stop_fd(), l.as_raw_fd()], None) {
                    Some(0) => break,
                    Some(_) => l.accept().ok().map(|(s, _)| s),
                    None => None,
                },
                None => match connect_now(&self.socket) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.shared.note_error(format!("connecting to {}: {e}", self.socket.display()));
                        if msg::wait_readable(&[self.stop_fd()], Some(RECONNECT)).is_some() {
                            break;
                        }
                        None
                    }
                },
            };
            if let Some(c) = conn {
                if !self.serve(c) {
                    break;
                }
                // A client tries again a while later, not at once: a
                // front-end that refuses us is not hammered.
                if self.listener.is_none() && msg::wait_readable(&[self.stop_fd()], Some(RECONNECT)).is_some() {
                    break;
                }
            }
        }
    }

    /// Serve one connection until it ends; false if the port is stopping.
    fn serve(&self, conn: UnixStream) -> bool {
        self.shared.counters.connections.fetch_add(1, Relaxed);
        if let Err(e) = conn.set_nonblocking(true) {
            self.shared.note_error(format!("connection: {e}"));
            return true;
        }
        let fd = conn.as_raw_fd();
        // Stopping first: a chatty front-end does not hold the port up.
        let mut waits = vec![self.stop_fd(), fd];
        waits.extend(self.listener.as_ref().map(|l| l.as_raw_fd()));
        let stopping = loop {
            match msg::wait_readable(&waits, None) {
                Some(0) => break true,
                Some(1) => {}
                Some(_) => {
                    // One front-end at a time: another is turned away.
                    if let Some(l) = &self.listener {
                        drop(l.accept());
                    }
                    continue;
                }
                None => continue,
            }
            let m = match msg::read_message(fd, self.stop_fd()) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.shared.note_error("the front-end closed the connection".into());
                    break false;
                }
                Err(e) => {
                    self.protocol_error(e);
                    break false;
                }
            };
            if let Err(e) = self.handle(fd, m) {
                self.protocol_error(e);
                break false;
            }
        };
        self.reset();
        !stopping
    }

    fn protocol_error(&self, e: String) {
        if msg::wait_readable(&[self.stop_fd()], Some(Duration::ZERO)).is_none() {
            self.shared.counters.protocol_errors.fetch_add(1, Relaxed);
        }
        self.shared.note_error(e);
    }

    /// Take the device down: everything the connection set up goes.
    fn reset(&self) {
        let mut after = After { readiness: Some(None), ..After::default() };
        {
            let mut dev = self.shared.device_mut();
            after.memory = dev.memory.take();
            for q in &mut dev.queues {
                after.fds.extend([q.kick.take(), q.call.take(), q.err.take()].into_iter().flatten());
            }
            *dev = Device::default();
            self.shared.up.store(false, Relaxed);
        }
        self.finish(after);
    }

    fn finish(&self, after: After) {
        if let Some(r) = after.readiness {
            self.readiness.set(r);
        }
        drop(after);
    }

    /// Apply one message and reply to it as the protocol says.
    fn handle(&self, fd: RawFd, mut m: Message) -> Result<(), String> {
        let takes_fds = matches!(m.request, req::SET_MEM_TABLE | req::SET_VRING_KICK | req::SET_VRING_CALL | req::SET_VRING_ERR);
        if !takes_fds && !m.fds.is_empty() {
            return Err(format!("request {}: {} unexpected descriptors", m.request, m.fds.len()));
        }
        // Mapping and checking descriptors happen before the device is locked.
        let memory = match m.request {
            req::SET_MEM_TABLE => Some(GuestMemory::map(&m.memory()?, std::mem::take(&mut m.fds))?),
            _ => None,
        };
        let vring_fd = match m.request {
            req::SET_VRING_KICK | req::SET_VRING_CALL | req::SET_VRING_ERR => {
                let v = m.vring_fd()?;
                if let Some(fd) = &v.fd {
                    check_eventfd(fd).map_err(|e| format!("request {}: {e}", m.request))?;
                }
                Some(v)
            }
            _ => None,
        };
        let mut after = After::default();
        let reply = {
            let mut dev = self.shared.device_mut();
            let r = apply(&mut dev, &m, memory, vring_fd, &mut after);
            self.shared.up.store(dev.up(), Relaxed);
            r
        };
        self.finish(after);
        let reply = reply?;
        let acked = self.shared.device().protocol_features.unwrap_or(0) & PROTOCOL_F_REPLY_ACK != 0;
        match reply {
            Some(payload) => msg::send_message(fd, &msg::reply(m.request, &payload)),
            None if m.need_reply() && acked => msg::send_message(fd, &msg::reply(m.request, &0u64.to_ne_bytes())),
            None => Ok(()),
        }
    }
}

/// The queue a message names.
fn queue(queues: &mut [Queue], index: u32) -> Result<&mut Queue, String> {
    queues.get_mut(index as usize).ok_or_else(|| format!("queue {index} (this device has 2)"))
}

/// Apply message `m` to the device; its reply payload if it has one.
fn apply(
    dev: &mut Device,
    m: &Message,
    memory: Option<GuestMemory>,
    vring_fd: Option<msg::VringFd>,
    after: &mut After,
) -> Result<Option<Vec<u8>>, String> {
    let u64_reply = |v: u64| Ok(Some(v.to_ne_bytes().to_vec()));
    match m.request {
        req::GET_FEATURES => u64_reply(OFFERED),
        req::SET_FEATURES => {
            let f = m.u64()?;
            if f & !OFFERED != 0 {
                return Err(format!("features {f:#x} include ones not offered ({:#x})", f & !OFFERED));
            }
            dev.features = f;
            Ok(None)
        }
        req::GET_PROTOCOL_FEATURES => u64_reply(PROTOCOL_OFFERED),
        req::SET_PROTOCOL_FEATURES => {
            let f = m.u64()?;
            if f & !PROTOCOL_OFFERED != 0 {
                return Err(format!("protocol features {f:#x} include ones not offered"));
            }
            dev.protocol_features = Some(f);
            Ok(None)
        }
        req::GET_QUEUE_NUM => u64_reply(1),
        req::NET_SET_MTU => {
            let mtu = m.u64()?;
            if !(68..=65535).contains(&mtu) {
                return Err(format!("MTU {mtu} (68..=65535)"));
            }
            dev.mtu = Some(mtu as u16);
            Ok(None)
        }
        req::SET_OWNER => Ok(None),
        // Deprecated; the spec suggests disabling the rings.
        req::RESET_OWNER => {
            dev.queues.iter_mut().for_each(|q| q.enabled = false);
            Ok(None)
        }
        req::SET_MEM_TABLE => {
            after.memory = std::mem::replace(&mut dev.memory, memory);
            Ok(None)
        }
        req::SET_VRING_NUM => {
            let (i, n) = m.state()?;
            let q = queue(&mut dev.queues, i)?;
            if q.started || !valid_size(n) {
                return Err(format!("queue {i}: size {n} (a power of 2 up to 32768, before the ring starts)"));
            }
            q.size = n as u16;
            Ok(None)
        }
        req::SET_VRING_ADDR => {
            let (i, addrs) = m.addr()?;
            queue(&mut dev.queues, i)?.addrs = Some(addrs);
            Ok(None)
        }
        req::SET_VRING_BASE => {
            let (i, n) = m.state()?;
            let q = queue(&mut dev.queues, i)?;
            if q.started || n > u16::MAX as u32 {
                return Err(format!("queue {i}: base {n} (16 bits, before the ring starts)"));
            }
            q.base = n as u16;
            Ok(None)
        }
        req::GET_VRING_BASE => {
            let (i, _) = m.state()?;
            let q = queue(&mut dev.queues, i)?;
            if q.started {
                q.started = false;
                q.base = lock(&q.cursor).last_avail();
                after.fds.extend(q.kick.take());
                if i as usize == TX {
                    after.readiness = Some(None);
                }
            }
            Ok(Some(msg::state_payload(i, q.base as u32).to_vec()))
        }
        req::SET_VRING_KICK => {
            let v = vring_fd.ok_or("no descriptor")?;
            let Some(fd) = v.fd else { return Err(format!("queue {}: polling instead of kicks is not supported", v.index)) };
            let tx = v.index as usize == TX;
            let enable = !dev.protocol_negotiated();
            let Device { memory, queues, features, .. } = dev;
            let q = queue(queues, v.index)?;
            if !q.started {
                start(q, memory.as_ref(), *features, tx, enable).map_err(|e| format!("queue {}: {e}", v.index))?;
            }
            if tx {
                after.readiness = Some(Some(fd.as_raw_fd()));
            }
            after.fds.extend(q.kick.replace(fd));
            Ok(None)
        }
        req::SET_VRING_CALL | req::SET_VRING_ERR => {
            let v = vring_fd.ok_or("no descriptor")?;
            let q = queue(&mut dev.queues, v.index)?;
            let slot = if m.request == req::SET_VRING_CALL { &mut q.call } else { &mut q.err };
            after.fds.extend(std::mem::replace(slot, v.fd));
            Ok(None)
        }
        req::SET_VRING_ENABLE => {
            let (i, n) = m.state()?;
            if !dev.protocol_negotiated() || n > 1 {
                return Err(format!("queue {i}: enable {n} without protocol features"));
            }
            queue(&mut dev.queues, i)?.enabled = n == 1;
            Ok(None)
        }
        other => Err(format!("request {other} is not supported")),
    }
}

/// Start a ring: it must lie in guest memory; we resume at its base (and
/// whatever the guest's used index says). Without protocol features the
/// ring starts enabled.
fn start(q: &mut Queue, mem: Option<&GuestMemory>, features: u64, tx: bool, enable: bool) -> Result<(), String> {
    let addrs = q.addrs.ok_or("kick before the ring's addresses")?;
    let mem = mem.ok_or("kick before the memory table")?;
    let ring = super::virtq::Ring::new(mem, q.size, &addrs, features)
        .ok_or_else(|| format!("ring of {} entries at {addrs:x?} is not in guest memory", q.size))?;
    // The transmit ring asks for kicks; we never wait for receive buffers.
    *lock(&q.cursor) = Cursor::start(&ring, q.base, tx);
    q.started = true;
    q.broken.store(false, Relaxed);
    if enable {
        q.enabled = true;
    }
    Ok(())
}

/// A kick, call or error descriptor must be an eventfd (so that reading
/// and writing it never blocks once it is non-blocking); it is made so.
fn check_eventfd(fd: &OwnedFd) -> Result<(), String> {
    let raw = fd.as_raw_fd();
    match std::fs::read_link(format!("/proc/self/fd/{raw}")) {
        Ok(target) if target.as_os_str() != "anon_inode:[eventfd]" => {
            return Err(format!("descriptor is {} (an eventfd expected)", target.display()));
        }
        _ => {} // without /proc, trust it
    }
    // SAFETY: fcntl on a descriptor we own; flags are plain integers.
    let flags = cvt(unsafe { fcntl(raw, F_GETFL) }).map_err(|e| e.to_string())?;
    // SAFETY: as above.
    cvt(unsafe { fcntl(raw, F_SETFL, flags | O_NONBLOCK) }).map_err(|e| e.to_string())?;
    Ok(())
}
