//! Pipe input mode: a channel's objects streamed through FIFOs `<channel>_0`, `<channel>_1`, …
//! in `input/data`, one per pass over the data. The next FIFO is made once the script has
//! drained the current one, before the current one's end is signalled, so a script that opens
//! `<channel>_<N+1>` on EOF always finds it. Gzip objects are decompressed on the way; with
//! `RecordWrapperType: RecordIO` each object travels as one MXNet RecordIO record.

// Unsafe: FIONREAD and a zero-timeout poll on a FIFO have no safe wrapper in nix.
#![allow(unsafe_code)]

use crate::job_log::WeakJobLog;
use crate::objects::Objects;
use crate::staging::ChannelObject;
use clary_exec::protocol::ChannelSpec;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// dmlc-core's RecordIO magic number, little-endian on the wire.
pub const RECORDIO_MAGIC: u32 = 0xced7_230a;
/// RecordIO's length field has 29 bits.
const RECORDIO_MAX_PART: usize = (1 << 29) - 1;

/// The FIFO of pass `pass` of a channel.
pub fn fifo_path(data_dir: &Path, channel: &str, pass: u32) -> PathBuf {
    data_dir.join(format!("{channel}_{pass}"))
}

fn make_fifo(path: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(io::Error::from)
}

/// Writes `data` as one RecordIO record the way dmlc's `RecordIOWriter` does: the data is cut
/// at every 4-byte-aligned occurrence of the magic number (the reader puts the magic back
/// between the parts), each part flagged start/middle/end, and padded to 4 bytes.
pub fn write_recordio<W: Write>(data: &[u8], out: &mut W) -> io::Result<()> {
    let magic = RECORDIO_MAGIC.to_le_bytes();
    let mut part_start = 0usize;
    let write_part = |out: &mut W, part: &[u8], flag: u32| -> io::Result<()> {
        if part.len() > RECORDIO_MAX_PART {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a RecordIO record part is {} bytes, over the format's limit of {RECORDIO_MAX_PART}; split the object",
                    part.len()
                ),
            ));
        }
        out.write_all(&magic)?;
        out.write_all(&((flag << 29) | part.len() as u32).to_le_bytes())?;
        out.write_all(part)?;
        let pad = (4 - part.len() % 4) % 4;
        out.write_all(&[0u8; 3][..pad])
    };
    let aligned_end = data.len() & !3;
    let mut i = 0;
    while i < aligned_end {
        if data[i..i + 4] == magic {
            let flag = if part_start == 0 { 1 } else { 2 };
            write_part(out, &data[part_start..i], flag)?;
            part_start = i + 4;
        }
        i += 4;
    }
    let flag = if part_start == 0 { 0 } else { 3 };
    write_part(out, &data[part_start..], flag)
}

/// One object's bytes as the script should see them (decompressed when the channel is Gzip).
fn object_reader(
    store: &Objects,
    ch: &ChannelSpec,
    obj: &ChannelObject,
) -> io::Result<Box<dyn Read + Send>> {
    let file = store
        .reader(&obj.bucket, &obj.key)
        .map_err(|e| io::Error::other(format!("s3://{}/{}: {e}", obj.bucket, obj.key)))?;
    Ok(if ch.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 20, file),
        ))
    } else {
        Box::new(file)
    })
}

/// Streams every object of one pass into `out`. Each object is opened one ahead of the one
/// being streamed, so the next one's first bytes (from a remote store: a presigned URL and a
/// request) are on their way while the current one flows.
pub fn feed_pass<W: Write>(
    store: &Objects,
    ch: &ChannelSpec,
    objects: &[ChannelObject],
    out: &mut W,
) -> io::Result<u64> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for obj in objects.iter().filter(|o| !o.key.ends_with('/')) {
                let opened = object_reader(store, ch, obj);
                let failed = opened.is_err();
                // The pass is over (the script closed the pipe, or an object failed).
                if tx.send(opened).is_err() || failed {
                    return;
                }
            }
        });
        let mut total = 0u64;
        for opened in rx {
            let mut reader = opened?;
            if ch.record_io {
                let mut data = Vec::new();
                reader.read_to_end(&mut data)?;
                write_recordio(&data, out)?;
                total += data.len() as u64;
            } else {
                total += io::copy(&mut reader, out)?;
            }
        }
        Ok(total)
    })
}

