//! The functions the addon exports. Each converts its arguments, calls the core
//! and converts the result; `native/index.d.ts` declares the same names.
//!
//! One dataplane per process (the daemon's): it lives in [`DATAPLANE`].

use super::napi::{napi_callback, napi_callback_info, napi_env, napi_value};
use super::{export, Args, JsError, JsResult, JsValue};
use crate::dp::{Counters, DropReason, FlowIdMode, NextHop, Policy, PolicyDelta, Reach, RecordType, Rule};
use crate::io::{netlink, notify, AttachSpec, Dataplane, Options, PortSpec, SocketMode, Source, TapSpec, VhostUserSpec};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Generates one `extern "C"` trampoline per export, all through [`export`].
macro_rules! exports {
    ($($name:literal => $f:path),* $(,)?) => {
        pub static EXPORTS: &[(&str, napi_callback)] = &[
            $(($name, {
                unsafe extern "C" fn trampoline(env: napi_env, info: napi_callback_info) -> napi_value {
                    export(env, info, $f)
                }
                trampoline
            })),*
        ];
    };
}

exports! {
    "version" => version,
    "counterNames" => counter_names,
    "dropReasons" => drop_reasons,
    "start" => start,
    "stop" => stop,
    "setPolicy" => set_policy,
    "inspectPolicy" => inspect_policy,
    "applyDelta" => apply_delta,
    "addPort" => add_port,
    "removePort" => remove_port,
    "readCounters" => read_counters,
    "readVsidCounters" => read_vsid_counters,
    "heartbeats" => heartbeats,
    "workerPackets" => worker_packets,
    "drainEvents" => drain_events,
    "drainLearned" => drain_learned,
    "drainPanics" => drain_panics,
    "deadWorkers" => dead_workers,
    "portStates" => port_states,
    "setUplink" => set_uplink,
    "uplinkState" => uplink_state,
    "natMappings" => nat_mappings,
    "kernelChanges" => kernel_changes,
    "addAddress" => add_address,
    "delAddress" => del_address,
    "addRoute" => add_route,
    "addVlan" => add_vlan,
    "delVlan" => del_vlan,
    "trunkPort" => trunk_port,
    "delRoute" => del_route,
    "nextHop" => next_hop,
    "sdNotify" => sd_notify,
    "peerCredentials" => peer_credentials,
}

static DATAPLANE: Mutex<Option<Dataplane>> = Mutex::new(None);

fn with_dataplane<T>(f: impl FnOnce(&Dataplane) -> JsResult<T>) -> JsResult<T> {
    let guard = DATAPLANE.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref() {
        Some(dp) => f(dp),
        None => Err(JsError::new("NVGRE_ERR_NATIVE_NOT_STARTED", "the dataplane is not running")),
    }
}

fn io_error(code: &'static str) -> impl Fn(std::io::Error) -> JsError {
    move |e| JsError::new(code, e.to_string())
}

fn ip(args: &Args, i: usize) -> JsResult<IpAddr> {
    let s = args.string(i)?;
    s.parse().map_err(|_| JsError::arg(format!("argument {i}: {s:?} is not an IP address")))
}

fn prefix_len(args: &Args, i: usize) -> JsResult<u8> {
    u8::try_from(args.u32(i)?).map_err(|_| JsError::arg(format!("argument {i}: prefix length out of range")))
}

fn version(_: &Args) -> JsResult<JsValue> {
    Ok(JsValue::Str(env!("CARGO_PKG_VERSION").to_string()))
}

fn counter_names(_: &Args) -> JsResult<JsValue> {
    Ok(JsValue::Array(Counters::names().into_iter().map(JsValue::Str).collect()))
}

fn drop_reasons(_: &Args) -> JsResult<JsValue> {
    Ok(JsValue::Array(DropReason::ALL.iter().map(|r| JsValue::Str(r.name().to_string())).collect()))
}

