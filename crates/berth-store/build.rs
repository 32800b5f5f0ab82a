// `sqlx::migrate!` embeds the migration files at compile time; tell cargo to rebuild when
// one of them changes (or is added), otherwise a new migration would silently not ship.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