/// Bytes written to the pipe that the reader has not read yet.
fn unread(fifo: &File) -> Option<i32> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let rc = unsafe { nix::libc::ioctl(fifo.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    (rc == 0).then_some(n)
}

/// True once the reader has closed its end.
fn reader_gone(fifo: &File) -> bool {
    let mut pfd = nix::libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let rc = unsafe { nix::libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (nix::libc::POLLERR | nix::libc::POLLHUP) != 0
}

/// Waits until the reader has read everything written (or gone away).
fn wait_drained(fifo: &File) {
    let mut delay = Duration::from_micros(200);
    while unread(fifo).unwrap_or(0) > 0 && !reader_gone(fifo) {
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Makes `<channel>_0` now, so it is there when the script starts, and feeds pass after pass
/// on a thread of its own for as long as the agent runs.
pub fn start_channel(
    store: Objects,
    ch: ChannelSpec,
    objects: Vec<ChannelObject>,
    data_dir: PathBuf,
    log: WeakJobLog,
) -> io::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    make_fifo(&fifo_path(&data_dir, &ch.name, 0))?;
    std::thread::Builder::new()
        .name(format!("pipe-{}", ch.name))
        .spawn(move || {
            for pass in 0u32.. {
                let path = fifo_path(&data_dir, &ch.name, pass);
                // Blocks until the script opens the FIFO for reading.
                let mut fifo = match std::fs::OpenOptions::new().write(true).open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        log.info(&format!("Pipe {}: could not open: {e}", path.display()));
                        return;
                    }
                };
                let result = feed_pass(&store, &ch, &objects, &mut fifo);
                match &result {
                    Ok(_) => wait_drained(&fifo),
                    // The script closed the pipe before the end: that pass is over.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    Err(e) => log.info(&format!(
                        "Pipe {}: streaming channel {} failed: {e}",
                        path.display(),
                        ch.name
                    )),
                }
                if let Err(e) = make_fifo(&fifo_path(&data_dir, &ch.name, pass + 1)) {
                    log.info(&format!("Pipe for channel {}: {e}", ch.name));
                    return;
                }
                drop(fifo);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads records back the way dmlc's reader does (parts joined with the magic between).
    fn read_records(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        while !buf.is_empty() {
            assert_eq!(
                u32::from_le_bytes(buf[..4].try_into().unwrap()),
                RECORDIO_MAGIC
            );
            let l = u32::from_le_bytes(buf[4..8].try_into().unwrap());
            let (flag, len) = (l >> 29, (l & ((1 << 29) - 1)) as usize);
            let padded = len.div_ceil(4) * 4;
            cur.extend_from_slice(&buf[8..8 + len]);
            buf = &buf[8 + padded..];
            match flag {
                0 | 3 => out.push(std::mem::take(&mut cur)),
                _ => cur.extend_from_slice(&RECORDIO_MAGIC.to_le_bytes()),
            }
        }
        out
    }

    #[test]
    fn recordio_frames_round_trip_even_with_the_magic_inside() {
        let magic = RECORDIO_MAGIC.to_le_bytes();
        let mut tricky = b"abcd".to_vec();
        tricky.extend_from_slice(&magic);
        tricky.extend_from_slice(b"xyz");
        tricky.extend_from_slice(&magic);
        let records: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![], tricky, magic.to_vec()];
        let mut wire = Vec::new();
        for r in &records {
            write_recordio(r, &mut wire).unwrap();
        }
        assert_eq!(wire.len() % 4, 0);
        assert_eq!(read_records(&wire), records);
        // A plain record: magic, (0 << 29) | 5, data, three bytes of padding.
        let mut one = Vec::new();
        write_recordio(b"hello", &mut one).unwrap();
        assert_eq!(&one[4..8], &5u32.to_le_bytes());
        assert_eq!(one.len(), 16);
    }
}
