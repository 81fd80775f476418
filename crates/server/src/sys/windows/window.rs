//! A message-only window: how a program with no desktop receives window messages
//! (`WSAAsyncSelect` notifications, timers, its own posted messages).
//!
//! [`WindowClass`] registers a window class under a name of its own (two servers in one
//! process must not share one: registration is per process) and unregisters it on drop.
//! [`WindowClass::with_window`] creates a window of that class whose parent is `HWND_MESSAGE`:
//! invisible, never enumerated, no desktop needed (an ordinary hidden window needs one, which a
//! service or Wine without a display does not have). The window receives posted and sent
//! messages only, and is destroyed (`DestroyWindow`) when `with_window` returns or unwinds.
//!
//! **Threads.** A window belongs to the thread that created it: only that thread's
//! [`get_message`] / [`peek_message`] retrieve its messages, and its window procedure runs only
//! on that thread. None of these types is `Send`.
//!
//! **The window procedure.** A class is registered for one handler type `P:` [`WindowProc`];
//! its `extern "system"` procedure, a trampoline, finds the handler through the window's
//! `GWLP_USERDATA` slot and calls [`WindowProc::window_proc`] with a shared reference (a
//! handler that changes state uses a `RefCell` or `Cell`). The slot holds a pointer to a
//! *borrowed* handler, which is sound only if the window never outlives the borrow; so the
//! window is not handed out as an owned value that could be leaked with `mem::forget`, but lent
//! to a closure, and `with_window` clears the slot and destroys the window before the borrow
//! ends. A panic in the handler must not unwind through user32's C frames (it would abort): the
//! trampoline catches it, and [`dispatch`] resumes it on the message loop's side.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use windows_sys::Win32::Foundation::{
    GetLastError, SetLastError, HINSTANCE, HWND, LPARAM, LRESULT, WPARAM,
};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::UI::WindowsAndMessaging as wm;
use windows_sys::Win32::UI::WindowsAndMessaging::{RegisterClassExW, WNDCLASSEXW};

pub use wm::MSG;

/// What a window created by [`WindowClass::with_window`] calls for each message it receives.
pub trait WindowProc {
    /// Handles one message sent or dispatched to `window`; `None` passes it on to
    /// `DefWindowProcW`. Runs on the window's thread, possibly re-entered if the handler itself
    /// makes a call that delivers sent messages.
    fn window_proc(
        &self,
        window: Window,
        msg: u32,
        wparam: WPARAM,
        lparam: LPARAM,
    ) -> Option<LRESULT>;
}

/// A window handle, not owning: what a handler or a message loop uses to post to the window
/// and set its timers. Calls on a handle whose window is gone fail; they are never unsound
/// (user32 validates every handle it is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(HWND);

impl Window {
    /// The raw `HWND`, e.g. for `WSAAsyncSelect`.
    pub fn hwnd(self) -> HWND {
        self.0
    }

