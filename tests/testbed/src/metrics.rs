//! Reading the operator's metrics as Prometheus would: `GET /metrics` over plain HTTP on a
//! loopback port, and the samples of the text format.

use std::io::{Read, Write};

/// `GET /metrics` over plain HTTP from `127.0.0.1:port`: the whole response, if it was a 200.
pub fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

/// The sample of the series whose line starts with `series` followed by a space (the series
/// with its labels, as exposed: `tunnel_leader`, `tunnel_bindings{…}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The sum of every sample of `family` (all label sets).
pub fn total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_totals_of_the_text_format() {
        let text = "# TYPE a gauge\na 1\na_total{k=\"x\"} 2\na_total{k=\"y\"} 3\nab 7\n";
        assert_eq!(sample(text, "a"), Some(1.0));
        assert_eq!(sample(text, "a_total{k=\"y\"}"), Some(3.0));
        assert_eq!(sample(text, "b"), None);
        assert!((total(text, "a_total") - 5.0).abs() < f64::EPSILON);
    }
}
