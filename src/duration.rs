//! The one parser of the durations the CRDs spell Go-style (`500ms`, `5s`, `1h30m`, `1.5s`),
//! as the admission pattern `^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$` allows them, and their
//! two outputs: the protobuf JSON form Envoy reads (`0.500s`, `5s`, `5400s`) and a
//! [`std::time::Duration`] for timeouts (the SSH connect timeout). Parsing keeps nanosecond
//! precision, so a sub-second health-check interval reaches Envoy as written.

/// The longest duration protobuf (and so Envoy) accepts, in seconds.
const MAX_SECONDS: u128 = 315_576_000_000;

/// A non-negative duration parsed from its Go spelling, with nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    nanos: u128,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty, a missing unit, an unknown unit or a stray character.
    #[error("{input:?} is not a duration such as 500ms, 5s, 1m or 1h30m")]
    Syntax {
        /// What was given.
        input: String,
    },
    /// Zero, where a positive duration is needed.
    #[error("{input:?} must be longer than zero")]
    Zero {
        /// What was given.
        input: String,
    },
    /// Longer than Envoy can represent (about 10,000 years).
    #[error("{input:?} is longer than the largest duration Envoy accepts")]
    TooLong {
        /// What was given.
        input: String,
    },
}

impl DurationError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "DurationSyntax",
            Self::Zero { .. } => "DurationZero",
            Self::TooLong { .. } => "DurationTooLong",
        }
    }
}

impl GoDuration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            nanos: secs as u128 * 1_000_000_000,
        }
    }

    /// Parses a Go-style duration: one or more `<number>[.<fraction>]<unit>` parts with units
    /// `ns`, `us`, `ms`, `s`, `m`, `h`. Zero is allowed here; see [`GoDuration::parse_positive`].
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let syntax = || DurationError::Syntax {
            input: input.to_owned(),
        };
        let too_long = || DurationError::TooLong {
            input: input.to_owned(),
        };
        let bytes = input.as_bytes();
        if bytes.is_empty() || input.len() > 64 {
            return Err(syntax());
        }
        let mut i = 0;
        let mut total: u128 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(syntax());
            }
            let whole = &input[start..i];
            let mut fraction = "";
            if i < bytes.len() && bytes[i] == b'.' {
                i += 1;
                let fstart = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if i == fstart {
                    return Err(syntax());
                }
                fraction = &input[fstart..i];
            }
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit: u128 = match &input[ustart..i] {
                "ns" => 1,
                "us" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(syntax()),
            };
            let whole: u128 = whole.parse().map_err(|_| too_long())?;
            let mut part = whole.checked_mul(unit).ok_or_else(too_long)?;
            // The fraction, scaled by the unit, truncated below one nanosecond.
            let mut scale = unit;
            for digit in fraction.bytes() {
                if scale < 10 {
                    break;
                }
                scale /= 10;
                part = part
                    .checked_add(u128::from(digit - b'0') * scale)
                    .ok_or_else(too_long)?;
            }
            total = total.checked_add(part).ok_or_else(too_long)?;
            if total / 1_000_000_000 > MAX_SECONDS {
                return Err(too_long());
            }
        }
        Ok(Self { nanos: total })
    }

    /// Parses a duration that must be longer than zero.
    pub fn parse_positive(input: &str) -> Result<Self, DurationError> {
        let d = Self::parse(input)?;
        if d.nanos == 0 {
            return Err(DurationError::Zero {
                input: input.to_owned(),
            });
        }
        Ok(d)
    }

    /// Whole nanoseconds.
    pub const fn as_nanos(self) -> u128 {
        self.nanos
    }

    /// As a [`std::time::Duration`] (exact: the parser caps values far below its range).
    pub fn to_std(self) -> std::time::Duration {
        let secs = u64::try_from(self.nanos / 1_000_000_000).unwrap_or(u64::MAX);
        // Below 10^9, so it fits.
        let nanos = u32::try_from(self.nanos % 1_000_000_000).unwrap_or(0);
        std::time::Duration::new(secs, nanos)
    }

    /// The protobuf JSON form Envoy reads: seconds with 0, 3, 6 or 9 fractional digits
    /// (`5s`, `0.500s`, `1.000250s`).
    pub fn to_envoy(self) -> String {
        let secs = self.nanos / 1_000_000_000;
        let frac = self.nanos % 1_000_000_000;
        if frac == 0 {
            format!("{secs}s")
        } else if frac.is_multiple_of(1_000_000) {
            format!("{secs}.{:03}s", frac / 1_000_000)
        } else if frac.is_multiple_of(1_000) {
            format!("{secs}.{:06}s", frac / 1_000)
        } else {
            format!("{secs}.{frac:09}s")
        }
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_envoy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let input = String::new;
        let all = [
            DurationError::Syntax { input: input() },
            DurationError::Zero { input: input() },
            DurationError::TooLong { input: input() },
        ];
        let categories: Vec<&str> = all.iter().map(DurationError::category).collect();
        assert_eq!(
            categories,
            ["DurationSyntax", "DurationZero", "DurationTooLong"]
        );
    }

    #[test]
    fn converts_to_std_exactly() {
        let cases = [
            ("30s", std::time::Duration::from_secs(30)),
            ("1m30s", std::time::Duration::from_secs(90)),
            ("500ms", std::time::Duration::from_millis(500)),
            ("1.5s", std::time::Duration::from_millis(1500)),
            ("2h", std::time::Duration::from_secs(7200)),
            ("7ns", std::time::Duration::from_nanos(7)),
        ];
        for (input, want) in cases {
            assert_eq!(GoDuration::parse(input).unwrap().to_std(), want, "{input}");
        }
    }

    #[test]
    fn parses_go_durations_and_keeps_sub_second_precision() {
        let cases = [
            ("5s", "5s"),
            ("500ms", "0.500s"),
            ("1h", "3600s"),
            ("1h30m", "5400s"),
            ("1.5s", "1.500s"),
            ("250us", "0.000250s"),
            ("7ns", "0.000000007s"),
            ("2m0.25s", "120.250s"),
            ("0.1h", "360s"),
        ];
        for (input, want) in cases {
            assert_eq!(
                GoDuration::parse(input).unwrap().to_envoy(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "", "5", "s", "5 s", "-5s", "5sec", "1.s", ".5s", "5s5", "1d",
        ] {
            assert!(
                matches!(GoDuration::parse(bad), Err(DurationError::Syntax { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            GoDuration::parse_positive("0s"),
            Err(DurationError::Zero { .. })
        ));
        assert!(matches!(
            GoDuration::parse("99999999999999h"),
            Err(DurationError::TooLong { .. })
        ));
    }

    /// Review 2026-12, I1: a whole part just below the overflow plus its fraction used to
    /// overflow (a panic in debug builds, a wrapped tiny duration in release).
    #[test]
    fn a_fraction_pushing_past_the_largest_number_is_too_long_not_a_panic() {
        assert!(matches!(
            GoDuration::parse("94522879700260684295381835.9999h"),
            Err(DurationError::TooLong { .. })
        ));
    }
}
