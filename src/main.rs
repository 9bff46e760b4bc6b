//! `insar-mm` command-line entry point. The command-line layer (`cli`) lives in the binary so
//! that nothing in the library can depend on it; every piece of logic it calls is in the
//! library (`insar_mm`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
