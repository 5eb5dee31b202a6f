//! Node-API glue: converts arguments, calls the core, converts results. Nothing else.
//!
//! Every export goes through [`export`], which catches panics at the boundary and
//! turns every failure into a JS `Error` with a stable `code` (`NVGRE_ERR_NATIVE_*`).
//! The JS-facing types are declared in `native/index.d.ts`; `EXPORTS` is the
//! list a test compares with it.

mod exports;
mod napi;

use napi::*;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

pub use exports::EXPORTS;

/// A failure to report to JavaScript: a stable code and a message.
#[derive(Debug)]
pub struct JsError {
    pub code: &'static str,
    pub message: String,
}

impl JsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> JsError {
        JsError { code, message: message.into() }
    }
    pub fn arg(message: impl Into<String>) -> JsError {
        JsError::new("NVGRE_ERR_NATIVE_ARGUMENT", message)
    }
}

pub type JsResult<T> = Result<T, JsError>;

/// The arguments of one call, with typed accessors that name the bad argument.
pub struct Args {
    env: napi_env,
    argv: [napi_value; 8],
    argc: usize,
}

/// A Node-API call's status: anything but `napi_ok` is an error (an
/// exception may already be pending: `throw` then leaves it).
fn check(status: napi_status, what: &str) -> JsResult<()> {
    if status == NAPI_OK {
        Ok(())
    } else {
        Err(JsError::new("NVGRE_ERR_NATIVE_NAPI", format!("{what} failed (napi_status {status})")))
    }
}

impl Args {
    fn get(&self, i: usize) -> JsResult<napi_value> {
        if i < self.argc {
            Ok(self.argv[i])
        } else {
            Err(JsError::arg(format!("argument {i} is missing")))
        }
    }

    pub fn is_nullish(&self, i: usize) -> bool {
        if i >= self.argc {
            return true;
        }
        let mut t = NAPI_UNDEFINED;
        // SAFETY: env and value come from this call's napi_get_cb_info; `t` is a live i32.
        let status = unsafe { napi_typeof(self.env, self.argv[i], &mut t) };
        status == NAPI_OK && (t == NAPI_UNDEFINED || t == NAPI_NULL)
    }

    pub fn string(&self, i: usize) -> JsResult<String> {
        let v = self.get(i)?;
        let mut len = 0usize;
        // SAFETY: a null buffer asks only for the length, written into `len`.
        if unsafe { napi_get_value_string_utf8(self.env, v, ptr::null_mut(), 0, &mut len) } != NAPI_OK {
            return Err(JsError::arg(format!("argument {i} must be a string")));
        }
        let mut buf = vec![0u8; len + 1];
        // SAFETY: `buf` has room for `len` bytes and the NUL the call writes.
        let status = unsafe { napi_get_value_string_utf8(self.env, v, buf.as_mut_ptr() as *mut c_char, len + 1, &mut len) };
        check(status, "reading a string argument")?;
        buf.truncate(len);
        String::from_utf8(buf).map_err(|_| JsError::arg(format!("argument {i} is not UTF-8")))
    }

    pub fn opt_string(&self, i: usize) -> JsResult<Option<String>> {
        if self.is_nullish(i) {
            Ok(None)
        } else {
            self.string(i).map(Some)
        }
    }

    pub fn u32(&self, i: usize) -> JsResult<u32> {
        let mut out = 0u32;
        // SAFETY: env and value come from this call; `out` is a live u32.
        if unsafe { napi_get_value_uint32(self.env, self.get(i)?, &mut out) } != NAPI_OK {
            return Err(JsError::arg(format!("argument {i} must be a number")));
        }
        Ok(out)
    }

