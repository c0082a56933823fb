fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/emesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().bytes(".").compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}
