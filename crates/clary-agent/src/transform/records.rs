//! Batch transform input: an object split into records (`SplitType`), and records packed into
//! the request bodies the model sees (`BatchStrategy`, `MaxPayloadInMB`). Each record keeps
//! where it came from (a line number, or a byte offset) so a failure can name it.

use crate::pipe::RECORDIO_MAGIC;
use std::fmt;
use std::io::{self, BufRead, Read};

/// `TransformInput.SplitType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The whole object is one record.
    None,
    /// Each line is a record.
    Line,
    /// Each MXNet RecordIO record is one (sent with its RecordIO framing, as SageMaker does).
    RecordIo,
}

impl Split {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Split::None),
            "Line" => Some(Split::Line),
            "RecordIO" => Some(Split::RecordIo),
            _ => None,
        }
    }
}

/// Where a record starts in its (decompressed) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line number.
    Line(u64),
    /// Byte offset.
    Offset(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Offset(n) => write!(f, "byte offset {n}"),
        }
    }
}

/// One record of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub data: Vec<u8>,
    pub at: Position,
}

/// Reads an object's records in order.
pub struct Records<R: Read> {
    input: io::BufReader<R>,
    split: Split,
    /// Lines read so far (Line), or bytes consumed (RecordIO).
    line: u64,
    offset: u64,
    done: bool,
}

impl<R: Read> Records<R> {
    pub fn new(input: R, split: Split) -> Self {
        Records {
            input: io::BufReader::with_capacity(1 << 20, input),
            split,
            line: 0,
            offset: 0,
            done: false,
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Record>> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if self.input.read_until(b'\n', &mut buf)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            // Blank lines carry no record (a trailing newline, a separator); their numbers
            // still count so later records keep their real line numbers.
            if !buf.is_empty() {
                return Ok(Some(Record {
                    data: buf,
                    at: Position::Line(self.line),
                }));
            }
        }
    }

    fn next_recordio(&mut self) -> io::Result<Option<Record>> {
        let start = self.offset;
        let mut out = Vec::new();
        loop {
            let mut head = [0u8; 8];
            let got = read_full(&mut self.input, &mut head)?;
            if got == 0 && out.is_empty() {
                return Ok(None);
            }
            if got < 8 {
                return Err(invalid(format!(
                    "byte offset {}: the object ends inside a RecordIO record header",
                    self.offset
                )));
            }
            let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if magic != RECORDIO_MAGIC {
                return Err(invalid(format!(
                    "byte offset {}: not a RecordIO record (magic number {magic:#010x}, expected {RECORDIO_MAGIC:#010x}); use SplitType None or Line for this data",
                    self.offset
                )));
            }
            let lrec = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let cflag = lrec >> 29;
            let len = (lrec & ((1 << 29) - 1)) as usize;
            let padded = len.div_ceil(4) * 4;
            let mut body = vec![0u8; padded];
            if read_full(&mut self.input, &mut body)? < padded {
                return Err(invalid(format!(
                    "byte offset {}: the object ends inside a RecordIO record of {len} bytes",
                    self.offset
                )));
            }
            self.offset += 8 + padded as u64;
            out.extend_from_slice(&head);
            out.extend_from_slice(&body);
            // 0: a whole record; 1 starts, 2 continues and 3 ends one split at an embedded
            // magic number (dmlc's writer).
            if cflag == 0 || cflag == 3 {
                return Ok(Some(Record {
                    data: out,
                    at: Position::Offset(start),
                }));
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> Iterator for Records<R> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.split {
            Split::Line => self.next_line(),
            Split::RecordIo => self.next_recordio(),
            Split::None => {
                self.done = true;
                let mut data = Vec::new();
                match self.input.read_to_end(&mut data) {
                    Ok(_) => Ok(Some(Record {
                        data,
                        at: Position::Offset(0),
                    })),
                    Err(e) => Err(e),
                }
            }
        };
        match r {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// `BatchStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    MultiRecord,
    SingleRecord,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "MultiRecord" | "MULTI_RECORD" => Some(Strategy::MultiRecord),
            "SingleRecord" | "SINGLE_RECORD" => Some(Strategy::SingleRecord),
            _ => None,
        }
    }

    /// The value of `SAGEMAKER_BATCH_STRATEGY` (as SageMaker sets it in the container).
    pub fn env_value(self) -> &'static str {
        match self {
            Strategy::MultiRecord => "MULTI_RECORD",
            Strategy::SingleRecord => "SINGLE_RECORD",
        }
    }
}

/// One request body and the records in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub payload: Vec<u8>,
    /// Where each record of the batch starts, in order.
    pub positions: Vec<Position>,
}

