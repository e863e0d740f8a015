//! The `cairn` binary.

/// mimalloc instead of the system allocator: queries and ingest make many
/// small, short-lived allocations, which glibc's malloc serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cairn_common::memory::set_release_freed(collect_freed);
    cairn::cli::main()
}

/// mimalloc keeps the pages a thread freed for that thread to reuse, and
/// purges them only when the thread allocates again: a thread that goes
/// idle after a large query would keep its peak resident. A forced
/// collection frees this thread's empty pages and purges what every
/// thread has handed back so far (see docs/design/limits.md).
fn collect_freed() {
    #[allow(unsafe_code, reason = "an FFI call into the allocator")]
    // SAFETY: mi_collect may be called from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}
