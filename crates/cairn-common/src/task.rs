//! Fault isolation for background work: a panic while working on one
//! tenant's data becomes an error for that tenant, so that a loop over
//! tenants carries on with the others instead of dying for all of them.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// The message of a caught panic.
pub fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into `Err(message)`.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// Awaits `f`, turning a panic into `Err(message)`.
pub async fn catch_panic_async<F: Future>(f: F) -> Result<F::Output, String> {
    AssertUnwindSafe(f).catch_unwind().await.map_err(|p| panic_message(p.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        assert_eq!(catch_panic(|| 1), Ok(1));
        let r: Result<(), String> = catch_panic(|| panic!("tenant {} is broken", "t1"));
        assert_eq!(r, Err("tenant t1 is broken".to_owned()));
    }

    #[tokio::test]
    async fn async_panics_become_errors() {
        let r = catch_panic_async(async {
            let v: Vec<i64> = Vec::new();
            v[3]
        })
        .await;
        assert!(r.expect_err("panicked").contains("index out of bounds"));
    }
}