/// A record that cannot be sent: larger than `MaxPayloadInMB` on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{at}: the record is {size} bytes, larger than MaxPayloadInMB ({limit_mb} MB); raise MaxPayloadInMB (at most 100) or split the input into smaller records (SplitType Line or RecordIO)"
)]
pub struct TooLarge {
    pub at: Position,
    pub size: usize,
    pub limit_mb: u64,
}

/// Packs records into request bodies: one record each (SingleRecord), or as many as fit under
/// the payload limit (MultiRecord). Lines are sent newline-terminated, so a batch of lines is
/// itself a text document of lines; RecordIO records keep their framing.
pub struct Batcher {
    strategy: Strategy,
    split: Split,
    /// In bytes; `None` for no limit (`MaxPayloadInMB` 0).
    limit: Option<usize>,
    limit_mb: u64,
    current: Batch,
}

impl Batcher {
    pub fn new(strategy: Strategy, split: Split, max_payload_mb: u64) -> Self {
        Batcher {
            strategy,
            split,
            limit: (max_payload_mb > 0).then_some((max_payload_mb as usize) << 20),
            limit_mb: max_payload_mb,
            current: Batch {
                payload: Vec::new(),
                positions: Vec::new(),
            },
        }
    }

    fn encoded_len(&self, record: &Record) -> usize {
        record.data.len() + usize::from(self.split == Split::Line)
    }

    /// Adds a record; returns the batch it completed, if any.
    pub fn push(&mut self, record: Record) -> Result<Option<Batch>, TooLarge> {
        let size = self.encoded_len(&record);
        if let Some(limit) = self.limit
            && size > limit
        {
            return Err(TooLarge {
                at: record.at,
                size: record.data.len(),
                limit_mb: self.limit_mb,
            });
        }
        let full = !self.current.positions.is_empty()
            && (self.strategy == Strategy::SingleRecord
                || self
                    .limit
                    .is_some_and(|l| self.current.payload.len() + size > l));
        let done = if full { self.take() } else { None };
        self.current.payload.extend_from_slice(&record.data);
        if self.split == Split::Line {
            self.current.payload.push(b'\n');
        }
        self.current.positions.push(record.at);
        Ok(done)
    }

