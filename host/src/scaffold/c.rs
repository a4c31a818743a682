//! Building a C or C++ detector: Debian's clang, lld and wasi-libc (and
//! libc++ for C++) compile it for wasm32-wasi (a WASI preview 1 core
//! module); the host itself writes the bindings (wit-bindgen's C
//! generator, from the project's `wit/`) and turns the module into a
//! component (wit-component, with wasmtime's preview 1 adapter). So an
//! author needs no tool beyond the compiler, and a missing compiler is
//! installed the way Debian installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use wit_bindgen_core::wit_parser::Resolve;

use super::{io, run, ScaffoldError};

/// The world a detector exports.
const WORLD: &str = "detector-plugin";
const TARGET: &str = "--target=wasm32-wasi";
/// What the C toolchain hint says when it cannot be installed here.
const INSTALL_HINT: &str = "install clang, lld, wasi-libc and clang's wasm32 runtime, and for C++ its libc++ (Debian, N being clang's major version: \
                            apt-get install clang lld wasi-libc libclang-rt-N-dev-wasm32 libc++-N-dev-wasm32 libc++abi-N-dev-wasm32)";
/// Extensions of C++ sources; other sources are C (`.c`).
const CPP_EXTENSIONS: [&str; 3] = ["cpp", "cc", "cxx"];

/// Whether `dir` holds a C or C++ detector project: sources beside a `wit/` folder.
pub(super) fn is_project(dir: &Path) -> bool {
    dir.join("wit").is_dir() && sources(dir).is_ok_and(|s| !s.is_empty())
}

fn is_cpp(source: &Path) -> bool {
    source.extension().is_some_and(|x| CPP_EXTENSIONS.iter().any(|c| x == *c))
}

/// Build the project in `dir` into `dir/NAME.wasm`; returns its path. Each
/// source is compiled on its own (C with clang, C++17 with clang in g++
/// mode, without exceptions: wasm32-wasi has none), then linked as a
/// reactor. `CLEAN_HOST_CFLAGS` and `CLEAN_HOST_CXXFLAGS` add flags: not
/// `CFLAGS`, which are a native build's.
pub(super) fn build(dir: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let sources = sources(dir).map_err(io(dir))?;
    let cpp = sources.iter().any(|s| is_cpp(s));
    let clang = toolchain(cpp)?;
    let out = dir.join("build");
    let bindings = out.join("bindings");
    generate_bindings(&dir.join("wit"), &bindings)?;
    let objects_dir = out.join("obj");
    std::fs::create_dir_all(&objects_dir).map_err(io(&objects_dir))?;
    // The bindings' object beside them: a source of the same name cannot overwrite it.
    let objects_of = sources.iter().map(|s| (s.clone(), objects_dir.join(format!("{}.o", s.file_name().unwrap_or_default().to_string_lossy()))));
    let mut objects = Vec::new();
    for (source, object) in objects_of.chain([(bindings.join("detector_plugin.c"), bindings.join("detector_plugin.o"))]) {
        let cpp = is_cpp(&source);
        let mut command = compiler(&clang, cpp);
        command.args([TARGET, "-O2", "-Wall", "-c"]).args(cpp.then_some("-std=c++17"));
        command.arg("-I").arg(&bindings).arg("-I").arg(dir).arg(&source).arg("-o").arg(&object);
        if let Some(flags) = std::env::var_os(if cpp { "CLEAN_HOST_CXXFLAGS" } else { "CLEAN_HOST_CFLAGS" }) {
            command.args(flags.to_string_lossy().split_whitespace());
        }
        run(command.current_dir(dir), INSTALL_HINT)?;
        objects.push(object);
    }
    let core = out.join(format!("{name}.core.wasm"));
    let mut link = compiler(&clang, cpp);
    link.args([TARGET, "-mexec-model=reactor", "-Wl,--strip-all", "-o"]).arg(&core).args(&objects);
    run(link.arg(bindings.join("detector_plugin_component_type.o")).current_dir(dir), INSTALL_HINT)?;
    let module = std::fs::read(&core).map_err(io(&core))?;
    let component = componentize(&module).map_err(|e| ScaffoldError::Project(format!("{} is no detector component: {e:#}", core.display())))?;
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&wasm, component).map_err(io(&wasm))?;
    Ok(wasm)
}

