//! The table of I/O models ([`for_each_model!`](crate::for_each_model)), and what it makes:
//! [`Model`], its list ([`Model::ALL`]), its names, and (in `models/mod.rs`) the dispatch to
//! each model's mechanism, availability, preparation and `run`. The CLI, `iomodels models`,
//! bench and the test suites read the models through them.

use std::fmt;
use std::str::FromStr;

/// The table of models: calls `callback! { ARGS models: [ROWS] }` with one row per model,
/// from the simplest to the most scalable, each `/// doc` then `Variant, "cli-name", module;`:
/// the [`Model`] variant, its name on the command line, and its module under `models/` (which
/// provides `MECHANISM`, `availability()` and `run`). Everything that lists the models is
/// made from it: [`Model`], [`Model::ALL`], [`Model::name`], the dispatch in `models/mod.rs`,
/// and the test suites' per-model modules (`model_suite!`, `per_model!`), so a new model is
/// one row here and its module.
///
/// ```
/// macro_rules! names {
///     (models: [$($(#[$doc:meta])* $variant:ident, $name:literal, $module:ident;)*]) => {
///         [$($name),*]
///     };
/// }
/// let names = iomodels_server::for_each_model!(names! {});
/// assert_eq!(names[0], "blocking");
/// assert_eq!(names.len(), iomodels_server::Model::ALL.len());
/// ```
#[macro_export]
macro_rules! for_each_model {
    ($($callback:ident)::+ ! { $($args:tt)* }) => {
        $($callback)::+! {
            $($args)*
            models: [
                /// A thread per client, blocking calls.
                Blocking, "blocking", blocking;
                /// `select()` over non-blocking sockets.
                Select, "select", select;
                /// `WSAAsyncSelect`: socket events as window messages.
                AsyncSelect, "async-select", async_select;
                /// `WSAEventSelect`: socket events signal event objects.
                EventSelect, "event-select", event_select;
                /// Overlapped I/O completed through event objects.
                OverlappedEvent, "overlapped-event", overlapped_event;
                /// Overlapped I/O completed through completion routines.
                OverlappedRoutine, "overlapped-routine", overlapped_routine;
                /// I/O completion ports.
                CompletionPort, "completion-port", completion_port;
            ]
        }
    };
}

/// [`Model`], [`Model::ALL`] and [`Model::name`] from the table's rows.
macro_rules! model_enum {
    (models: [$($(#[$doc:meta])* $variant:ident, $name:literal, $module:ident;)*]) => {
        /// A socket I/O model from chapter 8 of *Network Programming for Microsoft Windows*.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Model {
            $($(#[$doc])* $variant,)*
        }

        impl Model {
            /// Every model, from the simplest to the most scalable.
            pub const ALL: [Model; [$($name),*].len()] = [$(Model::$variant),*];

            /// The name on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $(Model::$variant => $name,)*
                }
            }
        }
    };
}

crate::for_each_model!(model_enum! {});

impl Model {
    /// The mechanism that implements this model on this OS, e.g. `epoll`.
    pub fn mechanism(self) -> &'static str {
        crate::models::mechanism(self)
    }

    /// `Ok(())` if this build can run the model here, or why not.
    pub fn availability(self) -> Result<(), String> {
        crate::models::availability(self)
    }

    /// True if [`Model::availability`] is `Ok`.
    pub fn is_available(self) -> bool {
        self.availability().is_ok()
    }

    /// The models this build can run here.
    pub fn available() -> Vec<Model> {
        Model::ALL
            .into_iter()
            .filter(|m| m.is_available())
            .collect()
    }

    /// The most scalable available model: the default of `iomodels serve`.
    pub fn best() -> Model {
        Model::ALL
            .into_iter()
            .rev()
            .find(|m| m.is_available())
            .unwrap_or(Model::Blocking)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Model::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown model '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Model::ALL {
            assert_eq!(m.name().parse::<Model>(), Ok(m));
        }
        assert!("iocp"
            .parse::<Model>()
            .unwrap_err()
            .contains("completion-port"));
    }

    #[test]
    fn the_default_is_available() {
        assert!(Model::best().is_available());
    }
}