/// `start(workers, vsidCounters, kernelSegmentation, pollMicros)`: open the
/// underlay socket and start the worker threads; returns who segments large
/// TCP segments.
fn start(args: &Args) -> JsResult<JsValue> {
    let opts = Options {
        workers: args.u32(0)? as usize,
        vsid_capacity: args.u32(1)?,
        kernel_segmentation: args.u32(2)? != 0,
        poll: Duration::from_micros(args.u32(3)? as u64),
    };
    let mut guard = DATAPLANE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_some() {
        return Err(JsError::new("NVGRE_ERR_NATIVE_RUNNING", "the dataplane is already running"));
    }
    let dp = Dataplane::start(&opts).map_err(io_error("NVGRE_ERR_NATIVE_START"))?;
    let segmentation = dp.segmentation().to_string();
    *guard = Some(dp);
    Ok(JsValue::Str(segmentation))
}

/// `stop()`: stop the workers and close every TAP and socket. Idempotent.
fn stop(_: &Args) -> JsResult<JsValue> {
    let dp = DATAPLANE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(dp) = dp {
        dp.stop();
    }
    Ok(JsValue::Undefined)
}

/// `setPolicy(buffer)`: decode, index and swap in a whole policy snapshot.
fn set_policy(args: &Args) -> JsResult<JsValue> {
    let policy = Policy::decode(args.buffer(0)?).map_err(|e| JsError::new("NVGRE_ERR_NATIVE_POLICY", e.0))?;
    with_dataplane(|dp| {
        dp.set_policy(&policy);
        Ok(JsValue::Undefined)
    })
}

/// `inspectPolicy(buffer)`: the policy snapshot as the core decodes it, its
/// fields named as in `dp::policy` (for the test that holds the encoder in
/// `src/model/snapshot.ts` and the decoder together).
fn inspect_policy(args: &Args) -> JsResult<JsValue> {
    let p = Policy::decode(args.buffer(0)?).map_err(|e| JsError::new("NVGRE_ERR_NATIVE_POLICY", e.0))?;
    let ip = |a: &IpAddr| JsValue::Str(a.to_string());
    let text = |s: &str| JsValue::Str(s.to_string());
    let pa = |a: &crate::dp::ProviderAddress| {
        JsValue::Object(vec![
            ("address", ip(&a.address)),
            ("prefix_len", JsValue::U32(a.prefix_len.into())),
            ("mtu", JsValue::U32(a.mtu.into())),
            ("ifindex", JsValue::U32(a.ifindex)),
            ("vlan_id", JsValue::U32(a.vlan_id.into())),
        ])
    };
    let route = |r: &crate::dp::CustomerRoute| {
        JsValue::Object(vec![
            ("routing_domain", JsValue::U32(r.routing_domain)),
            ("vsid", JsValue::U32(r.vsid)),
            ("prefix", ip(&r.prefix)),
            ("prefix_len", JsValue::U32(r.prefix_len.into())),
            ("next_hop", r.next_hop.as_ref().map_or(JsValue::Undefined, ip)),
            ("metric", JsValue::U32(r.metric)),
        ])
    };
    let record = |r: &crate::dp::LookupRecord| {
        let kind = match r.kind {
            RecordType::Static => "static",
            RecordType::Dynamic => "dynamic",
            RecordType::L2Only => "l2only",
            RecordType::GatewayWildcard => "gateway_wildcard",
        };
        JsValue::Object(vec![
            ("vsid", JsValue::U32(r.vsid)),
            ("customer_address", ip(&r.customer_address)),
            ("mac", JsValue::Str(r.mac.to_string())),
            ("provider_address", ip(&r.provider_address)),
            ("rule", text(match r.rule {
                Rule::Encap => "encap",
                Rule::None => "none",
            })),
            ("kind", text(kind)),
        ])
    };
    let port = |q: &crate::dp::Port| {
        JsValue::Object(vec![("id", JsValue::U32(q.id)), ("vsid", JsValue::U32(q.vsid)), ("mac", JsValue::Str(q.mac.to_string()))])
    };
    let flow_id = match p.flow_id {
        FlowIdMode::Hash => "hash",
        FlowIdMode::Zero => "zero",
    };
    Ok(JsValue::Object(vec![
        ("flow_id", text(flow_id)),
        ("default_gateway_mac", JsValue::Str(p.default_gateway_mac.to_string())),
        ("provider_addresses", JsValue::Array(p.provider_addresses.iter().map(pa).collect())),
        ("customer_routes", JsValue::Array(p.customer_routes.iter().map(route).collect())),
        ("lookup_records", JsValue::Array(p.lookup_records.iter().map(record).collect())),
        ("ports", JsValue::Array(p.ports.iter().map(port).collect())),
    ]))
}

