//! The `fhirlake` binary: parse arguments, run, map the outcome to an exit code.

// The view engine and Arrow builders allocate many small objects; mimalloc
// measured faster than glibc malloc for them (README, benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fhirlake::cli::main()
}
