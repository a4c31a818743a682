//! `clean-host plugin new` and `clean-host plugin build`: a plugin project
//! that builds as it is, in Rust, Python, JavaScript, C or C++, and
//! building one into the plugins folder.
//!
//! A new project carries what it needs to build on its own: the WIT contract
//! (Python, JavaScript, C, C++) and the helper module of its language, as this build
//! of the host knows them; a Rust project depends on the SDK of the
//! repository the host was built from. The finished `.wasm` is moved into
//! the plugins folder in one step, so a running host reloads a whole file.

mod c;

use std::path::{Path, PathBuf};
use std::process::Command;

use clean_host_runtime::write_atomically;

const WIT: &str = include_str!("../../../wit/clean-host.wit");
const PYTHON_HELPER: &str = include_str!("../../../sdk-python/clean_host.py");
const JS_HELPER: &str = include_str!("../../../sdk-js/clean-host.js");
const RUST_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
    Cpp,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin name '{0}' must start with a lowercase letter and hold only a-z, 0-9, '-' and '_'")]
    Name(String),
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    #[error("the Rust SDK is not at {0}: build clean-host from its repository to scaffold Rust plugins")]
    NoSdk(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} is not a plugin project (no Cargo.toml, app.py or package.json, nor C or C++ files beside a wit/ folder)")]
    NotAProject(PathBuf),
    #[error("`{command}` failed ({status}); its output is above")]
    Tool { command: String, status: String },
    #[error("`{command}` could not start: {source}; {hint}")]
    Missing { command: String, source: std::io::Error, hint: &'static str },
    #[error("{0}")]
    Project(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io { path: path.to_path_buf(), source }
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// Create project `name` in `dir`; returns the files written.
pub fn new_project(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid =
        name.starts_with(|c: char| c.is_ascii_lowercase()) && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::Name(name.into()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.into()));
    }
    let fill = |template: &str| template.replace("{{name}}", name);
    let mut files: Vec<(PathBuf, String)> = match lang {
        Lang::Rust => {
            let sdk = Path::new(RUST_SDK);
            let sdk = sdk.canonicalize().map_err(|_| ScaffoldError::NoSdk(sdk.into()))?;
            vec![
                ("Cargo.toml".into(), fill(include_str!("../../templates/rust/Cargo.toml")).replace("{{sdk}}", &sdk.to_string_lossy())),
                (".cargo/config.toml".into(), include_str!("../../templates/rust/.cargo/config.toml").into()),
                ("src/lib.rs".into(), fill(include_str!("../../templates/rust/lib.rs"))),
            ]
        }
        Lang::Python => vec![("app.py".into(), fill(include_str!("../../templates/python/app.py"))), ("clean_host.py".into(), PYTHON_HELPER.into())],
        Lang::Js => vec![
            (format!("{name}.js").into(), fill(include_str!("../../templates/js/plugin.js"))),
            ("clean-host.js".into(), JS_HELPER.into()),
            ("package.json".into(), fill(include_str!("../../templates/js/package.json"))),
            ("build.mjs".into(), fill(include_str!("../../templates/js/build.mjs"))),
        ],
        Lang::C => c::project_files(name, false),
        Lang::Cpp => c::project_files(name, true),
    };
    if lang != Lang::Rust {
        files.push(("wit/clean-host.wit".into(), WIT.into()));
    }
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(relative);
        write(&path, &text)?;
        written.push(path);
    }
    Ok(written)
}

fn run(command: &mut Command, hint: &'static str) -> Result<(), ScaffoldError> {
    let shown = format!("{command:?}").replace('"', "");
    let status = command.status().map_err(|source| ScaffoldError::Missing { command: shown.clone(), source, hint })?;
    if status.success() {
        Ok(())
    } else {
        Err(ScaffoldError::Tool { command: shown, status: status.to_string() })
    }
}