/// `applyDelta(buffer)`: apply a policy delta (`NVGD`) to the running
/// snapshot; false if only a full `setPolicy` is exact (nothing changed then).
fn apply_delta(args: &Args) -> JsResult<JsValue> {
    let delta = PolicyDelta::decode(args.buffer(0)?).map_err(|e| JsError::new("NVGRE_ERR_NATIVE_POLICY", e.0))?;
    with_dataplane(|dp| Ok(JsValue::Bool(dp.apply_delta(&delta).is_ok())))
}

/// `addPort(id, mode, name, netns, mac, mtu, socket, socketMode)`: add a
/// VM adapter's device (mode `tap`: create its TAP; `attach`: adopt the
/// interface `name`; `vhost_user`: serve `socket`, as a `client` or
/// `server`); returns its ifindex (0 without an interface).
fn add_port(args: &Args) -> JsResult<JsValue> {
    let id = args.u32(0)?;
    let mode = args.string(1)?;
    let name = args.string(2)?;
    let netns = args.opt_string(3)?;
    let mac_text = args.string(4)?;
    let mac = mac_text.parse().map_err(|_| JsError::arg(format!("argument 4: {mac_text:?} is not a MAC")))?;
    let mtu = if args.is_nullish(5) { None } else { Some(args.u32(5)?) };
    let spec = match mode.as_str() {
        "tap" => PortSpec::Tap(TapSpec { name: &name, netns: netns.as_deref(), mac, mtu }),
        // One fanout group per port: its id (groups are per namespace, ids per daemon).
        "attach" => PortSpec::Attach(AttachSpec { name: &name, mtu, group: id as u16 }),
        "vhost_user" => {
            let socket = args.string(6)?;
            let mode = match args.string(7)?.as_str() {
                "client" => SocketMode::Client,
                "server" => SocketMode::Server,
                other => return Err(JsError::arg(format!("argument 7: socket mode {other:?} is not client or server"))),
            };
            PortSpec::VhostUser(VhostUserSpec { name: name.clone(), socket: socket.into(), mode })
        }
        other => return Err(JsError::arg(format!("argument 1: mode {other:?} is not tap, attach or vhost_user"))),
    };
    with_dataplane(|dp| dp.add_port(id, &spec).map(JsValue::U32).map_err(io_error("NVGRE_ERR_NATIVE_PORT")))
}

fn remove_port(args: &Args) -> JsResult<JsValue> {
    let id = args.u32(0)?;
    with_dataplane(|dp| dp.remove_port(id).map(|_| JsValue::Undefined).map_err(io_error("NVGRE_ERR_NATIVE_PORT")))
}

/// `readCounters()`: every counter of every worker, summed, as one BigUint64Array.
fn read_counters(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U64Array(dp.counters())))
}

/// `readVsidCounters()`: per-VSID counters, 5 values per VSID with a slot.
fn read_vsid_counters(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U64Array(dp.vsid_counters())))
}

