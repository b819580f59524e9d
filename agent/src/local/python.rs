//! Local mode's Python: the venv with the pinned Fossa, the generated node
//! module and models directory, and the model classes they hold.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::setup;
use crate::fossa::{self, EXAMPLE_MODELS, FOSSA_REQUIREMENT, NODE_MODULE};
use crate::Error;

async fn python_has_fossa(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import fossa, ayeaye"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// A Python that can import Fossa: `python` itself, or a venv made from it.
pub async fn ensure_python(python: &Path, state: &Path) -> Result<PathBuf, Error> {
    if python_has_fossa(python).await {
        return Ok(python.to_owned());
    }
    let venv = state.join("venv");
    let vpy = venv.join("bin/python");
    if python_has_fossa(&vpy).await {
        return Ok(vpy);
    }
    eprintln!(
        "setting up a Python venv with {FOSSA_REQUIREMENT} in {} (once)…",
        venv.display()
    );
    let ok = Command::new(python)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(setup(format!(
            "cannot create a venv with {}: install python3-venv (Debian) or pass --python PATH to a Python 3.9+",
            python.display()
        )));
    }
    // The same locked closure as the worker image, every file's hash checked.
    let lock = state.join(fossa::REQUIREMENTS_LOCK_FILE);
    std::fs::write(&lock, fossa::REQUIREMENTS_LOCK)
        .map_err(|e| Error::io(format!("cannot write {}", lock.display()), e))?;
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(fossa::PIP_LOCKED)
        .arg("-r")
        .arg(&lock)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !pip || !python_has_fossa(&vpy).await {
        return Err(setup(format!(
            "cannot install {FOSSA_REQUIREMENT} into {}: check the network to PyPI",
            venv.display()
        )));
    }
    Ok(vpy)
}

/// Installs the models' own `requirements.txt`, when there is one, into the
/// Python the workers run (as the worker image does).
pub async fn install_requirements(python: &Path, models: &Path) -> Result<(), Error> {
    let file = models.join(fossa::MODEL_REQUIREMENTS);
    if !file.is_file() {
        return Ok(());
    }
    eprintln!("installing {} into {}…", file.display(), python.display());
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&file)
        .output()
        .await
        .map_err(|e| Error::io(format!("cannot run {}", python.display()), e))?;
    if !out.status.success() {
        return Err(setup(format!(
            "cannot install {}: {}",
            file.display(),
            fossa::python_error_summary(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(())
}

/// Writes the node module and, unless the user gave models, the built-in ones.
pub fn prepare_files(state: &Path, models: Option<&Path>) -> Result<(PathBuf, PathBuf), Error> {
    let io = |p: &Path, e| Error::io(format!("cannot write {}", p.display()), e);
    std::fs::create_dir_all(state).map_err(|e| io(state, e))?;
    let module = state.join(NODE_MODULE);
    std::fs::write(&module, fossa::node_module()).map_err(|e| io(&module, e))?;
    let models_dir = match models {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(setup(format!(
                    "--models {}: not a directory of Python model files",
                    dir.display()
                )));
            }
            std::fs::canonicalize(dir).map_err(|e| io(dir, e))?
        }
        None => {
            let dir = state.join("models");
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for (name, text) in EXAMPLE_MODELS {
                std::fs::write(dir.join(name), text).map_err(|e| io(&dir, e))?;
            }
            dir
        }
    };
    Ok((module, models_dir))
}

/// The model classes the node module finds in `models`.
pub async fn list_models(
    python: &Path,
    module: &Path,
    models: &Path,
) -> Result<Vec<String>, Error> {
    let out = Command::new(python)
        .arg(module)
        .arg("--list-models")
        .env("FOSSA_MODELS_DIR", models)
        .output()
        .await
        .map_err(|e| Error::io(format!("cannot run {}", python.display()), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(setup(format!(
            "the models in {} do not import: {}",
            models.display(),
            fossa::python_error_summary(&err)
        )));
    }
    let names: Vec<String> = serde_json::from_slice(&out.stdout)
        .map_err(|e| setup(format!("--list-models printed no JSON list: {e}")))?;
    if names.is_empty() {
        return Err(setup(format!(
            "no Aye-Aye model classes found in {}: define a subclass of ayeaye.Model there",
            models.display()
        )));
    }
    Ok(names)
}
