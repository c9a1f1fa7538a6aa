//! The floor for `replay → file`: the same input read line by line and parsed by serde_json into a
//! generic value (no derivation, no encoding), each value's `type` written out as a JSON line.
//! `scripts/bench_replay.sh` runs it side by side with the bridge and reports the ratio.
//!
//! Usage: cargo bench --bench replay_floor -- RECORDING OUT

use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: replay_floor RECORDING OUT");
        std::process::exit(2);
    };
    let start = std::time::Instant::now();
    let mut out = BufWriter::with_capacity(256 * 1024, std::fs::File::create(output)?);
    let mut lines = 0u64;
    for line in BufReader::with_capacity(1 << 20, std::fs::File::open(input)?).split(b'\n') {
        let line = line?;
        let value: serde_json::Value =
            serde_json::from_slice(&line).unwrap_or(serde_json::Value::Null);
        serde_json::to_writer(&mut out, &value["type"])?;
        out.write_all(b"\n")?;
        lines += 1;
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "floor: {lines} lines in {secs:.2} s = {:.0} lines/s",
        lines as f64 / secs
    );
    Ok(())
}