/// `drainEvents()`: rare packet events (rate-limited drops) since the last call.
fn drain_events(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        let events = dp.drain_events().into_iter().map(|ev| {
            let source = match ev.source {
                Source::Underlay(ip) => ("provider_address", JsValue::Str(ip.to_string())),
                Source::Port(p) => ("port", JsValue::U32(p)),
            };
            JsValue::Object(vec![
                ("direction", JsValue::Str(ev.direction.name().to_string())),
                ("reason", JsValue::Str(ev.reason.name().to_string())),
                source,
                ("suppressed", JsValue::U32(ev.suppressed.min(u32::MAX as u64) as u32)),
            ])
        });
        Ok(JsValue::Array(events.collect()))
    })
}

/// `drainLearned()`: addresses learned from ARP (flow 4) since the last call.
fn drain_learned(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        let learned = dp.drain_learned().into_iter().map(|l| {
            JsValue::Object(vec![
                ("vsid", JsValue::U32(l.vsid)),
                ("customer_address", JsValue::Str(l.customer_address.to_string())),
                ("mac", JsValue::Str(l.mac.to_string())),
                ("provider_address", JsValue::Str(l.provider_address.to_string())),
            ])
        });
        Ok(JsValue::Array(learned.collect()))
    })
}

/// `drainPanics()`: panics the workers recovered from since the last call (rate-limited).
fn drain_panics(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        let panics = dp.drain_panics().into_iter().map(|p| {
            JsValue::Object(vec![
                ("worker", JsValue::U32(p.worker as u32)),
                ("message", JsValue::Str(p.message)),
                ("suppressed", JsValue::U32(p.suppressed.min(u32::MAX as u64) as u32)),
            ])
        });
        Ok(JsValue::Array(panics.collect()))
    })
}

/// `deadWorkers()`: workers whose thread ended without being asked to, and why.
fn dead_workers(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        let dead = dp.dead_workers().into_iter().map(|(worker, why)| {
            JsValue::Object(vec![("worker", JsValue::U32(worker as u32)), ("message", JsValue::Str(why))])
        });
        Ok(JsValue::Array(dead.collect()))
    })
}

/// `portStates()`: each port's device: up, or down and why.
fn port_states(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        let ports = dp.port_states().into_iter().map(|p| {
            let mut fields = vec![("id", JsValue::U32(p.id)), ("ifindex", JsValue::U32(p.ifindex)), ("up", JsValue::Bool(p.up))];
            if let Some(mtu) = p.mtu {
                fields.push(("mtu", JsValue::U32(mtu)));
            }
            if let Some(e) = p.why_down {
                fields.push(("error", JsValue::Str(e)));
            }
            JsValue::Object(fields)
        });
        Ok(JsValue::Array(ports.collect()))
    })
}

/// `setUplink(name | null)`: adopt interface `name` as the HNV gateway's uplink, or have none.
fn set_uplink(args: &Args) -> JsResult<JsValue> {
    let name = args.opt_string(0)?;
    with_dataplane(|dp| dp.set_uplink(name.as_deref()).map(|_| JsValue::Undefined).map_err(io_error("NVGRE_ERR_NATIVE_UPLINK")))
}

/// `uplinkState()`: the uplink's device (`{ ifindex, up, error? }`), or undefined without one.
fn uplink_state(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| {
        Ok(dp.uplink_state().map_or(JsValue::Undefined, |p| {
            let mut fields = vec![("ifindex", JsValue::U32(p.ifindex)), ("up", JsValue::Bool(p.up))];
            if let Some(e) = p.why_down {
                fields.push(("error", JsValue::Str(e)));
            }
            JsValue::Object(fields)
        }))
    })
}

/// `natMappings()`: every live NAT mapping, 9 values each in one BigUint64Array (see `io::NAT_MAPPING_FIELDS`).
fn nat_mappings(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U64Array(dp.nat_mappings())))
}

/// `kernelChanges()`: a number that changes whenever the kernel's links, addresses or routes did (modulo 2^32).
fn kernel_changes(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U32(dp.kernel_changes() as u32)))
}

