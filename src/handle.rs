//! The state behind an opaque C handle, and the panic boundary around every
//! call that reaches it.
//!
//! One call at a time reaches the state: a frame callback that calls back
//! into its own decoder gets `Busy` instead of a second `&mut`. A panic in
//! a call is caught (it must never unwind into C) and poisons the handle for
//! good: the state may be half-updated, so every later call gets `Poisoned`
//! and only freeing it remains.

use std::{
    cell::{Cell, RefCell},
    panic::{catch_unwind, AssertUnwindSafe},
};

use crate::result::QnsResult;

/// A handle's state. Not thread safe: each handle type that holds one says
/// which thread may use it (one at a time).
#[derive(Debug)]
pub struct Handle<T> {
    value: RefCell<T>,
    poisoned: Cell<bool>,
}

impl<T> Handle<T> {
    /// A fresh handle around `value`.
    pub fn new(value: T) -> Self {
        Handle {
            value: RefCell::new(value),
            poisoned: Cell::new(false),
        }
    }

    /// Run `f` on the state inside the panic boundary: `Busy` if a call on
    /// this handle is already running, `Panic` if `f` panicked (and
    /// `Poisoned` for every call after that).
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, QnsResult> {
        if self.poisoned.get() {
            return Err(QnsResult::Poisoned);
        }
        let Ok(mut value) = self.value.try_borrow_mut() else {
            return Err(QnsResult::Busy);
        };
        catch_unwind(AssertUnwindSafe(|| f(&mut value))).map_err(|_| {
            self.poisoned.set(true);
            QnsResult::Panic
        })
    }

    /// Run `f`, which must not panic, on the state without the boundary's
    /// set-up cost; `None` when the handle is busy or poisoned.
    #[inline(always)]
    pub fn unguarded<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.poisoned.get() {
            return None;
        }
        self.value
            .try_borrow_mut()
            .ok()
            .map(|mut value| f(&mut value))
    }

    /// Whether a call on this handle is running.
    pub fn is_busy(&self) -> bool {
        self.value.try_borrow_mut().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_poisons_the_handle_for_good() {
        let h = Handle::new(0u32);
        assert_eq!(h.with(|v| *v += 1), Ok(()));
        let panicked = h.with(|v| {
            *v += 1;
            panic!("half-updated");
        });
        assert_eq!(panicked, Err(QnsResult::Panic));
        assert_eq!(h.with(|v| *v), Err(QnsResult::Poisoned));
        assert_eq!(h.unguarded(|v| *v), None);
        assert!(!h.is_busy());
        assert_eq!(
            QnsResult::from(h.with(|_| QnsResult::Ok)),
            QnsResult::Poisoned
        );
    }

    #[test]
    fn a_call_from_inside_a_call_is_busy() {
        let h = Handle::new(());
        let inner = h.with(|()| (h.is_busy(), h.with(|()| ()), h.unguarded(|()| ())));
        assert_eq!(inner, Ok((true, Err(QnsResult::Busy), None)));
        assert_eq!(h.with(|()| ()), Ok(()));
    }
}
