//! CSV bodies read in Rust for the default handlers: a batch transform sends megabytes of
//! numeric rows per request, and reading them in Python (even numpy's C `loadtxt`) costs an
//! order of magnitude more than the model's forward pass. The worker gets the values as
//! little-endian `f64` with the shape numpy's reader would give, and runs the same default
//! path on them. Anything this reader does not take as plain numbers (quotes, `nan`, ragged
//! rows, text) goes to the worker as it came, so its errors stay the worker's.

/// The values of a CSV body of numbers and their shape (`[rows, cols]`; one row is `[cols]`,
/// one column `[rows]`, one value `[]`, as `np.loadtxt` shapes them); `None` when the body
/// is anything else.
pub fn numbers(body: &[u8]) -> Option<(Vec<usize>, Vec<u8>)> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len() * 4);
    let (mut rows, mut cols) = (0usize, None::<usize>);
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let mut n = 0;
        for field in line.split(|b| *b == b',') {
            out.extend_from_slice(&number(field)?.to_le_bytes());
            n += 1;
        }
        if *cols.get_or_insert(n) != n {
            return None;
        }
        rows += 1;
    }
    let cols = cols?;
    let shape = match (rows, cols) {
        (1, 1) => vec![],
        (1, c) => vec![c],
        (r, 1) => vec![r],
        (r, c) => vec![r, c],
    };
    Some((shape, out))
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// One field as a finite number. Plain decimals with up to 15 significant digits take the
/// fast path (an exact integer divided by an exact power of ten is correctly rounded); the
/// rest goes through the standard library's parser.
fn number(field: &[u8]) -> Option<f64> {
    let f = field.trim_ascii();
    let (neg, digits) = match f.first()? {
        b'-' => (true, &f[1..]),
        b'+' => (false, &f[1..]),
        _ => (false, f),
    };
    let (mut mantissa, mut scale, mut seen, mut dot) = (0u64, 0usize, 0usize, false);
    let mut plain = !digits.is_empty();
    for &b in digits {
        match b {
            b'0'..=b'9' if seen < 15 => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                seen += usize::from(mantissa > 0);
                scale += usize::from(dot);
            }
            b'.' if !dot => dot = true,
            _ => {
                plain = false;
                break;
            }
        }
    }
    let value = if plain && scale < POW10.len() && (digits.len() > usize::from(dot)) {
        let v = mantissa as f64 / POW10[scale];
        if neg { -v } else { v }
    } else {
        std::str::from_utf8(f).ok()?.parse::<f64>().ok()?
    };
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(body: &str) -> Option<(Vec<usize>, Vec<f64>)> {
        numbers(body.as_bytes()).map(|(shape, bytes)| {
            let v = bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (shape, v)
        })
    }

    #[test]
    fn shapes_are_numpys() {
        assert_eq!(
            values("1,2\n3,4\n"),
            Some((vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]))
        );
        assert_eq!(values("1,2,3"), Some((vec![3], vec![1.0, 2.0, 3.0])));
        assert_eq!(values("5\n"), Some((vec![], vec![5.0])));
        assert_eq!(values("5\r\n\n6\n"), Some((vec![2], vec![5.0, 6.0])));
    }

    #[test]
    fn numbers_match_the_standard_parser() {
        for s in [
            "0",
            "-0.5",
            "+3.25",
            " 7 ",
            "0.1",
            "123456.789012",
            "1e3",
            "-2.5E-4",
            ".5",
            "5.",
            "0.000001",
            "99999999999999999999",
            "3.14159265358979323846",
            "255",
        ] {
            let want: f64 = s.trim().parse().unwrap();
            let got = number(s.as_bytes()).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{s}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_worker() {
        for body in [
            "", "\n", "a,1", "1,,2", "1,2\n3", "nan,1", "inf", "\"1\",2", "1;2", "-", ".",
        ] {
            assert_eq!(numbers(body.as_bytes()), None, "{body:?}");
        }
    }
}