fn worker_packets(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U64Array(dp.worker_packets())))
}

fn heartbeats(_: &Args) -> JsResult<JsValue> {
    with_dataplane(|dp| Ok(JsValue::U64Array(dp.heartbeats())))
}

fn added(a: netlink::Added) -> JsValue {
    JsValue::U32((a == netlink::Added::Created) as u32)
}

/// `addAddress(ifname, address, prefixLen)`: 1 if added, 0 if it was already there.
fn add_address(args: &Args) -> JsResult<JsValue> {
    netlink::add_address(&args.string(0)?, ip(args, 1)?, prefix_len(args, 2)?)
        .map(added)
        .map_err(io_error("NVGRE_ERR_NATIVE_NETLINK"))
}

fn del_address(args: &Args) -> JsResult<JsValue> {
    netlink::del_address(&args.string(0)?, ip(args, 1)?, prefix_len(args, 2)?)
        .map(|_| JsValue::Undefined)
        .map_err(io_error("NVGRE_ERR_NATIVE_NETLINK"))
}

/// `addRoute(prefix, prefixLen, nextHop | null, ifname, metric)`: 1 if added, 0 if present.
fn add_route(args: &Args) -> JsResult<JsValue> {
    let via = if args.is_nullish(2) { None } else { Some(ip(args, 2)?) };
    netlink::add_route(ip(args, 0)?, prefix_len(args, 1)?, via, &args.string(3)?, args.u32(4)?)
        .map(added)
        .map_err(io_error("NVGRE_ERR_NATIVE_NETLINK"))
}

fn del_route(args: &Args) -> JsResult<JsValue> {
    let via = if args.is_nullish(2) { None } else { Some(ip(args, 2)?) };
    netlink::del_route(ip(args, 0)?, prefix_len(args, 1)?, via, &args.string(3)?, args.u32(4)?)
        .map(|_| JsValue::Undefined)
        .map_err(io_error("NVGRE_ERR_NATIVE_NETLINK"))
}

/// `addVlan(parent, name, vlanId)`: the VLAN interface for provider
/// addresses on VLAN `vlanId` of `parent`, made if it is not there; returns its ifindex.
fn add_vlan(args: &Args) -> JsResult<JsValue> {
    let vid = u16::try_from(args.u32(2)?).ok().filter(|v| (1..=4094).contains(v)).ok_or_else(|| JsError::arg("argument 2: VLAN ID out of 1..4094"))?;
    let (parent, name) = (args.string(0)?, args.string(1)?);
    with_dataplane(|dp| dp.add_vlan(&parent, &name, vid).map(JsValue::U32).map_err(io_error("NVGRE_ERR_NATIVE_VLAN")))
}

/// `delVlan(name)`: remove a VLAN interface.
fn del_vlan(args: &Args) -> JsResult<JsValue> {
    let name = args.string(0)?;
    with_dataplane(|dp| dp.remove_vlan(&name).map(|_| JsValue::Undefined).map_err(io_error("NVGRE_ERR_NATIVE_VLAN")))
}

/// The trunk ports made by `trunkPort`: they stay while the process lives.
static TRUNKS: Mutex<Vec<[std::os::fd::OwnedFd; 2]>> = Mutex::new(Vec::new());

/// `trunkPort(netns, ifname, vlanId)`: for the lab's underlay switch:
/// `ifname` of network namespace `netns` becomes a trunk port of the VLAN
/// (see io::trunk), for this process's life.
fn trunk_port(args: &Args) -> JsResult<JsValue> {
    let netns = args.string(0)?;
    let ifname = args.string(1)?;
    let vid = u16::try_from(args.u32(2)?).ok().filter(|v| (1..=4094).contains(v)).ok_or_else(|| JsError::arg("argument 2: VLAN ID out of 1..4094"))?;
    let links = crate::io::tap::in_netns(Some(&netns), || crate::io::trunk::trunk_port(netlink::ifindex(&ifname)?, vid))
        .map_err(io_error("NVGRE_ERR_NATIVE_VLAN"))?;
    TRUNKS.lock().unwrap_or_else(|p| p.into_inner()).push(links);
    Ok(JsValue::Undefined)
}

