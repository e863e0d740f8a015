//! The `cairn` binary.

/// mimalloc instead of the system allocator: queries and ingest make many
/// small, short-lived allocations, which glibc's malloc serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cairn::cli::main()
}
