//! Where the models directory is: one rule for every command (`setup`,
//! `analyze`, `local`, `bench pose`) and the estimator's default.
//!
//! Precedence, first match wins:
//! 1. `--models-dir` / `POSTURE_MODELS_DIR` (handled by the caller's flag;
//!    [`resolve`] also reads the variable for library users);
//! 2. `./models` when it is a directory holding any of the model files
//!    (a checkout where `scripts/setup-models.sh` ran, as CI does);
//! 3. the per-user data directory: `$XDG_DATA_HOME/posture-farm/models`,
//!    else `$HOME/.local/share/posture-farm/models` (XDG Base Directory
//!    specification; relative values are ignored, as it says);
//! 4. `./models` when neither variable gives an absolute path.
//!
//! The decision is a pure function of an [`Env`] snapshot, so it is tested
//! without touching the process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::estimator::{DETECTOR_FILE, LANDMARK_FILE, RUNTIME_FILE};

/// Environment variable naming the models directory.
pub const MODELS_DIR_ENV: &str = "POSTURE_MODELS_DIR";
/// The models directory in the current directory (the setup script's default).
pub const LOCAL_MODELS_DIR: &str = "models";
/// Sub-path of the user's data directory where `posture-farm setup` installs.
pub const USER_SUBDIR: &str = "posture-farm/models";

/// Why a models directory was chosen (for logs and `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `POSTURE_MODELS_DIR` (or `--models-dir`).
    Env,
    /// An existing `./models` with model files in it.
    CurrentDir,
    /// `$XDG_DATA_HOME/posture-farm/models`.
    XdgDataHome,
    /// `$HOME/.local/share/posture-farm/models`.
    Home,
    /// No usable home: `./models`.
    Fallback,
}

/// A resolved models directory and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelsDir {
    /// The directory.
    pub path: PathBuf,
    /// Which rule picked it.
    pub source: Source,
}

/// The inputs of the rule: the variables it reads and what `./models` holds.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `POSTURE_MODELS_DIR`.
    pub models_dir: Option<OsString>,
    /// `XDG_DATA_HOME`.
    pub xdg_data_home: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
    /// `XDG_CACHE_HOME` (only for [`setup_cache_dir`]).
    pub xdg_cache_home: Option<OsString>,
    /// Whether `./models` is a directory holding any model file.
    pub local_models: bool,
}

impl Env {
    /// A snapshot of this process's environment and current directory.
    pub fn current() -> Self {
        Self {
            models_dir: std::env::var_os(MODELS_DIR_ENV),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
            home: std::env::var_os("HOME"),
            xdg_cache_home: std::env::var_os("XDG_CACHE_HOME"),
            local_models: has_model_files(Path::new(LOCAL_MODELS_DIR)),
        }
    }
}

