//! The states s3meta stores, as enums.
//!
//! Receives: a state from the code, or its text from the database. Sends on: the text the
//! schema's CHECK constraints allow (`ToSql`), or the enum (`FromSql`, refusing unknown text).
//! Invariant: each converts in one place, so a state the schema does not know cannot be
//! written (the writer may then skip evaluating those CHECKs, see `store::writer`).

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};

/// A text enum of the schema: `as_str`, `parse`, `Display`, `ToSql`/`FromSql`, serde.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// As an SQL string literal (`'done'`), for statements that name a state.
            pub fn sql(self) -> &'static str {
                match self {
                    $($name::$variant => concat!("'", $text, "'")),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("{} {text:?}", stringify!($name)).into())
                })
            }
        }
    };
}

stored_enum! {
    /// How a scan treats listed objects.
    Mode {
        /// HEAD every listed object.
        Full = "full",
        /// HEAD only objects whose listing differs from the stored one (or never HEADed).
        Rescan = "rescan",
    }
}

stored_enum! {
    /// The last thing known of an object (`objects.state`).
    ObjectState {
        /// Listed, never HEADed yet.
        Pending = "pending",
        /// HEAD succeeded: the HEAD fields and metadata rows are what it said.
        Ok = "ok",
        /// HEAD failed for good; see `object_errors`.
        Error = "error",
        /// Deleted: HEAD answered 404, or a later listing no longer had the key.
        Gone = "gone",
    }
}

stored_enum! {
    /// Where a scan stands (`scans.state`).
    ScanState {
        Running = "running",
        /// Stopped before the end; the same command resumes it.
        Interrupted = "interrupted",
        Complete = "complete",
        /// Given up by `--restart` (or `--full` over an unfinished rescan).
        Abandoned = "abandoned",
    }
}

stored_enum! {
    /// Where a key range of a scan stands (`scan_ranges.state`).
    RangeStatus {
        Listing = "listing",
        Done = "done",
    }
}

stored_enum! {
    /// What a scan noticed about an object (`changes.kind`).
    ChangeKind {
        /// A new key (not recorded by the first scan of a prefix).
        Created = "created",
        /// The listing's ETag, size or Last-Modified changed; metadata unchanged.
        Modified = "modified",
        /// The custom metadata changed (and maybe the tags too: both pairs are on the row).
        Metadata = "metadata",
        /// Only the tags changed (`--tags`).
        Tags = "tags",
        /// The key disappeared from the listing, or HEAD answered 404.
        Deleted = "deleted",
    }
}

stored_enum! {
    /// Which objects a scan reads the tags of (`--tags`, `scans.tags`).
    TagsMode {
        /// Every object: those a rescan HEADs (when HEAD counts tags or sends no count) and
        /// every unchanged one (GetObjectTagging alone), so tag-only changes are found.
        All = "all",
        /// Only the objects HEADed (new or changed listings): tag-only changes on unchanged
        /// objects are missed until a `--tags=all` scan.
        SkipUnchanged = "skip-unchanged",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state is one the schema's CHECK constraints allow.
    #[test]
    fn states_are_the_schemas() {
        let schema = [
            include_str!("../../schema/0001_init.sql"),
            include_str!("../../schema/0003_whole_object.sql"),
        ]
        .concat();
        let allows = |column: &str, text: &str| {
            schema.lines().any(|l| {
                l.contains(&format!("{column} "))
                    && l.contains("CHECK")
                    && l.contains(&format!("'{text}'"))
            })
        };
        for s in ObjectState::ALL {
            assert!(allows("state", s.as_str()), "{s}");
        }
        for s in ScanState::ALL {
            assert!(allows("state", s.as_str()), "{s}");
        }
        for s in RangeStatus::ALL {
            assert!(allows("state", s.as_str()), "{s}");
        }
        for s in Mode::ALL {
            assert!(allows("mode", s.as_str()), "{s}");
        }
        for s in ChangeKind::ALL {
            assert!(allows("kind", s.as_str()), "{s}");
        }
        for s in TagsMode::ALL {
            assert!(allows("tags", s.as_str()), "{s}");
        }
        assert_eq!(Mode::parse("rescan"), Some(Mode::Rescan));
        assert_eq!(ObjectState::parse("Gone"), None);
    }
}
