//! Read planning: cover a device's points with as few Modbus requests as the protocol
//! allows.
//!
//! Every request on an RS-485 bus costs a turnaround and the inter-frame gap, and the bus
//! carries one request at a time, so fewer requests means more devices per bus. Points
//! of one table whose registers touch or overlap (or lie within `max_gap` registers,
//! when the profile says reading the gap is harmless) share a request, up to 125
//! registers or 2000 bits per request.

use super::value::Table;

/// One Modbus read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Which table.
    pub table: Table,
    /// First register or bit.
    pub start: u16,
    /// How many.
    pub count: u16,
}

/// Where one point's registers are found in the responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index of the read in [`Plan::reads`].
    pub read: usize,
    /// Offset of the point's first register in that read's response.
    pub offset: u16,
}

/// The requests for a device, and where each point lands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Requests, in table then address order.
    pub reads: Vec<Read>,
    /// One per input span, in input order.
    pub locations: Vec<Location>,
}

/// Plans reads for spans `(table, address, width)`.
pub fn plan(spans: &[(Table, u16, u16)], max_gap: u16) -> Plan {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].0, spans[i].1));
    let mut reads: Vec<Read> = Vec::new();
    let mut locations = vec![Location { read: 0, offset: 0 }; spans.len()];
    for i in order {
        let (table, address, width) = spans[i];
        let end = u32::from(address) + u32::from(width);
        let joins = reads.last().is_some_and(|r| {
            let r_end = u32::from(r.start) + u32::from(r.count);
            r.table == table
                && u32::from(address) <= r_end + u32::from(max_gap)
                && end.max(r_end) - u32::from(r.start) <= u32::from(table.max_read())
        });
        if joins {
            let last = reads.len() - 1;
            if let Some(r) = reads.last_mut() {
                let r_end = (u32::from(r.start) + u32::from(r.count)).max(end);
                r.count = u16::try_from(r_end - u32::from(r.start)).unwrap_or(u16::MAX);
                locations[i] = Location { read: last, offset: address - r.start };
            }
        } else {
            reads.push(Read { table, start: address, count: width });
            locations[i] = Location { read: reads.len() - 1, offset: 0 };
        }
    }
    Plan { reads, locations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_registers_share_one_request() {
        let p = plan(&[(Table::Input, 0, 2), (Table::Input, 2, 1), (Table::Input, 3, 2)], 0);
        assert_eq!(p.reads, vec![Read { table: Table::Input, start: 0, count: 5 }]);
        assert_eq!(p.locations[2], Location { read: 0, offset: 3 });
    }

    #[test]
    fn gaps_split_requests_unless_the_profile_allows_reading_them() {
        let spans = [(Table::Holding, 0, 1), (Table::Holding, 5, 1)];
        assert_eq!(plan(&spans, 0).reads.len(), 2);
        let p = plan(&spans, 4);
        assert_eq!(p.reads, vec![Read { table: Table::Holding, start: 0, count: 6 }]);
    }

    #[test]
    fn tables_never_mix_and_input_order_is_kept_in_locations() {
        let p = plan(&[(Table::Holding, 0, 1), (Table::Input, 0, 1), (Table::Coil, 0, 1)], 0);
        assert_eq!(p.reads.len(), 3);
        assert_eq!(p.reads[p.locations[0].read].table, Table::Holding);
        assert_eq!(p.reads[p.locations[1].read].table, Table::Input);
    }

    #[test]
    fn no_request_exceeds_125_registers() {
        let spans: Vec<_> = (0..100).map(|i| (Table::Input, i * 2, 2)).collect();
        let p = plan(&spans, 0);
        assert_eq!(p.reads.iter().map(|r| r.count).collect::<Vec<_>>(), vec![124, 76]);
        for (s, l) in spans.iter().zip(&p.locations) {
            let r = p.reads[l.read];
            assert_eq!(r.start + l.offset, s.1);
            assert!(l.offset + s.2 <= r.count);
        }
    }

    #[test]
    fn overlapping_points_reuse_registers() {
        let p = plan(&[(Table::Input, 0, 2), (Table::Input, 1, 1)], 0);
        assert_eq!(p.reads, vec![Read { table: Table::Input, start: 0, count: 2 }]);
        assert_eq!(p.locations[1].offset, 1);
    }
}
