//! Timestamps as AWS shows them: ISO-8601 UTC with milliseconds (`2023-05-05T21:35:29.339Z`).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Serialized as the ISO-8601 string AWS returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Formats as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn iso8601(self) -> String {
        let (secs, millis) = (self.0 / 1000, self.0 % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
    }

    /// Parses what [`Timestamp::iso8601`] writes (milliseconds optional).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let millis = match &s[19..] {
            "Z" => 0,
            rest if rest.len() == 5 && rest.starts_with('.') && rest.ends_with('Z') => num(20..23)?,
            _ => return None,
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        // Before 1970 there is no timestamp (it is unsigned): refused, not wrapped around.
        let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
        Some(Self((days * 86_400 + h * 3600 + mi * 60 + se) * 1000 + millis))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.iso8601())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {s:?}")))
    }
}

/// Serde for timestamps as JSON 1.1 services (ECS) send them: epoch seconds, with milliseconds
/// as the fraction (`1683322529.339`). Use as `#[serde(with = "crate::time::epoch")]`.
pub mod epoch {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes epoch seconds.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(t.0 as f64 / 1000.0)
    }

    /// Reads epoch seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let secs = f64::deserialize(d)?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(serde::de::Error::custom(format!("bad timestamp {secs}")));
        }
        Ok(Timestamp((secs * 1000.0).round() as u64))
    }
}

/// Like [`epoch`], for optional members (`#[serde(default, skip_serializing_if =
/// "Option::is_none", with = "crate::time::epoch_opt")]`).
pub mod epoch_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes epoch seconds (or null, which `skip_serializing_if` keeps from being written).
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::epoch::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Reads epoch seconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::epoch")] Timestamp);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

// Howard Hinnant's civil calendar algorithms (days since 1970-01-01 <-> y/m/d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_aws() {
        assert_eq!(Timestamp(0).iso8601(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_683_322_529_339).iso8601(), "2023-05-05T21:35:29.339Z");
        assert_eq!(Timestamp(951_782_400_000).iso8601(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_683_322_529_339, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(Timestamp::parse(&Timestamp(ms).iso8601()), Some(Timestamp(ms)));
        }
        assert_eq!(Timestamp::parse("2023-05-05T21:35:29Z"), Some(Timestamp(1_683_322_529_000)));
        assert_eq!(Timestamp::parse("2023-13-05T21:35:29Z"), None);
    }

    /// Issue 10 (found by the `ids` fuzz target): a year before 1970 overflowed the
    /// multiplication (a panic with overflow checks, a wrapped-around timestamp without).
    #[test]
    fn issue_10_years_before_the_epoch_are_refused() {
        assert_eq!(Timestamp::parse("0223-05-05T21:35:29.339Z"), None);
        assert_eq!(Timestamp::parse("1969-12-31T23:59:59Z"), None);
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
    }

    #[test]
    fn epoch_seconds_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct T {
            #[serde(with = "epoch")]
            a: Timestamp,
            #[serde(default, skip_serializing_if = "Option::is_none", with = "epoch_opt")]
            b: Option<Timestamp>,
        }
        let t = T { a: Timestamp(1_683_322_529_339), b: None };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, r#"{"a":1683322529.339}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), t);
        let t = T { a: Timestamp(0), b: Some(Timestamp(1_500)) };
        assert_eq!(serde_json::from_str::<T>(&serde_json::to_string(&t).unwrap()).unwrap(), t);
    }
}
