//! Writes the bundled sample photo: `cargo run -p clothjob-e2e --example write_sample -- PATH`.

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/tshirt.jpg".into());
    std::fs::write(&path, clothjob_e2e::sample::tshirt_jpeg(600, 800)?)?;
    println!("wrote {path}");
    Ok(())
}
