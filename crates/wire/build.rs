//! Generates the gRPC code from `proto/emesh.proto`. Uses `$PROTOC` or a `protoc` on the PATH
//! (CI installs Debian's), else the protoc shipped in the `protoc-bin-vendored` package, so a
//! fresh machine builds with nothing installed by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/emesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let on_path = std::process::Command::new("protoc").arg("--version").output().is_ok_and(|o| o.status.success());
    if std::env::var_os("PROTOC").is_none() && !on_path {
        let vendored = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; the variable is read by the codegen below.
        unsafe { std::env::set_var("PROTOC", vendored) };
    }
    tonic_prost_build::configure().bytes(".").compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}