/// Build the project in `dir` and move its component into `plugins`;
/// returns where it went.
pub fn build(dir: &Path, plugins: &Path) -> Result<PathBuf, ScaffoldError> {
    let dir = dir.canonicalize().map_err(io(dir))?;
    let folder_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::create_dir_all(plugins).map_err(io(plugins))?;
    let (name, built) = if dir.join("Cargo.toml").is_file() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(io(&dir))?;
        let manifest: toml::Table = toml::from_str(&manifest).map_err(|e| ScaffoldError::Project(format!("Cargo.toml: {}", e.message())))?;
        let name = manifest.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        let name = name.ok_or_else(|| ScaffoldError::Project("Cargo.toml has no package.name".into()))?;
        run(Command::new("cargo").args(["build", "--release", "--target", "wasm32-wasip2"]).current_dir(&dir), "install Rust with rustup")?;
        (name.clone(), target_dir(&dir, std::env::var_os("CARGO_TARGET_DIR")).join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_"))))
    } else if dir.join("app.py").is_file() {
        let out = dir.join(format!("{folder_name}.wasm"));
        let mut command = Command::new("componentize-py");
        command.args(["-d", "wit", "-w", "detector-plugin", "componentize", "-p", ".", "app", "-o"]).arg(&out).current_dir(&dir);
        run(&mut command, "install it with `pip install componentize-py`")?;
        (folder_name, out)
    } else if dir.join("package.json").is_file() {
        if !dir.join("node_modules").is_dir() {
            run(Command::new("npm").args(["install", "--no-audit", "--no-fund"]).current_dir(&dir), "install Node.js and npm")?;
        }
        let out = dir.join(format!("{folder_name}.wasm"));
        run(Command::new("node").arg("build.mjs").arg(&out).current_dir(&dir), "install Node.js")?;
        (folder_name, out)
    } else if c::is_project(&dir) {
        let out = c::build(&dir, &folder_name)?;
        (folder_name, out)
    } else {
        return Err(ScaffoldError::NotAProject(dir));
    };
    let dest = plugins.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&built).map_err(io(&built))?;
    write_atomically(&dest, &bytes, 0o666).map_err(io(&dest))?;
    Ok(dest)
}

/// Where cargo, run in `project`, puts what it builds: `CARGO_TARGET_DIR`
/// (relative to the project, as cargo takes it) or the project's `target`.
fn target_dir(project: &Path, cargo_target_dir: Option<std::ffi::OsString>) -> PathBuf {
    project.join(cargo_target_dir.unwrap_or_else(|| "target".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_is_where_cargo_put_it() {
        let project = Path::new("/work/p");
        assert_eq!(target_dir(project, None), Path::new("/work/p/target"));
        assert_eq!(target_dir(project, Some("../shared".into())), Path::new("/work/p/../shared"));
        assert_eq!(target_dir(project, Some("/tmp/t".into())), Path::new("/tmp/t"));
    }

    #[test]
    fn names_and_folders_are_checked() {
        let dir = tempfile_dir("names");
        assert!(matches!(new_project("Bad Name", Lang::Python, &dir.join("x")), Err(ScaffoldError::Name(_))));
        let files = new_project("absent", Lang::Python, &dir.join("absent")).unwrap();
        assert_eq!(files.len(), 3);
        let app = std::fs::read_to_string(dir.join("absent/app.py")).unwrap();
        assert!(app.contains(r#"ch.info("absent""#) && !app.contains("{{"));
        assert!(matches!(new_project("absent", Lang::Js, &dir.join("absent")), Err(ScaffoldError::Exists(_))));
        assert!(matches!(build(&dir, &dir.join("plugins")), Err(ScaffoldError::NotAProject(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_c_project_is_its_c_files_beside_a_wit_folder() {
        let dir = tempfile_dir("c");
        let files = new_project("keys", Lang::C, &dir.join("keys")).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.strip_prefix(dir.join("keys")).unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["keys.c", "clean_host.h", ".gitignore", "wit/clean-host.wit"]);
        let source = std::fs::read_to_string(dir.join("keys/keys.c")).unwrap();
        assert!(source.contains(r#""keys", "0.1.0""#) && source.contains("CLEAN_HOST_DETECTOR(") && !source.contains("{{"));
        assert!(c::is_project(&dir.join("keys")));
        // C files without the contract, or the contract without C, are no project.
        std::fs::remove_dir_all(dir.join("keys/wit")).unwrap();
        assert!(!c::is_project(&dir.join("keys")));
        assert!(matches!(build(&dir.join("keys"), &dir.join("plugins")), Err(ScaffoldError::NotAProject(_))));
        // C++: the same, in a .cpp file.
        let files = new_project("keys", Lang::Cpp, &dir.join("keys-cpp")).unwrap();
        assert!(files[0].ends_with("keys-cpp/keys.cpp") && c::is_project(&dir.join("keys-cpp")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("clean-host-scaffold-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
