//! The raw limit: a bare socketpair echo between this process and a child
//! (this same binary, run as `loky-bench raw-echo`), with the executor's
//! framing (a little-endian `u32` length, then the body) and nothing else.
//!
//! Any process pool built on a socket pays at least this; the latency and
//! payload targets are ratios to it, measured in the same run.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::cases::{PAYLOAD, Results, SUBMITS};
use crate::stats::{self, Samples};

#[path = "sealed.rs"]
mod sealed;
pub(crate) use sealed::{SUBCOMMAND as SEALED_ECHO_SUBCOMMAND, serve as serve_sealed_echo};

/// The raw figures' keys.
pub(crate) mod key {
    pub(crate) const SPAWN_ECHO: &str = "raw_spawn_echo_ms";
    pub(crate) const PIPELINED: &str = "raw_pipelined_per_sec";
    pub(crate) const LATENCY: &str = "raw_latency_us";
    pub(crate) const ECHO: &str = "raw_echo_mib_per_sec";
    /// The same echo through a fresh sealed memory file each way.
    pub(crate) const SEALED_ECHO: &str = "raw_sealed_echo_mib_per_sec";
    pub(crate) const CRASH: &str = "raw_crash_ms";
    pub(crate) const IDLE_RSS: &str = "raw_idle_rss_mib";
    pub(crate) const IDLE_PSS: &str = "raw_idle_pss_mib";
}

/// The hidden subcommand that makes this binary the echo child.
pub(crate) const ECHO_SUBCOMMAND: &str = "raw-echo";

/// A body that makes the echo child abort instead of answering: the raw
/// cost of a crash and its detection.
const DIE: &[u8] = b"die";

/// A body the size of a no-op call's frame.
const SMALL: &[u8] = &[0x5a; 16];

/// Buffers of the echo child and of the pipelined writer and reader.
const BUFFER: usize = 64 << 10;

/// Measures one raw figure.
type Measure<'a> = Box<dyn Fn() -> Samples + 'a>;

/// Measures every raw figure, `runs` times each; `round_trips` small echoes
/// per latency run.
pub(crate) fn measure(runs: usize, round_trips: usize, wants: &dyn Fn(&str) -> bool) -> Results {
    let figures: [(&str, Measure<'_>); 8] = [
        (key::SPAWN_ECHO, Box::new(|| spawn_and_echo(runs))),
        (
            key::PIPELINED,
            Box::new(|| with_child(|child| stats::repeat(runs, || child.pipelined(SUBMITS)))),
        ),
        (
            key::LATENCY,
            Box::new(|| {
                with_child(|child| {
                    for _ in 0..200 {
                        child.echo(SMALL).map_err(|e| e.to_string())?;
                    }
                    stats::repeat(runs, || child.latency_us(round_trips))
                })
            }),
        ),
        (
            key::ECHO,
            Box::new(|| with_child(|child| echo_payload(child, runs))),
        ),
        (key::SEALED_ECHO, Box::new(|| sealed::echo_payload(runs))),
        (key::CRASH, Box::new(|| stats::repeat(runs, crash))),
        (
            key::IDLE_RSS,
            Box::new(|| stats::repeat(runs, || idle_memory(crate::cases::vm_rss_mib))),
        ),
        (
            key::IDLE_PSS,
            Box::new(|| stats::repeat(runs, || idle_memory(crate::cases::pss_mib))),
        ),
    ];
    figures
        .into_iter()
        .filter(|(key, _)| wants(key))
        .map(|(key, measure)| {
            eprintln!("loky-bench: raw {key}");
            (key.to_owned(), measure())
        })
        .collect()
}

/// 10 MiB round trips, in MiB/s; one untimed first.
fn echo_payload(child: &mut EchoChild, runs: usize) -> Samples {
    let payload = vec![0xa5u8; PAYLOAD];
    child.echo(&payload).map_err(|e| e.to_string())?;
    stats::repeat(runs, || {
        let start = Instant::now();
        child.echo(&payload)?;
        Ok::<_, io::Error>(stats::mib_per_sec(PAYLOAD, start.elapsed()))
    })
}

/// Runs `measure` on a fresh echo child, then ends the child.
fn with_child(measure: impl FnOnce(&mut EchoChild) -> Samples) -> Samples {
    let mut child = EchoChild::spawn().map_err(|e| format!("cannot start the echo child: {e}"))?;
    let samples = measure(&mut child);
    child.close().map_err(|e| e.to_string())?;
    samples
}

/// Spawn + one small echo, in ms; one untimed start first to warm the page
/// cache.
fn spawn_and_echo(runs: usize) -> Samples {
    let once = || -> io::Result<f64> {
        let start = Instant::now();
        let mut child = EchoChild::spawn()?;
        child.echo(SMALL)?;
        let took = start.elapsed();
        child.close()?;
        Ok(stats::ms(took))
    };
    once().map_err(|e| e.to_string())?;
    stats::repeat(runs, once)
}

/// From sending the fatal frame to the child's death seen and reaped, in ms.
fn crash() -> io::Result<f64> {
    let mut child = EchoChild::spawn()?;
    child.echo(SMALL)?;
    let start = Instant::now();
    child.send(DIE)?;
    let mut byte = [0u8; 1];
    match child.stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(_) => return Err(io::Error::other("the echo child answered the fatal frame")),
        Err(e) => return Err(e),
    }
    child.process.wait()?;
    Ok(stats::ms(start.elapsed()))
}

