//! Fault specs for the generator: `KIND@START+LEN`.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 40% of `amount` and `email` are null.
    Nulls,
    /// 5% of `amount` are 1000 times too large.
    Outliers,
    /// 15% of records are exact copies of recent ones.
    Duplicates,
    /// 20% of `amount` arrive as strings.
    WrongTypes,
    /// `country` vanishes and a new field `coupon` appears.
    Schema,
    /// 20% of `country` are a code never seen before.
    Categories,
    /// 20% of records are stamped 15 minutes late.
    Late,
    /// 5% of lines are cut in half (invalid JSON): plainly past the 1%
    /// dead-letter threshold even in a 1,000-record window.
    BadLines,
    /// Event rate drops to a tenth (simulated time only).
    Volume,
    /// `amount`'s distribution moves: every value is 1.8 times larger.
    Drift,
    /// 20% of `email` are not email addresses.
    BadFormats,
    /// `email`'s null rate climbs slowly from its usual 1% to 3% across the
    /// range: too little in any one window to flag, plain over many.
    Creep,
    /// 60% of records carry `user_id` 0 (and its email): a user lookup
    /// that fell back to a default.
    StuckKey,
}

const KINDS: [(&str, FaultKind); 13] = [
    ("nulls", FaultKind::Nulls),
    ("outliers", FaultKind::Outliers),
    ("duplicates", FaultKind::Duplicates),
    ("wrong-types", FaultKind::WrongTypes),
    ("schema", FaultKind::Schema),
    ("categories", FaultKind::Categories),
    ("late", FaultKind::Late),
    ("bad-lines", FaultKind::BadLines),
    ("volume", FaultKind::Volume),
    ("drift", FaultKind::Drift),
    ("bad-formats", FaultKind::BadFormats),
    ("creep", FaultKind::Creep),
    ("stuck-key", FaultKind::StuckKey),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub start: u64,
    pub len: u64,
}

impl Fault {
    pub fn covers(&self, record: u64) -> bool {
        record >= self.start && record - self.start < self.len
    }

    /// How far into the range `record` is, from 0 to 1.
    pub fn progress(&self, record: u64) -> f64 {
        (record - self.start) as f64 / self.len.max(1) as f64
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            let names: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
            format!("bad fault '{s}': expected KIND@START+LEN with KIND one of {}", names.join(", "))
        };
        let (kind, range) = s.split_once('@').ok_or_else(bad)?;
        let (start, len) = range.split_once('+').ok_or_else(bad)?;
        let kind = KINDS.iter().find(|k| k.0 == kind).ok_or_else(bad)?.1;
        Ok(Fault { kind, start: start.parse().map_err(|_| bad())?, len: len.parse().map_err(|_| bad())? })
    }
}