    /// The last, partly filled batch.
    pub fn take(&mut self) -> Option<Batch> {
        if self.current.positions.is_empty() {
            return None;
        }
        Some(std::mem::replace(
            &mut self.current,
            Batch {
                payload: Vec::new(),
                positions: Vec::new(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::write_recordio;

    fn all(data: &[u8], split: Split) -> Vec<Record> {
        Records::new(data, split).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn lines_keep_their_numbers_and_skip_blank_lines() {
        let recs = all(b"a,1\r\n\nb,2\nc,3", Split::Line);
        let got: Vec<(&[u8], Position)> = recs.iter().map(|r| (&r.data[..], r.at)).collect();
        assert_eq!(
            got,
            vec![
                (&b"a,1"[..], Position::Line(1)),
                (&b"b,2"[..], Position::Line(3)),
                (&b"c,3"[..], Position::Line(4)),
            ]
        );
        assert!(all(b"", Split::Line).is_empty());
        assert_eq!(Position::Line(3).to_string(), "line 3");
    }

    #[test]
    fn a_whole_object_is_one_record() {
        let recs = all(b"x\ny\n", Split::None);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].data, b"x\ny\n");
        assert_eq!(recs[0].at.to_string(), "byte offset 0");
        // An empty object is still one (empty) record: the model decides what it means.
        assert_eq!(all(b"", Split::None).len(), 1);
    }

    #[test]
    fn recordio_records_keep_their_framing_and_offsets() {
        let mut data = Vec::new();
        write_recordio(b"hello", &mut data).unwrap();
        let second = data.len() as u64;
        // A record with an embedded magic number is split by the writer into parts; it is
        // still one record here.
        let mut tricky = b"abcd".to_vec();
        tricky.extend_from_slice(&RECORDIO_MAGIC.to_le_bytes());
        tricky.extend_from_slice(b"tail");
        write_recordio(&tricky, &mut data).unwrap();
        let recs = all(&data, Split::RecordIo);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].at, Position::Offset(0));
        assert_eq!(recs[1].at, Position::Offset(second));
        assert_eq!(recs[0].data.len(), 16);
        let mut rebuilt = recs[0].data.clone();
        rebuilt.extend_from_slice(&recs[1].data);
        assert_eq!(rebuilt, data);
    }

    #[test]
    fn bad_recordio_names_the_offset() {
        let mut data = Vec::new();
        write_recordio(b"ok", &mut data).unwrap();
        let at = data.len();
        data.extend_from_slice(b"garbage!");
        let mut it = Records::new(&data[..], Split::RecordIo);
        assert!(it.next().unwrap().is_ok());
        let e = it.next().unwrap().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("byte offset {at}: not a RecordIO record")),
            "{e}"
        );
        assert!(it.next().is_none());
    }

    fn rec(data: &str, line: u64) -> Record {
        Record {
            data: data.as_bytes().to_vec(),
            at: Position::Line(line),
        }
    }

    #[test]
    fn multi_record_batches_fill_up_to_the_limit() {
        let mut b = Batcher::new(Strategy::MultiRecord, Split::Line, 1);
        let big = "x".repeat(400_000);
        assert_eq!(b.push(rec(&big, 1)).unwrap(), None);
        assert_eq!(b.push(rec(&big, 2)).unwrap(), None);
        let first = b.push(rec(&big, 3)).unwrap().unwrap();
        assert_eq!(first.positions, vec![Position::Line(1), Position::Line(2)]);
        assert_eq!(first.payload.len(), 2 * 400_001);
        assert_eq!(first.payload.last(), Some(&b'\n'));
        let last = b.take().unwrap();
        assert_eq!(last.positions, vec![Position::Line(3)]);
        assert_eq!(b.take(), None);
    }

    #[test]
    fn single_record_batches_hold_one_record() {
        let mut b = Batcher::new(Strategy::SingleRecord, Split::Line, 6);
        assert_eq!(b.push(rec("a", 1)).unwrap(), None);
        let one = b.push(rec("b", 2)).unwrap().unwrap();
        assert_eq!(one.payload, b"a\n");
        assert_eq!(b.take().unwrap().payload, b"b\n");
    }

    #[test]
    fn a_record_over_the_limit_is_refused_with_its_position() {
        let mut b = Batcher::new(Strategy::MultiRecord, Split::Line, 1);
        let e = b.push(rec(&"y".repeat(1 << 20), 7)).unwrap_err();
        assert_eq!(e.at, Position::Line(7));
        assert!(
            e.to_string().starts_with(
                "line 7: the record is 1048576 bytes, larger than MaxPayloadInMB (1 MB)"
            ),
            "{e}"
        );
        // No limit at all with MaxPayloadInMB 0.
        let mut unlimited = Batcher::new(Strategy::MultiRecord, Split::None, 0);
        assert!(unlimited.push(rec(&"y".repeat(2 << 20), 1)).is_ok());
    }
}