/// clang, as a C++ compiler if `cpp`.
fn compiler(clang: &Path, cpp: bool) -> Command {
    let mut command = Command::new(clang);
    if cpp {
        command.args(["--driver-mode=g++", "-fno-exceptions"]);
    }
    command
}

/// The project's C and C++ files (not those in subfolders: tests, build), in order.
fn sources(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| (p.extension().is_some_and(|x| x == "c") || is_cpp(p)) && p.is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// Write `detector_plugin.{h,c}` and its component-type object for the
/// WIT package in `wit`.
fn generate_bindings(wit: &Path, into: &Path) -> Result<(), ScaffoldError> {
    let bad = |e: anyhow::Error| ScaffoldError::Project(format!("{}: {e:#}", wit.display()));
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(wit).map_err(bad)?;
    let world = resolve.select_world(&[package], Some(WORLD)).map_err(bad)?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files).map_err(bad)?;
    for (file, bytes) in files.iter() {
        let path = into.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(())
}

/// A component of a preview 1 reactor module whose bindings carry their
/// world (the component-type object linked in).
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .adapter("wasi_snapshot_preview1", wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)?
        .encode()
}

/// clang with a wasm32-wasi C library and runtime (and C++ library, if
/// `cpp`), and wasm-ld: installed from Debian's packages when missing (as
/// root, or with sudo).
fn toolchain(cpp: bool) -> Result<PathBuf, ScaffoldError> {
    let clang = PathBuf::from(std::env::var_os("CLEAN_HOST_CLANG").unwrap_or_else(|| "clang".into()));
    let missing = missing_packages(&clang, cpp);
    if missing.is_empty() {
        return Ok(clang);
    }
    install(&missing)?;
    // clang's runtime packages are named after its version, known once it is there.
    let missing = missing_packages(&clang, cpp);
    if !missing.is_empty() {
        install(&missing)?;
    }
    match missing_packages(&clang, cpp).as_slice() {
        [] => Ok(clang),
        still => Err(ScaffoldError::Project(format!("after installing, still missing: {}; {INSTALL_HINT}", still.join(", ")))),
    }
}

/// The Debian packages a C (or C++) build lacks, by what is not found.
fn missing_packages(clang: &Path, cpp: bool) -> Vec<String> {
    let ask = |args: &[&str]| {
        Command::new(clang).args(args).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(version) = ask(&["-dumpversion"]) else {
        return vec!["clang".into(), "lld".into(), "wasi-libc".into()];
    };
    let mut missing = Vec::new();
    // clang names a file or program it cannot find by its bare name.
    let found = |args: &[&str]| ask(args).is_some_and(|p| Path::new(&p).is_absolute() && Path::new(&p).is_file());
    // The linker: beside clang (its own LLVM's), else on PATH.
    if !found(&["-print-prog-name=wasm-ld"]) && Command::new("wasm-ld").arg("--version").output().is_err() {
        missing.push("lld".into());
    }
    if !found(&[TARGET, "-print-file-name=libc.a"]) {
        missing.push("wasi-libc".into());
    }
    let major = version.split('.').next().unwrap_or("14");
    if !found(&[TARGET, "-print-libgcc-file-name"]) {
        missing.push(format!("libclang-rt-{major}-dev-wasm32"));
    }
    if cpp && !found(&[TARGET, "-print-file-name=libc++.a"]) {
        missing.extend([format!("libc++-{major}-dev-wasm32"), format!("libc++abi-{major}-dev-wasm32")]);
    }
    missing
}

fn install(packages: &[String]) -> Result<(), ScaffoldError> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            // sudo resets the environment: the variable goes on the command line.
            command.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    eprintln!("installing {} (Debian packages) for C and C++ detectors", packages.join(" "));
    run(&mut apt(&["update", "-qq"]), INSTALL_HINT)?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    run(install.args(packages), INSTALL_HINT)
}

/// The files of a new C (or C++) project called `name`.
pub(super) fn project_files(name: &str, cpp: bool) -> Vec<(PathBuf, String)> {
    let (file, template) = match cpp {
        false => (format!("{name}.c"), include_str!("../../templates/c/detector.c")),
        true => (format!("{name}.cpp"), include_str!("../../templates/cpp/detector.cpp")),
    };
    vec![
        (file.into(), template.replace("{{name}}", name)),
        ("clean_host.h".into(), include_str!("../../../sdk-c/clean_host.h").into()),
        (".gitignore".into(), "/build/\n/*.wasm\n".into()),
    ]
}