    /// `PostMessageW`: queues a message for the window and returns at once. Fails when the
    /// thread's message queue is full (10,000 messages by default) or the window is gone.
    pub fn post(self, msg: u32, wparam: WPARAM, lparam: LPARAM) -> io::Result<()> {
        // SAFETY: plain values; user32 checks the window handle and reports a stale one.
        if unsafe { wm::PostMessageW(self.0, msg, wparam, lparam) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `SetTimer`: a `WM_TIMER` with `wParam == id` is posted to the window every `interval`
    /// (rounded up to whole milliseconds; Windows raises anything below 10 ms to 10 ms) until
    /// [`Window::kill_timer`]. Setting an existing `id` again restarts it with the new interval.
    pub fn set_timer(self, id: usize, interval: Duration) -> io::Result<()> {
        let ms = interval
            .as_nanos()
            .div_ceil(1_000_000)
            .clamp(1, 0x7fff_ffff) as u32;
        // SAFETY: plain values; no timer procedure (the timer posts WM_TIMER to the window).
        if unsafe { wm::SetTimer(self.0, id, ms, None) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `KillTimer`: stops the timer `id`. A `WM_TIMER` already queued stays in the queue.
    pub fn kill_timer(self, id: usize) {
        // SAFETY: plain values; a timer that does not exist is reported, not a fault.
        unsafe { wm::KillTimer(self.0, id) };
    }

    /// A handle other threads may post to ([`Poster`]).
    pub fn poster(self) -> Poster {
        Poster(self.0 as isize)
    }
}

/// What another thread keeps of a window to post messages to it (`PostMessageW` may be called
/// from any thread; the message is queued for the window's own thread). Only posting: the
/// window's timers and its messages stay with its thread. Posting to a window that is gone
/// fails; it is never unsound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poster(isize);

impl Poster {
    /// [`Window::post`], from any thread.
    pub fn post(self, msg: u32, wparam: WPARAM, lparam: LPARAM) -> io::Result<()> {
        Window(self.0 as HWND).post(msg, wparam, lparam)
    }
}

/// `ERROR_NOT_ENOUGH_QUOTA` (1816): what `PostMessageW` fails with when the thread's message
/// queue holds `USERPostMessageLimit` messages (10,000 by default).
pub const ERROR_NOT_ENOUGH_QUOTA: i32 = 1816;

/// True if `e` (from [`Window::post`]) says the window's message queue is full.
pub fn is_queue_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_NOT_ENOUGH_QUOTA)
}

/// A registered window class whose windows call handlers of type `P`; unregistered on drop.
#[derive(Debug)]
pub struct WindowClass<P: WindowProc> {
    /// The class name, NUL-terminated UTF-16; it must stay alive while the class is registered.
    name: Vec<u16>,
    instance: HINSTANCE,
    _handler: PhantomData<fn(&P)>,
}

impl<P: WindowProc> WindowClass<P> {
    /// Registers a class named `{prefix}-{process id}-{counter}`, unique in the process.
    pub fn register(prefix: &str) -> io::Result<WindowClass<P>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        );
        let name: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
        // SAFETY: a null name asks for the module of the running executable; no ownership is
        // transferred (the handle needs no freeing).
        let instance: HINSTANCE = unsafe { GetModuleHandleW(ptr::null()) };
        let class = WNDCLASSEXW {
            cbSize: size_of::<WNDCLASSEXW>() as u32,
            style: 0,
            lpfnWndProc: Some(trampoline::<P>),
            cbClsExtra: 0,
            cbWndExtra: 0,
            hInstance: instance,
            hIcon: ptr::null_mut(),
            hCursor: ptr::null_mut(),
            hbrBackground: ptr::null_mut(),
            lpszMenuName: ptr::null(),
            lpszClassName: name.as_ptr(),
            hIconSm: ptr::null_mut(),
        };
        // SAFETY: `class` is a fully initialised WNDCLASSEXW with its size set; the name it
        // points to lives in `name`, which the returned value keeps until UnregisterClassW.
        if unsafe { RegisterClassExW(&class) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WindowClass {
            name,
            instance,
            _handler: PhantomData,
        })
    }