    /// A Node `Buffer`, borrowed for the duration of the call.
    pub fn buffer(&self, i: usize) -> JsResult<&[u8]> {
        let mut data: *mut c_void = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: env and value come from this call; the out-pointers are live locals.
        if unsafe { napi_get_buffer_info(self.env, self.get(i)?, &mut data, &mut len) } != NAPI_OK {
            return Err(JsError::arg(format!("argument {i} must be a Buffer")));
        }
        if len == 0 || data.is_null() {
            return Ok(&[]);
        }
        // SAFETY: Node guarantees `len` readable bytes at `data` while the
        // Buffer is alive, which it is for the whole call (it is an argument).
        Ok(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
    }
}

/// Values a native function can hand back to JavaScript.
pub enum JsValue {
    Undefined,
    Bool(bool),
    U32(u32),
    Str(String),
    Array(Vec<JsValue>),
    /// Becomes a `BigUint64Array` (one bulk crossing for all counters).
    U64Array(Vec<u64>),
    Object(Vec<(&'static str, JsValue)>),
}

/// Make the JavaScript value, every Node-API status checked.
fn to_napi(env: napi_env, v: JsValue) -> JsResult<napi_value> {
    let mut out: napi_value = ptr::null_mut();
    // SAFETY: `env` is the current call's environment; `out` and the other
    // out-pointers are live locals; a pointer passed with a length points at
    // that many bytes (the ArrayBuffer Node just made holds `bytes`).
    unsafe {
        match v {
            JsValue::Undefined => check(napi_get_undefined(env, &mut out), "undefined")?,
            JsValue::Bool(b) => check(napi_get_boolean(env, b, &mut out), "a boolean")?,
            JsValue::U32(n) => check(napi_create_uint32(env, n, &mut out), "a number")?,
            JsValue::Str(s) => out = js_string(env, &s)?,
            JsValue::Array(items) => {
                check(napi_create_array_with_length(env, items.len(), &mut out), "an array")?;
                for (i, v) in items.into_iter().enumerate() {
                    check(napi_set_element(env, out, i as u32, to_napi(env, v)?), "an array element")?;
                }
            }
            JsValue::U64Array(values) => {
                let mut data: *mut c_void = ptr::null_mut();
                let mut ab: napi_value = ptr::null_mut();
                let bytes = values.len() * 8;
                check(napi_create_arraybuffer(env, bytes, &mut data, &mut ab), "an ArrayBuffer")?;
                if bytes > 0 {
                    ptr::copy_nonoverlapping(values.as_ptr() as *const u8, data as *mut u8, bytes);
                }
                check(napi_create_typedarray(env, NAPI_BIGUINT64_ARRAY, values.len(), ab, 0, &mut out), "a BigUint64Array")?;
            }
            JsValue::Object(fields) => {
                check(napi_create_object(env, &mut out), "an object")?;
                for (k, v) in fields {
                    let key = CString::new(k).expect("field names have no NUL");
                    check(napi_set_named_property(env, out, key.as_ptr(), to_napi(env, v)?), "an object property")?;
                }
            }
        }
    }
    Ok(out)
}

fn js_string(env: napi_env, s: &str) -> JsResult<napi_value> {
    let mut out: napi_value = ptr::null_mut();
    // SAFETY: `s` is `s.len()` readable bytes of UTF-8; `out` is a live local.
    check(unsafe { napi_create_string_utf8(env, s.as_ptr() as *const c_char, s.len(), &mut out) }, "a string")?;
    Ok(out)
}

/// Throw `e` as a JS Error with its code, unless an exception is already pending.
fn throw(env: napi_env, e: JsError) {
    let mut pending = false;
    // SAFETY: `env` is the current call's; `pending` is a live local.
    if unsafe { napi_is_exception_pending(env, &mut pending) } != NAPI_OK || pending {
        return;
    }
    let (Ok(code), Ok(message)) = (js_string(env, e.code), js_string(env, &e.message)) else { return };
    let mut err: napi_value = ptr::null_mut();
    // SAFETY: code and message are values of this env; `err` is a live local, then an Error of this env.
    unsafe {
        if napi_create_error(env, code, message, &mut err) == NAPI_OK {
            napi_throw(env, err);
        }
    }
}

/// The one boundary every export crosses: arguments in, panics caught, errors thrown.
///
/// # Safety
/// Called by Node with the environment and callback info of a call.
pub(crate) unsafe fn export(
    env: napi_env,
    info: napi_callback_info,
    f: fn(&Args) -> JsResult<JsValue>,
) -> napi_value {
    let mut args = Args { env, argv: [ptr::null_mut(); 8], argc: 8 };
    // SAFETY: argv has room for argc (8) values; Node writes at most that many.
    let status = unsafe { napi_get_cb_info(env, info, &mut args.argc, args.argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) };
    args.argc = args.argc.min(8);
    let result = catch_unwind(AssertUnwindSafe(|| {
        check(status, "reading the arguments")?;
        to_napi(env, f(&args)?)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(JsError::new("NVGRE_ERR_NATIVE_PANIC", msg))
    });
    match result {
        Ok(v) => v,
        Err(e) => {
            throw(env, e);
            ptr::null_mut()
        }
    }
}

/// Node calls this when the addon is loaded; it fills `exports` from [`EXPORTS`].
///
/// # Safety
/// Called by Node with a valid environment and exports object.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    for (name, cb) in EXPORTS {
        let cname = CString::new(*name).expect("export names have no NUL");
        let mut f: napi_value = ptr::null_mut();
        // SAFETY: Node's env and exports; the name is NUL-terminated and `f` a live local.
        let made = unsafe {
            check(napi_create_function(env, cname.as_ptr(), name.len(), *cb, ptr::null_mut(), &mut f), "creating an export")
                .and_then(|_| check(napi_set_named_property(env, exports, cname.as_ptr(), f), "setting an export"))
        };
        // A partial addon would fail later in stranger ways: fail the load.
        if let Err(e) = made {
            throw(env, e);
            return ptr::null_mut();
        }
    }
    exports
}
