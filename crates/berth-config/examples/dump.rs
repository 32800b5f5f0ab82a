fn main() {
    let path = std::env::args().nth(1).unwrap();
    match berth_config::load(std::path::Path::new(&path)) {
        Ok(c) => println!("{c:#?}"),
        Err(e) => println!("{e}"),
    }
}