/// `sdNotify(socketPath, message)`: one sd_notify(3) datagram.
fn sd_notify(args: &Args) -> JsResult<JsValue> {
    notify::sd_notify(&args.string(0)?, &args.string(1)?)
        .map(|_| JsValue::Undefined)
        .map_err(io_error("NVGRE_ERR_NATIVE_NOTIFY"))
}

/// `peerCredentials(fd)`: pid, uid and gid of the peer of a connected Unix
/// socket (the control API decides what a caller may do by its uid).
fn peer_credentials(args: &Args) -> JsResult<JsValue> {
    let fd = args.u32(0)?;
    let fd = i32::try_from(fd).map_err(|_| JsError::arg(format!("argument 0: {fd} is not a file descriptor")))?;
    let cred = crate::io::peer_credentials(fd).map_err(io_error("NVGRE_ERR_NATIVE_SOCKET"))?;
    Ok(JsValue::Object(vec![
        // 0 when the peer is in a PID namespace this process cannot see into
        ("pid", JsValue::U32(u32::try_from(cred.pid).unwrap_or(0))),
        ("uid", JsValue::U32(cred.uid)),
        ("gid", JsValue::U32(cred.gid)),
    ]))
}

/// `nextHop(vsid, destination)`: what the router does with a packet from
/// VSID `vsid` to CA `destination`, on the running snapshot.
fn next_hop(args: &Args) -> JsResult<JsValue> {
    let vsid = args.u32(0)?;
    let dst = ip(args, 1)?;
    let snap = with_dataplane(|dp| Ok(dp.snapshot()))?;
    let drop = |reason: DropReason| ("drop_reason", JsValue::Str(reason.name().to_string()));
    let Some(subnet) = snap.subnet(vsid) else {
        return Ok(JsValue::Object(vec![("action", JsValue::Str("drop".into())), drop(DropReason::UnknownVsid)]));
    };
    let rd = subnet.routing_domain;
    let (route, target, record) = match snap.next_hop(rd, dst) {
        Ok(NextHop::Gateway) => return Ok(JsValue::Object(vec![("action", JsValue::Str("gateway".into()))])),
        Ok(NextHop::Vm { route, target, record }) => (route, target, record),
        Err(reason) => {
            // A route may have matched even though its target has no record: report it.
            let mut fields = vec![("action", JsValue::Str("drop".into())), drop(reason)];
            if let Some(route) = snap.route(rd, dst) {
                fields.push(("route_vsid", JsValue::U32(route.vsid)));
                fields.push(("route_prefix", JsValue::Str(format!("{}/{}", route.prefix, route.prefix_len))));
            }
            return Ok(JsValue::Object(fields));
        }
    };
    let mut fields = vec![
        ("route_vsid", JsValue::U32(route.vsid)),
        ("route_prefix", JsValue::Str(format!("{}/{}", route.prefix, route.prefix_len))),
        ("target", JsValue::Str(target.to_string())),
        ("record_vsid", JsValue::U32(record.vsid)),
        ("mac", JsValue::Str(record.mac.to_string())),
    ];
    match snap.reach(record) {
        Ok(Reach::Port(_)) => fields.push(("action", JsValue::Str("deliver".into()))),
        Ok(Reach::Tunnel(t)) => {
            fields.push(("action", JsValue::Str("encap".into())));
            fields.push(("pa", JsValue::Str(t.remote.to_string())));
            fields.push(("local_pa", JsValue::Str(t.local.to_string())));
        }
        Err(reason) => {
            fields.push(("action", JsValue::Str("drop".into())));
            fields.push(drop(reason));
        }
    }
    Ok(JsValue::Object(fields))
}