/// Memory of an idle echo child after one echo, in MiB.
fn idle_memory(measure: fn(u32) -> Result<f64, String>) -> io::Result<f64> {
    let mut child = EchoChild::spawn()?;
    child.echo(SMALL)?;
    let rss = measure(child.process.id());
    child.close()?;
    rss.map_err(io::Error::other)
}

/// The parent's side of one echo child.
struct EchoChild {
    process: Child,
    stream: UnixStream,
    reply: Vec<u8>,
}

impl EchoChild {
    fn spawn() -> io::Result<EchoChild> {
        EchoChild::spawn_as(ECHO_SUBCOMMAND)
    }

    /// This binary run as the child of `subcommand`.
    fn spawn_as(subcommand: &str) -> io::Result<EchoChild> {
        let (ours, theirs) = UnixStream::pair()?;
        // The child's end becomes its stdin; everything else of ours is
        // close-on-exec, so its end of file comes when the child dies.
        let process = Command::new(std::env::current_exe()?)
            .arg(subcommand)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()?;
        Ok(EchoChild {
            process,
            stream: ours,
            reply: Vec::new(),
        })
    }

    /// Writes one frame: header and body in one write when small.
    fn send(&mut self, body: &[u8]) -> io::Result<()> {
        let header = frame_len(body.len())?;
        if body.len() <= BUFFER {
            let mut frame = Vec::with_capacity(4 + body.len());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(body);
            self.stream.write_all(&frame)
        } else {
            self.stream.write_all(&header)?;
            self.stream.write_all(body)
        }
    }

    /// One round trip of `body`.
    fn echo(&mut self, body: &[u8]) -> io::Result<()> {
        self.send(body)?;
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        self.reply.resize(u32::from_le_bytes(header) as usize, 0);
        self.stream.read_exact(&mut self.reply)?;
        if self.reply.len() != body.len() {
            return Err(io::Error::other("the echo child answered another length"));
        }
        Ok(())
    }

    /// The median of `round_trips` small round trips, in µs.
    fn latency_us(&mut self, round_trips: usize) -> io::Result<f64> {
        let mut times = Vec::with_capacity(round_trips);
        for _ in 0..round_trips {
            let start = Instant::now();
            self.echo(SMALL)?;
            times.push(stats::us(start.elapsed()));
        }
        Ok(stats::median(&mut times))
    }

    /// `frames` small frames written back to back by one thread while this
    /// one reads the replies, in frames per second.
    fn pipelined(&mut self, frames: usize) -> io::Result<f64> {
        let writer_end = self.stream.try_clone()?;
        let start = Instant::now();
        let writer = std::thread::spawn(move || -> io::Result<()> {
            let mut out = BufWriter::with_capacity(BUFFER, &writer_end);
            let header = frame_len(SMALL.len())?;
            for _ in 0..frames {
                out.write_all(&header)?;
                out.write_all(SMALL)?;
            }
            out.flush()
        });
        let mut input = BufReader::with_capacity(BUFFER, &self.stream);
        let mut frame = [0u8; 4 + SMALL.len()];
        for _ in 0..frames {
            input.read_exact(&mut frame)?;
        }
        let took = start.elapsed();
        writer
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))??;
        Ok(stats::rate(frames, took))
    }

    /// Closes the channel and reaps the child.
    fn close(mut self) -> io::Result<()> {
        drop(self.stream);
        let status = self.process.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the echo child ended with {status}"
            )))
        }
    }
}

fn frame_len(len: usize) -> io::Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| io::Error::other("frame too large"))
}

/// The echo child: answers every frame on stdin (a socket) with the same
/// frame, flushing whenever no more input is buffered, until end of file.
pub(crate) fn serve_echo() -> io::Result<()> {
    let stream = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut input = BufReader::with_capacity(BUFFER, &stream);
    let mut output = BufWriter::with_capacity(BUFFER, &stream);
    let mut body = Vec::new();
    loop {
        if input.buffer().is_empty() {
            output.flush()?;
        }
        let mut header = [0u8; 4];
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        body.resize(u32::from_le_bytes(header) as usize, 0);
        input.read_exact(&mut body)?;
        if body == DIE {
            std::process::abort();
        }
        output.write_all(&header)?;
        output.write_all(&body)?;
    }
}