/// Whether `dir` is a directory holding any of the files the estimator
/// loads (a complete or partly-made models directory, not just any folder
/// called `models`).
pub fn has_model_files(dir: &Path) -> bool {
    [DETECTOR_FILE, LANDMARK_FILE, RUNTIME_FILE]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Non-empty value of a variable, as a path.
fn non_empty(v: &Option<OsString>) -> Option<PathBuf> {
    v.as_ref().filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Applies the precedence rule (see the module docs) to `env`.
pub fn resolve(env: &Env) -> ModelsDir {
    if let Some(path) = non_empty(&env.models_dir) {
        return ModelsDir {
            path,
            source: Source::Env,
        };
    }
    if env.local_models {
        return ModelsDir {
            path: PathBuf::from(LOCAL_MODELS_DIR),
            source: Source::CurrentDir,
        };
    }
    user_dir(env).unwrap_or(ModelsDir {
        path: PathBuf::from(LOCAL_MODELS_DIR),
        source: Source::Fallback,
    })
}

/// The per-user directory alone (rule 3): what `setup` installs into when
/// nothing else is named and no `./models` exists.
pub fn user_dir(env: &Env) -> Option<ModelsDir> {
    if let Some(d) = non_empty(&env.xdg_data_home).filter(|d| d.is_absolute()) {
        return Some(ModelsDir {
            path: d.join(USER_SUBDIR),
            source: Source::XdgDataHome,
        });
    }
    non_empty(&env.home)
        .filter(|h| h.is_absolute())
        .map(|h| ModelsDir {
            path: h.join(".local/share").join(USER_SUBDIR),
            source: Source::Home,
        })
}

/// The models directory for this process when no flag names one, ignoring
/// `POSTURE_MODELS_DIR` (clap reads it for the flag): `./models` if it holds
/// model files, else the per-user data directory.
pub fn default_dir() -> PathBuf {
    resolve(&Env {
        models_dir: None,
        ..Env::current()
    })
    .path
}

/// [`resolve`] on this process's environment, `POSTURE_MODELS_DIR` included.
pub fn resolve_current() -> ModelsDir {
    resolve(&Env::current())
}

/// Where `posture-farm setup` keeps downloaded wheels and the converter's
/// venv: `$XDG_CACHE_HOME/posture-farm/pose-setup`, else
/// `$HOME/.cache/posture-farm/pose-setup`, else `./.cache/pose-setup`.
pub fn setup_cache_dir(env: &Env) -> PathBuf {
    cache_home(env)
        .map(|c| c.join("posture-farm/pose-setup"))
        .unwrap_or_else(|| PathBuf::from(".cache/pose-setup"))
}

/// Where the TensorRT provider caches its engines:
/// `$XDG_CACHE_HOME/posture-farm/tensorrt`, else
/// `$HOME/.cache/posture-farm/tensorrt`, else `<temp>/posture-farm-tensorrt`.
pub fn tensorrt_cache_dir(env: &Env) -> PathBuf {
    cache_home(env)
        .map(|c| c.join("posture-farm/tensorrt"))
        .unwrap_or_else(|| std::env::temp_dir().join("posture-farm-tensorrt"))
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`, when absolute.
fn cache_home(env: &Env) -> Option<PathBuf> {
    non_empty(&env.xdg_cache_home)
        .filter(|d| d.is_absolute())
        .or_else(|| {
            non_empty(&env.home)
                .filter(|h| h.is_absolute())
                .map(|h| h.join(".cache"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(models: Option<&str>, xdg: Option<&str>, home: Option<&str>, local: bool) -> Env {
        Env {
            models_dir: models.map(OsString::from),
            xdg_data_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
            xdg_cache_home: None,
            local_models: local,
        }
    }

    #[test]
    fn variable_wins_over_everything() {
        let d = resolve(&env(Some("/m"), Some("/x"), Some("/h"), true));
        assert_eq!((d.path, d.source), (PathBuf::from("/m"), Source::Env));
    }

    #[test]
    fn existing_local_models_win_over_the_user_directory() {
        let d = resolve(&env(None, Some("/x"), Some("/h"), true));
        assert_eq!(
            (d.path, d.source),
            (PathBuf::from("models"), Source::CurrentDir)
        );
    }

    #[test]
    fn xdg_data_home_then_home() {
        let d = resolve(&env(None, Some("/x"), Some("/h"), false));
        assert_eq!(
            (d.path, d.source),
            (PathBuf::from("/x/posture-farm/models"), Source::XdgDataHome)
        );
        let d = resolve(&env(None, None, Some("/home/u"), false));
        assert_eq!(
            (d.path, d.source),
            (
                PathBuf::from("/home/u/.local/share/posture-farm/models"),
                Source::Home
            )
        );
    }

    #[test]
    fn empty_or_relative_values_are_ignored() {
        // Empty variables count as unset; the XDG spec says relative paths are invalid.
        let d = resolve(&env(Some(""), Some("rel/data"), Some("/h"), false));
        assert_eq!(d.path, PathBuf::from("/h/.local/share/posture-farm/models"));
        assert_eq!(d.source, Source::Home);
        let d = resolve(&env(None, Some(""), Some(""), false));
        assert_eq!(
            (d.path, d.source),
            (PathBuf::from("models"), Source::Fallback)
        );
    }

    #[test]
    fn a_folder_only_counts_when_it_holds_model_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!has_model_files(tmp.path()), "an empty folder");
        std::fs::create_dir(tmp.path().join("samples")).unwrap();
        assert!(!has_model_files(tmp.path()), "unrelated contents");
        std::fs::write(tmp.path().join(RUNTIME_FILE), b"x").unwrap();
        assert!(has_model_files(tmp.path()), "a partly-made models dir");
        assert!(!has_model_files(&tmp.path().join("nope")));
    }

    #[test]
    fn setup_cache_follows_xdg() {
        let mut e = env(None, None, Some("/h"), false);
        assert_eq!(
            setup_cache_dir(&e),
            PathBuf::from("/h/.cache/posture-farm/pose-setup")
        );
        e.xdg_cache_home = Some("/c".into());
        assert_eq!(
            setup_cache_dir(&e),
            PathBuf::from("/c/posture-farm/pose-setup")
        );
        assert_eq!(
            setup_cache_dir(&Env::default()),
            PathBuf::from(".cache/pose-setup")
        );
        assert_eq!(
            tensorrt_cache_dir(&e),
            PathBuf::from("/c/posture-farm/tensorrt")
        );
        assert!(tensorrt_cache_dir(&Env::default()).is_absolute());
    }

    proptest! {
        #[test]
        fn always_some_directory_ending_in_models(
            m in proptest::option::of("[a-z/]{0,8}"), x in proptest::option::of("[a-z/]{0,8}"),
            h in proptest::option::of("[a-z/]{0,8}"), local in any::<bool>(),
        ) {
            let e = env(m.as_deref(), x.as_deref(), h.as_deref(), local);
            let d = resolve(&e);
            if d.source != Source::Env {
                prop_assert!(d.path.ends_with("models"), "{d:?}");
            }
            // The variable, when set, is returned verbatim.
            if let Some(m) = m.filter(|m| !m.is_empty()) {
                prop_assert_eq!(d.path, PathBuf::from(m));
            }
        }
    }
}
