//! `insar-mm` command-line entry point. All logic lives in the library (`insar_mm::cli`).

fn main() -> std::process::ExitCode {
    insar_mm::cli::main()
}
