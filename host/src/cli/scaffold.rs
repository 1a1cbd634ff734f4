//! `host new NAME --lang rust`: a new object project that builds as-is.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const RUST_CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.tmpl");
const RUST_LIB_RS: &str = include_str!("templates/rust/lib.rs.tmpl");
const RUST_README: &str = include_str!("templates/rust/README.md.tmpl");

/// Where this host's Rust guest SDK lives, so a scaffolded crate can depend on it by path.
fn sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/rust")
}

/// Creates `dir/name` with a Cargo project for a Rust object.
pub fn new_rust(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    crate::station::validate_object_id(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    if name.contains('.') {
        bail!(
            "{name:?} is a valid object id but not a valid crate name: use letters, digits, '-' and '_'"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = sdk_path();
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the Rust guest SDK is not at {}; run `host new` from a build of this repository",
            sdk.display()
        )
    })?;
    let render = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{sdk_path}}", &sdk.display().to_string())
    };
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(root.join("Cargo.toml"), render(RUST_CARGO_TOML))?;
    std::fs::write(root.join("src/lib.rs"), render(RUST_LIB_RS))?;
    std::fs::write(root.join("README.md"), render(RUST_README))?;
    Ok(root)
}

const PYTHON_APP: &str = include_str!("../../../objects/python/counter/app.py");

/// The repository's `scripts/build-python.sh`, which `host build` runs.
pub fn python_build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-python.sh")
}

/// Creates `dir/name` with an `app.py` for a Python object (the counter example).
pub fn new_python(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    crate::station::validate_object_id(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(root.join("app.py"), PYTHON_APP)?;
    std::fs::write(
        root.join("README.md"),
        format!(
            "# {name}\n\nAn Object Primitive object in Python.\n\n```sh\nhost build app.py -o {name}.wasm   # componentize-py, ~10 s, ~18 MB\nhost deploy {name}.wasm\ncurl -X POST localhost:8001/objects/{name}\n```\n"
        ),
    )?;
    Ok(root)
}