    /// Creates a message-only window of this class whose messages go to `handler`, runs `f`
    /// with it on this thread, then destroys the window (also if `f` panics) and returns what
    /// `f` returned. Messages still queued for the window are never delivered to `handler`.
    pub fn with_window<R>(&self, handler: &P, f: impl FnOnce(Window) -> R) -> io::Result<R> {
        // SAFETY: the class name is the registered, NUL-terminated one; HWND_MESSAGE makes the
        // window message-only; no menu, no creation parameter. Creation messages reach the
        // trampoline while GWLP_USERDATA is still 0, so they go to DefWindowProcW.
        let hwnd = unsafe {
            wm::CreateWindowExW(
                0,
                self.name.as_ptr(),
                ptr::null(),
                0,
                0,
                0,
                0,
                0,
                wm::HWND_MESSAGE,
                ptr::null_mut(),
                self.instance,
                ptr::null(),
            )
        };
        if hwnd.is_null() {
            return Err(io::Error::last_os_error());
        }
        let window = OwnedWindow(hwnd);
        // SAFETY: `hwnd` is our live window. SetWindowLongPtrW returns the previous value, 0
        // here, so success is told from failure by the thread's last error, cleared first.
        unsafe {
            SetLastError(0);
            if wm::SetWindowLongPtrW(hwnd, wm::GWLP_USERDATA, handler as *const P as isize) == 0
                && GetLastError() != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // From here the trampoline may turn the slot back into `&P`: `handler` is borrowed
        // until this function returns, and `window` (dropped before that, on return or unwind)
        // clears the slot before the window goes.
        Ok(f(Window(window.0)))
    }
}

impl<P: WindowProc> Drop for WindowClass<P> {
    fn drop(&mut self) {
        // SAFETY: the name and instance it was registered with. Every window of the class was
        // destroyed by `with_window`, so unregistering succeeds.
        if unsafe { wm::UnregisterClassW(self.name.as_ptr(), self.instance) } == 0 {
            log::debug!("UnregisterClassW failed: {}", io::Error::last_os_error());
        }
    }
}

/// The window `with_window` created: detached from its handler and destroyed on drop.
struct OwnedWindow(HWND);

impl Drop for OwnedWindow {
    fn drop(&mut self) {
        // SAFETY: we created the window on this thread (OwnedWindow never leaves
        // `with_window`) and destroy it once. The slot is cleared first, so the messages
        // DestroyWindow sends (WM_DESTROY, WM_NCDESTROY) go to DefWindowProcW.
        unsafe {
            wm::SetWindowLongPtrW(self.0, wm::GWLP_USERDATA, 0);
            wm::DestroyWindow(self.0);
        }
    }
}

thread_local! {
    /// A panic the trampoline caught on this thread, to be resumed outside user32's frames.
    static CAUGHT_PANIC: Cell<Option<Box<dyn Any + Send>>> = const { Cell::new(None) };
}

/// The window procedure of every class registered for `P`.
///
/// # Safety
/// `hwnd` must be a window of a class registered by `WindowClass::<P>::register`: its
/// `GWLP_USERDATA` slot is then 0 or a `*const P` to a live `P`. user32 guarantees that when it
/// calls the procedure it was registered with; nothing else calls it.
unsafe extern "system" fn trampoline<P: WindowProc>(
    hwnd: HWND,
    msg: u32,
    wparam: WPARAM,
    lparam: LPARAM,
) -> LRESULT {
    // SAFETY: user32 calls a window procedure with the handle of a live window of its class.
    let slot = unsafe { wm::GetWindowLongPtrW(hwnd, wm::GWLP_USERDATA) } as *const P;
    // SAFETY: only `with_window` writes the slot of a window of this class (the class name is
    // private to its `WindowClass<P>`): either 0, or the address of the `P` it borrows, set
    // after creation and cleared before destruction, so a non-null slot points to a live `P`.
    // A window procedure runs only on the window's thread, the one that holds that borrow, and
    // only shared references are made from it, so re-entrant calls alias nothing mutable.
    if let Some(handler) = unsafe { slot.as_ref() } {
        let call = || handler.window_proc(Window(hwnd), msg, wparam, lparam);
        match panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(Some(result)) => return result,
            Ok(None) => {}
            Err(payload) => {
                CAUGHT_PANIC.with(|c| c.set(Some(payload)));
                return 0;
            }
        }
    }
    // SAFETY: forwards exactly what user32 passed in.
    unsafe { wm::DefWindowProcW(hwnd, msg, wparam, lparam) }
}

/// Resumes a panic a window procedure caught on this thread, if any.
fn resume_caught_panic() {
    if let Some(payload) = CAUGHT_PANIC.with(|c| c.take()) {
        panic::resume_unwind(payload);
    }
}

/// `GetMessageW` for every window of this thread (and its thread messages): blocks until a
/// message is posted, or a timer is due; delivers messages other threads *send* to this
/// thread's windows meanwhile. `None` for `WM_QUIT`.
pub fn get_message() -> io::Result<Option<MSG>> {
    // SAFETY: MSG is plain old data; GetMessageW fills it in.
    let mut msg: MSG = unsafe { std::mem::zeroed() };
    // SAFETY: `msg` is a live MSG to write; a null window means any window of this thread.
    let rc = unsafe { wm::GetMessageW(&mut msg, ptr::null_mut(), 0, 0) };
    resume_caught_panic();
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(msg)),
    }
}

/// `PeekMessageW(PM_REMOVE)`: the next queued message of this thread, without waiting.
pub fn peek_message() -> Option<MSG> {
    // SAFETY: MSG is plain old data; PeekMessageW fills it in.
    let mut msg: MSG = unsafe { std::mem::zeroed() };
    // SAFETY: `msg` is a live MSG to write; a null window means any window of this thread.
    let got = unsafe { wm::PeekMessageW(&mut msg, ptr::null_mut(), 0, 0, wm::PM_REMOVE) };
    resume_caught_panic();
    (got != 0).then_some(msg)
}

/// `DispatchMessageW`: calls the window procedure of the message's window (nothing for a
/// thread message), then resumes a panic the procedure raised.
pub fn dispatch(msg: &MSG) {
    // SAFETY: `msg` came from GetMessageW/PeekMessageW; user32 validates its window handle.
    unsafe { wm::DispatchMessageW(msg) };
    resume_caught_panic();
}
