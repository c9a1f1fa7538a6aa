//! Lines of an input file (a recording, a file of CloudEvents): read with bounded memory per
//! line, counted, and bad ones reported by number.

use super::recording::MAX_LINE_BYTES;
use std::io::BufRead;

/// Bad lines reported one by one before the rest are only counted.
const REPORTED_BAD_LINES: u64 = 100;

/// What a replay read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub lines: u64,
    pub bad_lines: u64,
    pub events: u64,
}

/// Reads one line into `buf` (without the newline), never holding more than `MAX_LINE_BYTES + 1`
/// bytes of it: a longer line is consumed and reported as too long. `Ok(false)` at end of input.
pub fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let room = MAX_LINE_BYTES + 1 - buf.len();
            buf.extend_from_slice(&chunk[..take.min(room)]);
            too_long = buf.len() > MAX_LINE_BYTES;
        }
        input.consume(if done { take + 1 } else { take });
        if done {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(any)
}

/// Says that line `line` (the `bad`-th bad one) was skipped, and why; past the first hundred
/// only counts them.
pub fn report_bad_line(line: u64, bad: u64, err: &dyn std::fmt::Display) {
    if bad <= REPORTED_BAD_LINES {
        tracing::warn!(line, error = %err, "skipped bad line");
    }
    if bad == REPORTED_BAD_LINES {
        tracing::warn!("further bad lines are counted, not shown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_overlong_ones_bounded() {
        let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
        long.extend_from_slice(b"\nnext\r\nlast");
        let mut input = std::io::BufReader::with_capacity(4096, long.as_slice());
        let mut buf = Vec::new();
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf.len(), MAX_LINE_BYTES + 1);
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf, b"next");
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf, b"last");
        assert!(!read_line(&mut input, &mut buf).expect("read"));
    }
}
