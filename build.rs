// Migrations are embedded with `include_str!`; rebuild when any changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
