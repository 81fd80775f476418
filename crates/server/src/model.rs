//! The list of I/O models, their names, and what each one is on this OS.

use std::fmt;
use std::str::FromStr;

/// A socket I/O model from chapter 8 of *Network Programming for Microsoft Windows*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// A thread per client, blocking calls.
    Blocking,
    /// `select()` over non-blocking sockets.
    Select,
    /// `WSAAsyncSelect`: socket events as window messages.
    AsyncSelect,
    /// `WSAEventSelect`: socket events signal event objects.
    EventSelect,
    /// Overlapped I/O completed through event objects.
    OverlappedEvent,
    /// Overlapped I/O completed through completion routines.
    OverlappedRoutine,
    /// I/O completion ports.
    CompletionPort,
}

impl Model {
    /// Every model, from the simplest to the most scalable.
    pub const ALL: [Model; 7] = [
        Model::Blocking,
        Model::Select,
        Model::AsyncSelect,
        Model::EventSelect,
        Model::OverlappedEvent,
        Model::OverlappedRoutine,
        Model::CompletionPort,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Blocking => "blocking",
            Model::Select => "select",
            Model::AsyncSelect => "async-select",
            Model::EventSelect => "event-select",
            Model::OverlappedEvent => "overlapped-event",
            Model::OverlappedRoutine => "overlapped-routine",
            Model::CompletionPort => "completion-port",
        }
    }

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
