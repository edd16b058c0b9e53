//! The list behind `query-netfilter-stats`: one entry per filter, built from
//! the filters the C side walks.

use std::{ffi::CString, fmt};

use crate::counters::{Count, FilterCounters, QnsCounterId, QnsDirection};

/// One filter's statistics, as the QMP reply carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterStats {
    /// The filter's QOM id.
    pub name: CString,
    /// The id of the netdev it is attached to.
    pub netdev: CString,
    /// Its QOM type name (`filter-redirector`, ...).
    pub qom_type: CString,
    /// Packets and bytes the netdev sent through it.
    pub tx: Count,
    /// Packets and bytes the netdev received through it.
    pub rx: Count,
    /// Filter-specific counters, in [`QnsCounterId`] order.
    pub counters: Vec<(QnsCounterId, Count)>,
}

/// The query named a filter that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterNotFound(pub String);

impl fmt::Display for FilterNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netfilter '{}' not found", self.0)
    }
}

impl std::error::Error for FilterNotFound {}

/// Collects the filters the C side walks, keeping every one, or only the one
/// named in the query.
#[derive(Debug, Default)]
pub struct StatsListBuilder {
    only: Option<CString>,
    entries: Vec<FilterStats>,
}

impl StatsListBuilder {
    /// A builder for all filters (`only` is `None`) or for the one named.
    pub fn new(only: Option<CString>) -> Self {
        Self {
            only,
            entries: Vec::new(),
        }
    }

    /// Whether a filter named `name` belongs in the list; lets the caller skip
    /// work for filters that do not.
    pub fn wants(&self, name: &std::ffi::CStr) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    /// Add one filter, snapshotting its counters now.
    pub fn add(
        &mut self,
        name: &std::ffi::CStr,
        netdev: &std::ffi::CStr,
        qom_type: &std::ffi::CStr,
        counters: &FilterCounters,
    ) {
        if !self.wants(name) {
            return;
        }
        self.entries.push(FilterStats {
            name: name.to_owned(),
            netdev: netdev.to_owned(),
            qom_type: qom_type.to_owned(),
            tx: counters.direction(QnsDirection::Tx),
            rx: counters.direction(QnsDirection::Rx),
            counters: counters.reported().collect(),
        });
    }

    /// The list, in the order the filters were added; an error when a filter
    /// was named and not found.
    pub fn finish(self) -> Result<Vec<FilterStats>, FilterNotFound> {
        match self.only {
            Some(only) if self.entries.is_empty() => {
                Err(FilterNotFound(only.to_string_lossy().into_owned()))
            }
            _ => Ok(self.entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn two_filters(builder: &mut StatsListBuilder) {
        let r = FilterCounters::for_type("filter-redirector");
        r.count_packet(QnsDirection::Tx, 100);
        r.add(QnsCounterId::Indev, 1, 60);
        let b = FilterCounters::for_type("filter-buffer");
        b.count_packet(QnsDirection::Rx, 7);
        builder.add(&c("r0"), &c("n0"), &c("filter-redirector"), &r);
        builder.add(&c("b0"), &c("n0"), &c("filter-buffer"), &b);
    }

    #[test]
    fn lists_every_filter_in_walk_order() {
        let mut b = StatsListBuilder::new(None);
        two_filters(&mut b);
        let list = b.finish().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, c("r0"));
        assert_eq!(
            list[0].tx,
            Count {
                packets: 1,
                bytes: 100
            }
        );
        assert_eq!(
            list[0].counters[0],
            (
                QnsCounterId::Indev,
                Count {
                    packets: 1,
                    bytes: 60
                }
            )
        );
        assert_eq!(list[0].counters.len(), 4);
        assert_eq!(list[1].name, c("b0"));
        assert_eq!(
            list[1].rx,
            Count {
                packets: 1,
                bytes: 7
            }
        );
        assert!(list[1].counters.is_empty());
    }

    #[test]
    fn named_query_keeps_exactly_that_filter() {
        let mut b = StatsListBuilder::new(Some(c("b0")));
        two_filters(&mut b);
        let list = b.finish().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, c("b0"));
    }

    #[test]
    fn unknown_name_is_an_error_naming_it() {
        let mut b = StatsListBuilder::new(Some(c("nope")));
        two_filters(&mut b);
        let err = b.finish().unwrap_err();
        assert_eq!(err.to_string(), "netfilter 'nope' not found");
    }

    #[test]
    fn no_filters_is_an_empty_list() {
        assert_eq!(StatsListBuilder::new(None).finish().unwrap(), vec![]);
    }
}
