//! Finds libquiver the way a C build would: `pkg-config --libs quiver`
//! (build/env.sh puts the build tree's quiver.pc on PKG_CONFIG_PATH), or else
//! the build tree named by QUIVER_BUILD. No crate: the point is that the bare
//! C ABI is enough.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn from_pkg_config() -> Result<Vec<String>, String> {
    let out = Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
        .args(["--libs", "quiver"])
        .output()
        .map_err(|e| format!("cannot run pkg-config: {e}"))?;
    if !out.status.success() {
        return Err(format!("pkg-config --libs quiver: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=QUIVER_BUILD");

    let flags = match from_pkg_config() {
        Ok(flags) => flags,
        Err(why) => match env::var_os("QUIVER_BUILD") {
            Some(build) => {
                let lib = PathBuf::from(build).join("lib");
                vec![format!("-L{}", lib.display()), "-lquiver".to_owned()]
            }
            None => panic!("{why}; and QUIVER_BUILD is not set: source build/env.sh first"),
        },
    };
    for flag in &flags {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
            // So the test binaries also run without LD_LIBRARY_PATH, and the
            // re-executed child process finds the same library as its parent.
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
