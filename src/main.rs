fn main() {
    std::process::exit(nexcage::main(std::env::args_os().collect()));
}
