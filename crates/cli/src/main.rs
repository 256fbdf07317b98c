//! `sheafbench` (in construction).

fn main() {
    eprintln!("sheafbench: not built yet");
    std::process::exit(2);
}
