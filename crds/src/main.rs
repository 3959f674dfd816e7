//! Writes the CRD YAML files into a directory (default `crds/`).
//!
//! ```sh
//! cargo run -p ndc-crds -- crds/
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    for (file, crd) in ndc_crds::all() {
        let path = dir.join(file);
        let written = ndc_crds::to_yaml(&crd)
            .map_err(|e| e.to_string())
            .and_then(|y| std::fs::write(&path, y).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
